"""advsal.saliency: hand-computed maps on tiny models, agreement with captum, batching, state hygiene."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import TEST_DEVICE
from torch import nn

from advsal.models import build_model
from advsal.saliency import (
    SALIENCY_METHODS,
    CamResult,
    grad_cam,
    grad_cam_layers,
    gradient,
    guided_backprop,
    guided_grad_cam,
    integrated_gradients,
    saliency_method,
    smoothgrad,
)
from advsal.tensors import predict_logits

MNIST_CAM = "features.8"  # last conv stage (ReLU after the 4th conv) of mnist-net


# ---------------------------------------------------------------- tiny hand-set models

def linear_model() -> nn.Module:
    """logits = W · flatten(x) + b on 1×2×2 images, 3 classes."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 3.0, -1.0, 2.0],
                                            [-1.0, 1.0, 1.0, -4.0]]))
        model[1].bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return model.eval()


W1 = torch.tensor([[1.0, -1.0], [2.0, 1.0], [-1.0, 0.0]])
W2 = torch.tensor([[1.0, -1.0, 3.0], [0.5, 0.5, 0.5]])
X2 = torch.tensor([[[[0.5, 0.25]]]])  # hidden pre-activations W1 x = (0.25, 1.25, -0.5)


class TwoLayer(nn.Module):
    """flatten → Linear(2, 3) → ReLU (in one of five spellings) → Linear(3, 2), no biases."""

    def __init__(self, relu: str):
        super().__init__()
        self.fc1 = nn.Linear(2, 3, bias=False)
        self.fc2 = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(W1)
            self.fc2.weight.copy_(W2)
        self.kind = relu
        self.act = nn.ReLU(inplace=relu == "inplace")

    def forward(self, x):
        h = self.fc1(x.flatten(1))
        if self.kind in ("module", "inplace"):
            h = self.act(h)
        elif self.kind == "F.relu":
            h = F.relu(h)
        elif self.kind == "torch.relu":
            h = torch.relu(h)
        elif self.kind == "method_":
            h.relu_()
        return self.fc2(h)


class OneConv(nn.Module):
    """1×1 conv (weights 1, −2) → [ReLU] → global average pool → Linear(2, 2): Grad-CAM by hand."""

    def __init__(self, inplace_after: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.act = nn.ReLU(inplace=True) if inplace_after else nn.Identity()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.act(self.conv(x)), 1).flatten(1))


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())


# ---------------------------------------------------------------- gradient

def test_gradient_of_linear_model_is_its_weight_row():
    model = linear_model()
    x = torch.rand(2, 1, 2, 2)
    w = model[1].weight
    t = torch.tensor([0, 2])
    g = gradient(model, x, t)
    assert g.shape == x.shape
    torch.testing.assert_close(g, w[t].view(2, 1, 2, 2))
    torch.testing.assert_close(gradient(model, x, 1, reduce="input"), (w[1].view(1, 1, 2, 2) * x))
    torch.testing.assert_close(gradient(model, x, 1, reduce="max"),
                               w[1].abs().view(1, 1, 2, 2).expand(2, 1, 2, 2))
    every = gradient(model, x, all_classes=True)
    assert every.shape == (2, 3, 1, 2, 2)
    torch.testing.assert_close(every, w.view(1, 3, 1, 2, 2).expand(2, 3, 1, 2, 2))


def test_gradient_scores_softmax_chain_rule():
    model = linear_model()
    x = torch.rand(3, 1, 2, 2)
    w = model[1].weight
    p = torch.softmax(model(x), 1).detach()
    t = torch.tensor([2, 0, 1])
    # ∂ log p_t / ∂x = W_t − Σ_j p_j W_j
    expected = (w[t] - p @ w).view(3, 1, 2, 2)
    torch.testing.assert_close(gradient(model, x, t, score="log_softmax"), expected)
    pt = p.gather(1, t.view(-1, 1)).view(3, 1, 1, 1)
    torch.testing.assert_close(gradient(model, x, t, score="softmax"), pt * expected)


