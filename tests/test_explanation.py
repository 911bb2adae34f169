"""Tests for advsal.explanation (seed 003: APE, regularized explanation, meaningful perturbation,
localisation) and the localisation datasets (cluttered-mnist, masked folders)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from advsal.data import (
    DataError,
    ImageSet,
    LocalizationSet,
    load_dataset,
    load_masked_folder,
    make_cluttered_mnist,
    stratified_split,
)
from advsal.explanation import (
    MeaningfulExplanation,
    ape_d,
    ape_s,
    binarize,
    cc_hit_rate,
    classification_term,
    connected_components,
    localization_scores,
    mask_area,
    meaningful_perturbation,
    minimize_in_mask,
    pointing_game,
    regularized_explanation,
    scan_threshold,
    smooth_support,
    total_variation,
)

# --- hand-built models ---


class SumModel(nn.Module):
    """Two classes: logit_0 = 0, logit_1 = k · Σ pixels, so p_1 = sigmoid(k · Σx) is known in closed form."""

    def __init__(self, k: float):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(float(k)))

    def forward(self, x):
        s = self.k * x.flatten(1).sum(1)
        return torch.stack([torch.zeros_like(s), s], 1)


class PatchModel(nn.Module):
    """A two-class model that only looks at one patch: logit_1 = w · (mean of the patch − 0.5), or with
    ``contrast`` w · (mean of 4(x − 0.5)² over the patch − 0.5), which a blur destroys."""

    def __init__(self, rows: slice, cols: slice, w: float = 8.0, contrast: bool = False):
        super().__init__()
        self.rows, self.cols, self.contrast = rows, cols, contrast
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x):
        patch = x[:, :, self.rows, self.cols]
        if self.contrast:
            patch = 4 * (patch - 0.5) ** 2
        s = self.w * (patch.mean((1, 2, 3)) - 0.5)
        return torch.stack([torch.zeros_like(s), s], 1)


ROWS, COLS = slice(8, 16), slice(16, 24)  # one 8×8 cell of a 32×32 image


def patch_images(n: int = 3, seed: int = 0, checker: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images (values ≤ 0.4) with an 8×8 patch the PatchModel reacts to — bright (0.9), or with
    ``checker`` a 0/1 checkerboard; returns (x, patch mask)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.4 * torch.rand(n, 1, 32, 32, generator=g)
    if checker:
        x[:, :, ROWS, COLS] = ((torch.arange(8)[:, None] + torch.arange(8)) % 2).float()
    else:
        x[:, :, ROWS, COLS] = 0.9
    gt = torch.zeros(n, 32, 32, dtype=torch.bool)
    gt[:, ROWS, COLS] = True
    return x, gt


# --- APE ---

def test_ape_d_and_ape_s_on_a_hand_made_pair():
    x = torch.zeros(1, 1, 4, 4)
    x_hat = x.clone()
    x_hat[0, 0, 1:3, 1:3] = 0.5  # 4 changed pixels, a 2×2 block with 8 boundary pairs
    model = SumModel(math.log(3) / 2)  # Σx̂ = 2 → p_1 = 3/4; Σx = 0 → p_1 = 1/2
    r = ape_d(model, x, x_hat, target=1)
    assert r.l0.tolist() == [pytest.approx(4 / 16)]
    assert r.tv.tolist() == [pytest.approx(8 / 16)]
    assert r.classification.tolist() == [pytest.approx(0.75)]
    assert r.total.tolist() == [pytest.approx(0.25 + 0.5 + 0.75)]
    weighted = ape_d(model, x, x_hat, target=1, weights=(2, 3, 4))
    assert weighted.total.item() == pytest.approx(2 * 0.25 + 3 * 0.5 + 4 * 0.75)
    s = ape_s(model, x, x_hat, target=1)
    assert s.l0.item() == pytest.approx(12 / 16)
    assert s.tv.item() == pytest.approx(8 / 16)
    assert s.classification.item() == pytest.approx(0.25)
    assert s.total.item() == pytest.approx(0.75 + 0.5 + 0.25)


def test_ape_is_per_example_and_counts_all_channels():
    x = torch.full((2, 2, 4, 4), 0.5)
    x_hat = x.clone()
    x_hat[0, 0, 0:2, 0:2] = 1.0  # corner block in one channel: 4 elements of 32, TV 2 + 2
    x_hat[1, :, :, 0] = 0.0  # a full first column in both channels: 8 elements, TV 4 per channel
    model = SumModel(0.0)
    r = ape_d(model, x, x_hat, target=torch.tensor([0, 1]))
    torch.testing.assert_close(r.l0, torch.tensor([4 / 32, 8 / 32]))
    torch.testing.assert_close(r.tv, torch.tensor([4 / 32, 8 / 32]))
    torch.testing.assert_close(r.classification, torch.tensor([0.5, 0.5]))
    assert r.mean()["ape"] == pytest.approx(float(r.total.mean()))


def test_binarize_is_exact_unless_given_a_tolerance():
    d = torch.tensor([0.0, 1e-12, -1e-3, 0.5])
    assert binarize(d).tolist() == [0, 1, 1, 1]
    assert binarize(d, tol=1e-3).tolist() == [0, 0, 0, 1]
    maps = torch.zeros(1, 1, 3, 3)
    maps[0, 0, 1, 1] = 1.0
    assert total_variation(maps, normalize=False).item() == 4
    assert total_variation(0.5 * maps, beta=3.0, normalize=False).item() == pytest.approx(4 * 0.125)


def test_smooth_support_matches_eq11_and_approaches_the_binarisation():
    d = torch.tensor([0.0, 0.004, -0.009, 0.011, -0.05, 0.7])
    eps = 0.01
    b = binarize(d, tol=eps)  # 1 where |d| > ε (no value here sits exactly on ε)
    s30 = smooth_support(d, gamma=30.0, eps=eps)
    paper = 2 / (1 + torch.exp(-30.0 * (d.abs() - eps))) - 1
    torch.testing.assert_close(s30, paper)
    errors = []
    for gamma in (30.0, 300.0, 3e3, 3e4, 3e5):
        s = smooth_support(d, gamma=gamma, eps=eps)
        assert ((s >= 0) == (b == 1)).all()  # the Eq. 14 mask is the ε-binarisation for every γ
        errors.append(((s + 1) / 2 - b).abs().max().item())
    assert all(a >= b_ for a, b_ in zip(errors, errors[1:], strict=False))
    assert errors[0] > 0.1 and errors[-1] < 1e-3


# --- regularized method ---

def test_phase2_changes_no_element_outside_the_mask():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x = torch.rand(5, 3, 8, 8) * 0.8 + 0.1
    mask = torch.rand(5, 3, 8, 8) < 0.3
    x_before = x.clone()
    out = minimize_in_mask(model, x, mask, target="predicted", steps=30, lr=0.05)
    assert torch.equal(x, x_before)
    assert torch.equal(out[~mask], x[~mask])
    assert (out[mask] != x[mask]).float().mean() > 0.9
    target = model(x).argmax(1)
    p0 = torch.softmax(model(x), 1).gather(1, target[:, None])
    p1 = torch.softmax(model(out), 1).gather(1, target[:, None])
    assert (p1 < p0).all()
    pixel_mask = mask[:, 0]  # an (N, H, W) mask applies to every channel
    out2 = minimize_in_mask(model, x, pixel_mask, target, steps=5, lr=0.05)
    assert torch.equal(out2.permute(1, 0, 2, 3)[:, ~pixel_mask], x.permute(1, 0, 2, 3)[:, ~pixel_mask])


def test_regularized_explanation_puts_its_mask_on_the_patch_the_model_uses():
    model = PatchModel(ROWS, COLS).train()
    x, gt = patch_images()
    x_before = x.clone()
    res = regularized_explanation(model, x, target=1, steps=150, phase2_steps=60)
    assert model.training and model.w.requires_grad  # caller's state restored
    assert torch.equal(x, x_before)
    m = res.pixel_mask
    assert m.any(dim=(1, 2)).all()
    assert not (m & ~gt).any()  # nothing outside the patch
    assert torch.equal((res.x_adv != x)[:, 0] & ~m, torch.zeros_like(m))
    p_clean = torch.softmax(model(x), 1)[:, 1]
    assert (res.ape.classification < p_clean - 0.3).all()
    assert (res.ape.l0 <= m.flatten(1).float().mean(1) + 1e-6).all()
    torch.testing.assert_close(res.ape.total, res.ape.l0 + res.ape.tv + res.ape.classification)
    assert (res.mask == (res.support >= 0)).all()
    assert cc_hit_rate(m, gt).tolist() == [1.0, 1.0, 1.0]


def test_log_complement_loss_keeps_a_gradient_where_the_probability_saturates():
    model = SumModel(1.0)
    x = torch.full((2, 1, 4, 4), 0.5)
    x[1] = 1.0  # logit_1 = 16: p_1 ≈ 1 − 1.1e-7
    t = torch.ones(2, dtype=torch.long)
    p = torch.softmax(model(x).double(), 1)[:, 1]  # exact reference in float64
    torch.testing.assert_close(classification_term(model, x, t, "log-complement").double(), -torch.log1p(-p),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(classification_term(model, x, t), p.float())
    saturated = SumModel(10.0)  # logit_1 = 160: the float32 probability is exactly 1
    xs = torch.ones(1, 1, 4, 4, requires_grad=True)
    classification_term(saturated, xs, t[:1], "probability").sum().backward()
    assert torch.count_nonzero(xs.grad) == 0
    xs.grad = None
    term = classification_term(saturated, xs, t[:1], "log-complement")
    term.sum().backward()
    assert term.item() == pytest.approx(160.0, rel=1e-4) and torch.allclose(xs.grad, torch.full_like(xs, 10.0))
    # the option reaches both phases: phase 2 in a full mask now lowers a saturated probability
    stuck = minimize_in_mask(saturated, xs.detach(), torch.ones(1, 4, 4, dtype=torch.bool), t[:1], steps=5)
    moved = minimize_in_mask(saturated, xs.detach(), torch.ones(1, 4, 4, dtype=torch.bool), t[:1], steps=5,
                             classification_loss="log-complement")
    assert torch.equal(stuck, xs.detach()) and (moved < xs.detach()).all()
    with pytest.raises(ValueError, match="classification_loss"):
        regularized_explanation(model, x, classification_loss="logit")


def test_temperature_rescues_the_probability_gradient_and_the_convergence_rule_stops_early():
    saturated = SumModel(10.0)  # logit_1 = 160 on a white 4×4 image: float32 p_1 is exactly 1
    xs = torch.ones(1, 1, 4, 4, requires_grad=True)
    t = torch.ones(1, dtype=torch.long)
    term = classification_term(saturated, xs, t, "probability", temperature=100.0)  # z/T = 1.6
    term.sum().backward()
    assert term.item() == pytest.approx(torch.sigmoid(torch.tensor(1.6)).item(), rel=1e-5)
    assert (xs.grad > 0).all()  # Eq. 13's own term now has a gradient
    with pytest.raises(ValueError, match="temperature"):
        classification_term(saturated, xs, t, temperature=0.0)
    x = torch.ones(2, 1, 4, 4)
    full = regularized_explanation(saturated, x, 1, alpha=1.0, beta=1.0, steps=30, phase2_steps=0)
    assert full.steps_run == 30 and not full.mask.any()  # no gradient: E never changes
    early = regularized_explanation(saturated, x, 1, alpha=1.0, beta=1.0, steps=30, phase2_steps=0, patience=3)
    assert early.steps_run == 4  # the first step sets the best E; three more without improvement stop it
    moved = regularized_explanation(saturated, x, 1, alpha=0.01, beta=0.0, steps=30, lr=0.05, phase2_steps=0,
                                    temperature=100.0, patience=3)
    assert moved.mask.all() and moved.steps_run > 4


# --- meaningful perturbation ---

@pytest.mark.parametrize("deletion", ["min", "blur"])
def test_meaningful_perturbation_finds_the_patch(deletion):
    # a blur keeps the patch's mean but destroys its contrast
    model = PatchModel(ROWS, COLS, contrast=deletion == "blur")
    x, gt = patch_images(checker=deletion == "blur")
    exp = meaningful_perturbation(model, x, target=1, deletion=deletion, steps=150)
    sal = exp.saliency
    inside = sal[gt].view(3, -1).mean(1)
    far = sal[:, 24:, :8].flatten(1).mean(1)  # a corner at least one mask cell away from the patch
    assert (inside > 0.75).all() and (inside > far + 0.2).all()
    assert pointing_game(sal, gt).tolist() == [1.0, 1.0, 1.0]
    assert (exp.probability < torch.softmax(model(x), 1)[:, 1]).all()
    scan = scan_threshold(model, exp, thresholds=20)
    assert cc_hit_rate(scan.region, gt).tolist() == [1.0, 1.0, 1.0]
    assert (scan.region & gt).flatten(1).sum(1).min() >= 0.75 * 64
    assert (scan.region.flatten(1).sum(1) < 0.35 * 32 * 32).all()
    assert scan.ape.total.mean() <= scan.mean_ape.min() + 1e-6


def test_scan_threshold_picks_the_threshold_with_the_best_ape_d():
    model = PatchModel(ROWS, COLS)
    x, gt = patch_images(2)
    keep = torch.ones(2, 1, 32, 32)
    keep[:, 0][gt] = 0.2  # deletion amount 0.8 on the patch
    keep[:, 0, 24:, :] = 0.7  # 0.3 on a bottom band that the model ignores
    target = torch.ones(2, dtype=torch.long)
    exp = MeaningfulExplanation(x, keep, torch.zeros_like(x), x, torch.zeros(2), target)
    scan = scan_threshold(model, exp, thresholds=10)
    # T < 0.3 also deletes the useless band (larger L0), T ≥ 0.8 deletes nothing: 0.3 is the smallest best T
    assert scan.threshold.tolist() == [pytest.approx(0.3), pytest.approx(0.3)]
    assert torch.equal(scan.region, gt)
    assert torch.equal(scan.x_hat[:, 0][~gt], x[:, 0][~gt]) and (scan.x_hat[:, 0][gt] == 0).all()
    assert scan.mean_ape.shape == (10,) and scan.mean_ape.argmin().item() == 3
    per = scan_threshold(model, exp, thresholds=[0.1, 0.5, 0.9], per_example=True)
    assert per.threshold.tolist() == [pytest.approx(0.5), pytest.approx(0.5)]


# --- localisation scores ---

def test_cc_hit_rate_pointing_game_and_area_on_hand_made_masks():
    gt = torch.zeros(1, 6, 6, dtype=torch.bool)
    gt[0, 0:2, 0:2] = True
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 1, 1] = mask[0, 1, 2] = True  # touches the object
    mask[0, 4, 4] = True  # away from it
    mask[0, 5, 5] = True  # diagonal neighbour: same component with 8-connectivity, separate with 4
    assert cc_hit_rate(mask, gt).tolist() == [pytest.approx(1 / 2)]
    assert cc_hit_rate(mask, gt, connectivity=4).tolist() == [pytest.approx(1 / 3)]
    assert connected_components(mask).tolist() == [2]
    assert mask_area(mask).tolist() == [pytest.approx(4 / 36)]
    assert math.isnan(cc_hit_rate(torch.zeros_like(mask), gt).item())
    sal = torch.zeros(3, 6, 6)
    sal[0, 0, 0] = 1.0  # maximum inside
    sal[1, 5, 5] = 1.0  # maximum outside
    hits = pointing_game(sal, gt.expand(3, -1, -1))
    assert hits[:2].tolist() == [1.0, 0.0] and math.isnan(hits[2].item())
    assert pointing_game(sal[1:2], gt, tolerance=4).tolist() == [1.0]
    scores = localization_scores(mask.unsqueeze(1), gt)
    assert scores.mean()["cc_hit_rate"] == pytest.approx(0.5)


# --- datasets ---

def _square_source() -> ImageSet:
    """Class 0: a 5×5 square of 0.6 inside a 0.05 ring (7×7 ink); class 1: a 3×7 bar of 1.0."""
    x = torch.zeros(4, 1, 28, 28)
    for i in (0, 1):
        x[i, 0, 10:17, 10:17] = 0.05
        x[i, 0, 11:16, 11:16] = 0.6
    x[2, 0, 5:8, 3:10] = 1.0
    x[3, 0, 20:23, 15:22] = 1.0
    return ImageSet(x, torch.tensor([0, 0, 1, 1]), ["square", "bar"], "squares")


def test_cluttered_masks_cover_exactly_the_finding_digit_and_labels_match():
    data = make_cluttered_mnist(_square_source(), 30, canvas=40, digits_per_image=(2, 3), finding_class=0,
                                seed=1)
    assert isinstance(data, LocalizationSet) and data.x.shape == (30, 1, 40, 40)
    square_pixels = (data.x[:, 0] == 0.6) | (data.x[:, 0] == 0.05)
    assert torch.equal(data.masks, square_pixels)
    assert torch.equal(data.y == 1, data.masks.flatten(1).any(1))
    assert (data.masks.flatten(1).sum(1)[data.y == 1] == 49).all()
    assert 0 < int(data.y.sum()) < 30
    thr = make_cluttered_mnist(_square_source(), 10, canvas=40, mask_threshold=0.1, seed=1)
    assert torch.equal(thr.masks, thr.x[:, 0] == 0.6)


@pytest.mark.parametrize("background", ["noise", "texture"])
def test_cluttered_background_fills_only_the_off_digit_pixels_and_keeps_the_masks(background):
    black = make_cluttered_mnist(_square_source(), 12, canvas=40, seed=3)
    other = make_cluttered_mnist(_square_source(), 12, canvas=40, seed=3, background=background,
                                 background_level=0.2)
    assert torch.equal(black.masks, other.masks) and torch.equal(black.y, other.y)
    ink = black.x > 0
    assert torch.equal(other.x[ink], black.x[ink])  # the digits are untouched
    bg = other.x[~ink]
    assert bg.max() <= 0.2 and bg.std() > 0.01 and (bg > 0).float().mean() > 0.99  # deleting it is not free
    assert other.meta["background"] == background
    with pytest.raises(DataError, match="background"):
        make_cluttered_mnist(_square_source(), 2, canvas=40, background="grey")


def test_cluttered_mnist_from_real_digits(mnist5k):
    _, test = mnist5k
    data = make_cluttered_mnist(test, 40, finding_class=3, seed=0)
    ink = data.x[:, 0] > 0
    assert (data.masks <= ink).all()
    assert torch.equal(data.y == 1, data.masks.flatten(1).any(1))
    # other digits are ≥ 2 pixels away, so the object's 1-pixel border holds no ink
    grown = torch.nn.functional.max_pool2d(data.masks.float()[:, None], 3, 1, 1)[:, 0] > 0
    assert not (grown & ~data.masks & ink).any()
    sub = data.subset([3, 1])
    assert torch.equal(sub.masks, data.masks[[3, 1]]) and torch.equal(sub.y, data.y[[3, 1]])
    a, b = stratified_split(data, 10, seed=0)
    assert isinstance(a, LocalizationSet) and torch.equal(b.masks.flatten(1).any(1), b.y == 1)
    train, test2 = load_dataset("cluttered-mnist", n_train=20, n_test=10)
    assert len(train) == 20 and len(test2) == 10 and train.masks.shape == (20, 64, 64)
    assert train.meta["source"] == "mnist5k-train" and test2.meta["source"] == "mnist5k-test"


def _write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def test_load_masked_folder_reads_images_with_their_masks(tmp_path):
    for cls, k in (("benign", 0), ("malignant", 1)):
        for i in range(5):
            img = np.full((8, 8), 40 * i, np.uint8)
            mask = np.zeros((8, 8), np.uint8)
            if k:
                mask[i:i + 2, 2:4] = 1  # 0/1 masks count as masks
            _write_png(tmp_path / cls / f"im{i}.png", img)
            _write_png(tmp_path / "masks" / cls / f"im{i}.png", mask)
    train, test = load_masked_folder(tmp_path, seed=0)
    assert isinstance(train, LocalizationSet) and len(train) + len(test) == 10
    for part in (train, test):
        assert torch.equal(part.masks.flatten(1).sum(1), 4 * part.y)
    resized, _ = load_masked_folder(tmp_path, size=16)
    assert resized.masks.shape[1:] == (16, 16)
    assert torch.equal(resized.masks.flatten(1).sum(1), 16 * resized.y)

    (tmp_path / "masks" / "malignant" / "im3.png").unlink()
    with pytest.raises(DataError, match="have no mask.*im3.png"):
        load_masked_folder(tmp_path)
    _write_png(tmp_path / "masks" / "malignant" / "im3.png", np.zeros((6, 8)))
    with pytest.raises(DataError, match="mask is 8×6 but its image is 8×8"):
        load_masked_folder(tmp_path)
    _write_png(tmp_path / "masks" / "malignant" / "im3.png", np.zeros((8, 8)))
    _write_png(tmp_path / "masks" / "benign" / "stray.png", np.zeros((8, 8)))
    with pytest.raises(DataError, match="have no image.*stray.png"):
        load_masked_folder(tmp_path)
    with pytest.raises(DataError, match="missing the masks/ folder"):
        load_masked_folder(tmp_path / "benign")


# --- bad input ---

def test_bad_inputs_raise_clear_errors():
    model = SumModel(1.0)
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="same shape"):
        ape_d(model, x, x[:, :, :3])
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        ape_d(model, x, x + 2)
    with pytest.raises(ValueError, match="three non-negative"):
        ape_s(model, x, x, weights=(1, 1))
    with pytest.raises(ValueError, match="alpha and beta"):
        regularized_explanation(model, x, alpha=-1)
    with pytest.raises(ValueError, match="mask must have shape"):
        minimize_in_mask(model, x, torch.ones(2, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown deletion"):
        meaningful_perturbation(model, x, deletion="zero", steps=1)
    with pytest.raises(ValueError, match="mask_scale"):
        meaningful_perturbation(model, x, mask_scale=0)
    exp = meaningful_perturbation(model, x, steps=1)
    with pytest.raises(ValueError, match=r"values in \[0, 1\)"):
        scan_threshold(model, exp, thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match="same pixels"):
        cc_hit_rate(torch.zeros(2, 4, 4, dtype=torch.bool), torch.zeros(2, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="connectivity"):
        empty = torch.zeros(2, 4, 4, dtype=torch.bool)
        cc_hit_rate(empty, empty, connectivity=6)
    with pytest.raises(DataError, match="could not fit"):
        make_cluttered_mnist(_square_source(), 2, canvas=12, digits_per_image=(4, 4))
    with pytest.raises(DataError, match="finding_class 5"):
        make_cluttered_mnist(_square_source(), 2, finding_class=5)
    with pytest.raises(DataError, match="masks must have shape"):
        LocalizationSet(x, torch.zeros(2, dtype=torch.long), ["a", "b"], "bad", {}, torch.zeros(2, 3, 3))