def test_channel_max_reduction_over_rgb():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 2)).eval()
    x = torch.rand(2, 3, 2, 2)
    g = gradient(model, x, 1)
    torch.testing.assert_close(gradient(model, x, 1, reduce="max"), g.abs().amax(1, keepdim=True))
    assert gradient(model, x, 1, reduce="max").shape == (2, 1, 2, 2)


def test_create_graph_gives_a_differentiable_map():
    class Square(nn.Module):
        def forward(self, x):
            return (x.flatten(1) ** 2).sum(1, keepdim=True) * torch.tensor([[1.0, 3.0]])

    x = torch.rand(2, 1, 2, 2, requires_grad=True)
    g = gradient(Square(), x, 1, create_graph=True)  # = 6 x
    torch.testing.assert_close(g, 6 * x.detach())
    (second,) = torch.autograd.grad(g.sum(), x)
    torch.testing.assert_close(second, torch.full_like(x, 6.0))
    assert not gradient(Square(), x, 1).requires_grad


# ---------------------------------------------------------------- guided backprop

def test_guided_backprop_two_layer_net_by_hand():
    model = TwoLayer("module").eval()
    # class 0: upstream gradient at the hidden layer is W2[0] = (1, −1, 3); mask (h > 0) = (1, 1, 0)
    # plain: (1, −1, 0) · W1 = (−1, −2);  guided: relu(1, −1, 3) · mask = (1, 0, 0) → (1, 0, 0) · W1 = (1, −1)
    plain = gradient(model, X2, 0)
    guided = guided_backprop(model, X2, 0)
    torch.testing.assert_close(plain.view(2), torch.tensor([-1.0, -2.0]))
    torch.testing.assert_close(guided.view(2), torch.tensor([1.0, -1.0]))
    # the mode is gone after the call: the plain gradient is unaffected
    torch.testing.assert_close(gradient(model, X2, 0), plain)


@pytest.mark.parametrize("kind", ["inplace", "F.relu", "torch.relu", "method_"])
def test_guided_backprop_same_for_every_relu_spelling(kind):
    reference = guided_backprop(TwoLayer("module").eval(), X2, 0)
    torch.testing.assert_close(guided_backprop(TwoLayer(kind).eval(), X2, 0), reference)
    # and the forward values (logits) are unchanged by the mode
    torch.testing.assert_close(gradient(TwoLayer(kind).eval(), X2, 0), gradient(TwoLayer("module"), X2, 0))


def test_guided_backprop_leaves_no_mode_after_error():
    class Broken(nn.Module):
        def forward(self, x):
            torch.relu(x)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        guided_backprop(Broken(), X2, 0)
    assert torch._C._len_torch_function_stack() == 0
    # torch.relu is the ordinary function again: its gradient is the plain one
    z = torch.tensor([1.0, -1.0], requires_grad=True)
    torch.relu(z).mul(torch.tensor([-2.0, 5.0])).sum().backward()
    torch.testing.assert_close(z.grad, torch.tensor([-2.0, 0.0]))


# ---------------------------------------------------------------- Grad-CAM

def test_grad_cam_one_conv_net_by_hand():
    model = OneConv().eval()
    x = torch.tensor([[[[0.1, 0.2], [0.3, 0.4]]]])
    # α_k^c = fc[c, k] / 4;  class 1: (3/4)(x) + (−1/4)(−2x) = 1.25 x;  class 0: (1/4)x + (2/4)(−2x) = −0.75 x
    r1 = grad_cam(model, x, 1, layer="conv")
    assert isinstance(r1, CamResult) and r1.layer == "conv" and r1.target.tolist() == [1]
    torch.testing.assert_close(r1.cam, 1.25 * x[:, 0])
    torch.testing.assert_close(r1.upsampled, 1.25 * x[:, 0])
    torch.testing.assert_close(grad_cam(model, x, 0, layer="conv").cam, torch.zeros(1, 2, 2))
    torch.testing.assert_close(grad_cam(model, x, 0, layer="conv", relu=False).cam, -0.75 * x[:, 0])
    assert grad_cam(model, x, 0, layer="conv", upsample=False).upsampled is None


def test_grad_cam_activation_not_overwritten_by_inplace_relu():
    x = torch.tensor([[[[0.1, 0.2], [0.3, 0.4]]]])
    # with ReLU(inplace=True) after the conv, channel 1 (−2x) is zeroed downstream, so only α_0 survives;
    # the activation A itself must still be the conv output: class 1 → (3/4)(x) + 0 · (−2x) = 0.75 x
    cam = grad_cam(OneConv(inplace_after=True).eval(), x, 1, layer="conv", relu=False).cam
    torch.testing.assert_close(cam, 0.75 * x[:, 0])


def test_grad_cam_upsamples_bilinearly_to_input_size(mnist_model, mnist_batch):
    x = mnist_batch[0][:4]
    r = grad_cam(mnist_model, x, "predicted", layer="features.4")  # after max-pool: 14×14
    assert r.cam.shape == (4, 14, 14) and r.upsampled.shape == (4, 28, 28)
    expected = F.interpolate(r.cam.unsqueeze(1), size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(r.upsampled, expected)


def test_grad_cam_layers_equal_per_layer_grad_cam(mnist_model, mnist_batch):
    x = mnist_batch[0][:6]
    conv = dict(mnist_model.named_modules())["features.5"]
    both = grad_cam_layers(mnist_model, x, 3, layers=[conv, MNIST_CAM])  # a module is keyed by its name
    assert list(both) == ["features.5", MNIST_CAM]
    for name, res in both.items():
        one = grad_cam(mnist_model, x, 3, layer=name)
        assert isinstance(res, CamResult) and res.layer == name
        torch.testing.assert_close(res.cam, one.cam)
        torch.testing.assert_close(res.upsampled, one.upsampled)
        assert res.target.tolist() == one.target.tolist()
    every = grad_cam_layers(mnist_model, x, layers=("features.5",), all_classes=True, upsample=False)
    torch.testing.assert_close(every["features.5"].cam,
                               grad_cam(mnist_model, x, layer="features.5", all_classes=True).cam)


def test_grad_cam_takes_one_layer_grad_cam_layers_a_list(mnist_model, mnist_batch):
    x = mnist_batch[0][:2]
    with pytest.raises(ValueError, match="grad_cam_layers"):
        grad_cam(mnist_model, x, 3, layer=["features.5", MNIST_CAM])
    with pytest.raises(ValueError, match="grad_cam_layers"):
        grad_cam(mnist_model, x, 3, layer=(MNIST_CAM,))
    with pytest.raises(ValueError, match="for one layer call grad_cam"):
        grad_cam_layers(mnist_model, x, 3, layers=MNIST_CAM)
    with pytest.raises(ValueError, match="empty"):
        grad_cam_layers(mnist_model, x, 3, layers=[])


def test_arguments_after_target_are_keyword_only(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:2], mnist_batch[1][:2]
    calls = [lambda: gradient(mnist_model, x, "true", y), lambda: guided_backprop(mnist_model, x, "true", y),
             lambda: grad_cam(mnist_model, x, 0, MNIST_CAM), lambda: guided_grad_cam(mnist_model, x, 0, MNIST_CAM),
             lambda: grad_cam_layers(mnist_model, x, 0, [MNIST_CAM]),
             lambda: integrated_gradients(mnist_model, x, "true", y),
             lambda: smoothgrad("gradient", mnist_model, x, "true", y)]
    for call in calls:
        with pytest.raises(TypeError, match="positional"):
            call()


def test_grad_cam_default_layer():
    torch.manual_seed(0)
    net = build_model("resnet20", input_size=16, seed=0).eval()
    x = torch.rand(2, 1, 16, 16)
    r = grad_cam(net, x, 1)
    assert r.layer == net.cam_layer and r.cam.shape == (2, 4, 4)
    plain = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    assert grad_cam(plain, x, 0).layer == "2"  # no cam_layer attribute: the last Conv2d


def test_guided_grad_cam_is_product(mnist_model, mnist_batch):
    x = mnist_batch[0][:4]
    ggc = guided_grad_cam(mnist_model, x, 5, layer=MNIST_CAM)
    cam = grad_cam(mnist_model, x, 5, layer=MNIST_CAM).upsampled
    expected = guided_backprop(mnist_model, x, 5) * cam[:, None]
    torch.testing.assert_close(ggc, expected)


# ---------------------------------------------------------------- agreement with captum

def test_agrees_with_captum(mnist_model, mnist_batch):
    captum = pytest.importorskip("captum.attr")
    x, y = mnist_batch[0][:32].to(TEST_DEVICE), mnist_batch[1][:32].to(TEST_DEVICE)  # captum does not move inputs
    t = (y + 3) % 10  # non-predicted classes too
    ref = captum.Saliency(mnist_model).attribute(x, target=t, abs=False)
    torch.testing.assert_close(gradient(mnist_model, x, t), ref, atol=1e-5, rtol=0)
    ref = captum.GuidedBackprop(mnist_model).attribute(x, target=t)
    torch.testing.assert_close(guided_backprop(mnist_model, x, t), ref, atol=1e-5, rtol=0)
    layer = dict(mnist_model.named_modules())[MNIST_CAM]
    cam = captum.LayerGradCam(mnist_model, layer).attribute(x, target=t, relu_attributions=True)
    ref = captum.LayerAttribution.interpolate(cam, (28, 28), interpolate_mode="bilinear")
    ours = grad_cam(mnist_model, x, t, layer=MNIST_CAM)
    assert ours.cam.abs().max() > 1e-3  # a non-trivial map
    torch.testing.assert_close(ours.cam, cam[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.upsampled, ref[:, 0], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- batching and targets

def test_per_example_targets_equal_single_calls(mnist_model, mnist_batch):
    # In float64: float32 convolutions pick batch-size-dependent summation orders, and a ReLU input within
    # rounding of zero can then switch sides, which changes a map by far more than the rounding itself.
    model = copy.deepcopy(mnist_model).double()
    x = mnist_batch[0][:5].double()
    t = torch.tensor([0, 7, 3, 3, 9])
    g, gb = gradient(model, x, t), guided_backprop(model, x, t)
    cam = grad_cam(model, x, t, layer=MNIST_CAM).cam
    for i in range(5):
        xi, ti = x[i:i + 1], int(t[i])
        torch.testing.assert_close(g[i:i + 1], gradient(model, xi, ti), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(gb[i:i + 1], guided_backprop(model, xi, ti), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(cam[i:i + 1], grad_cam(model, xi, ti, layer=MNIST_CAM).cam,
                                   atol=1e-6, rtol=1e-5)


def test_target_specs(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:8], mnist_batch[1][:8]
    pred = predict_logits(mnist_model, x).argmax(1)
    torch.testing.assert_close(gradient(mnist_model, x), gradient(mnist_model, x, pred))
    torch.testing.assert_close(gradient(mnist_model, x, "true", labels=y), gradient(mnist_model, x, y))
    assert grad_cam(mnist_model, x, layer=MNIST_CAM).target.tolist() == pred.tolist()
    with pytest.raises(ValueError, match="labels"):
        gradient(mnist_model, x, "true")
    with pytest.raises(ValueError, match="out of range"):
        gradient(mnist_model, x, 10)
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(mnist_model, x, torch.full((8,), 12), layer=MNIST_CAM)


def test_all_classes_equals_per_class_calls(mnist_model, mnist_batch):
    x = mnist_batch[0][:2]
    every = grad_cam(mnist_model, x, layer=MNIST_CAM, all_classes=True)
    grads = gradient(mnist_model, x, all_classes=True)
    guided = guided_backprop(mnist_model, x, all_classes=True)
    assert every.cam.shape == (2, 10, 14, 14) and every.upsampled.shape == (2, 10, 28, 28)
    assert grads.shape == guided.shape == (2, 10, 1, 28, 28)
    assert every.target is None
    for c in range(10):
        one = grad_cam(mnist_model, x, c, layer=MNIST_CAM)
        torch.testing.assert_close(every.cam[:, c], one.cam, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(every.upsampled[:, c], one.upsampled, atol=1e-6, rtol=1e-5)
    for c in (0, 4, 9):
        torch.testing.assert_close(grads[:, c], gradient(mnist_model, x, c), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(guided[:, c], guided_backprop(mnist_model, x, c), atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- SmoothGrad and Integrated Gradients

def test_smoothgrad(mnist_model, mnist_batch):
    x = mnist_batch[0][:2]
    torch.testing.assert_close(smoothgrad("gradient", mnist_model, x, 2, n=2, sigma=0.0),
                               gradient(mnist_model, x, 2))
    a = smoothgrad(gradient, mnist_model, x, 2, n=6, sigma=0.2, seed=1, reduce="abs")
    b = smoothgrad(gradient, mnist_model, x, 2, n=6, sigma=0.2, seed=1, reduce="abs", batch_size=2)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    c = smoothgrad(gradient, mnist_model, x, 2, n=6, sigma=0.2, seed=2, reduce="abs")
    assert (a - c).abs().max() > 1e-4  # the seed matters
    # the mean of the per-sample maps, computed by hand with the same noise
    gen = torch.Generator().manual_seed(1)
    noisy = [x + 0.2 * torch.randn(x.shape, generator=gen) for _ in range(6)]
    by_hand = torch.stack([_grad_unchecked(mnist_model, xn, 2).abs() for xn in noisy]).mean(0)
    torch.testing.assert_close(a, by_hand, atol=1e-5, rtol=1e-4)
    cam = smoothgrad("grad-cam", mnist_model, x, 2, n=3, sigma=0.1, layer=MNIST_CAM)
    assert isinstance(cam, CamResult) and cam.cam.shape == (2, 14, 14) and cam.target.tolist() == [2, 2]
    torch.testing.assert_close(smoothgrad("guided-backprop", mnist_model, x, 2, n=1, sigma=0.0),
                               guided_backprop(mnist_model, x, 2))
    with pytest.raises(ValueError, match="guided-backprop"):  # the registry's spelling, not the function's
        smoothgrad("guided_backprop", mnist_model, x, 2)


def test_registry_display_maps(mnist_model, mnist_batch):
    x = mnist_batch[0][:2]
    assert list(SALIENCY_METHODS) == ["gradient", "guided-backprop", "grad-cam", "guided-grad-cam", "smoothgrad",
                                      "integrated-gradients"]
    assert SALIENCY_METHODS["grad-cam"].function is grad_cam and SALIENCY_METHODS["smoothgrad"].function is smoothgrad
    for name, method in SALIENCY_METHODS.items():
        maps = method.display(mnist_model, x, 2, layer=MNIST_CAM if method.uses_layer else None, seed=0)
        assert maps.shape == (2, 28, 28) and torch.isfinite(maps).all(), name
    torch.testing.assert_close(SALIENCY_METHODS["gradient"].display(mnist_model, x, 2),
                               gradient(mnist_model, x, 2).abs().amax(1))
    torch.testing.assert_close(SALIENCY_METHODS["grad-cam"].display(mnist_model, x, 2, layer=MNIST_CAM),
                               grad_cam(mnist_model, x, 2, layer=MNIST_CAM).upsampled)
    with pytest.raises(ValueError, match="integrated-gradients"):
        saliency_method("ig")


def _grad_unchecked(model, x, c):
    xi = x.clone().requires_grad_(True)
    model(xi)[:, c].sum().backward()
    return xi.grad


def test_integrated_gradients_linear_model_is_exact():
    model = linear_model()
    x = torch.rand(3, 1, 2, 2)
    res = integrated_gradients(model, x, 1, baseline=0.5, steps=1)
    torch.testing.assert_close(res.attributions, (x - 0.5) * model[1].weight[1].view(1, 1, 2, 2))
    assert res.delta.max() < 1e-5


def test_integrated_gradients_completeness_error_shrinks(mnist_model, mnist_batch):
    x = mnist_batch[0][:3]
    coarse = integrated_gradients(mnist_model, x, steps=4)
    fine = integrated_gradients(mnist_model, x, steps=96, batch_size=96)
    t = fine.target.view(-1, 1)
    gain = (predict_logits(mnist_model, x).gather(1, t)[:, 0]
            - predict_logits(mnist_model, torch.zeros_like(x)).gather(1, t)[:, 0])
    assert (fine.delta < coarse.delta).all()
    assert (fine.delta < 1e-2 * gain.abs().detach()).all()
    trap = integrated_gradients(mnist_model, x, steps=96, rule="trapezoid", batch_size=96)
    assert (trap.delta < 1e-2 * gain.abs().detach()).all()


# ---------------------------------------------------------------- hygiene and errors

def test_model_state_and_inputs_are_left_alone():
    model = build_model("mnist-net", seed=1)
    model.train()
    model.features[1].eval()  # a mixed state must survive too
    x = torch.rand(3, 1, 28, 28)
    x0 = x.clone()
    gradient(model, x, 0)
    guided_backprop(model, x, 1)
    grad_cam(model, x, 2, layer=MNIST_CAM, all_classes=True)
    integrated_gradients(model, x, 0, steps=3)
    assert model.training and not model.features[1].training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert torch.equal(x, x0) and x.grad is None and not x.requires_grad
    assert no_hooks_left(model)


def test_no_hooks_remain_after_errors(mnist_model, mnist_batch):
    x = mnist_batch[0][:2]
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(mnist_model, x, 11, layer=MNIST_CAM)
    assert no_hooks_left(mnist_model)

    class Explodes(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            self.conv(x)
            raise RuntimeError("boom")

    net = Explodes().train()
    with pytest.raises(RuntimeError, match="boom"):
        grad_cam(net, x, 0, layer="conv")
    assert no_hooks_left(net) and net.training and net.conv.weight.requires_grad


def test_clear_errors(mnist_model, mnist_batch):
    x = mnist_batch[0][:2]
    with pytest.raises(ValueError, match="valid layer names.*features.8"):
        grad_cam(mnist_model, x, 0, layer="features.99")
    with pytest.raises(ValueError, match="spatial"):
        grad_cam(mnist_model, x, 0, layer="classifier.0")
    with pytest.raises(ValueError, match="reduce"):
        gradient(mnist_model, x, 0, reduce="sum")
    with pytest.raises(ValueError, match="score"):
        gradient(mnist_model, x, 0, score="prob")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gradient(mnist_model, x * 3, 0)
    with pytest.raises(ValueError, match="method"):
        smoothgrad("lime", mnist_model, x, 0)
    shared = nn.ReLU()
    net = nn.Sequential(nn.Conv2d(1, 2, 3), shared, nn.Conv2d(2, 2, 3), shared, nn.Flatten(),
                        nn.Linear(32, 2))
    with pytest.raises(ValueError, match="more than once"):
        grad_cam(net.eval(), torch.rand(1, 1, 8, 8), 0, layer="1")
    assert no_hooks_left(net)
