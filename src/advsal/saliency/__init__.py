"""Saliency maps of a classifier's decisions: functions of ``(model, x, target, ...)``, batched, one target
per example (a tensor of class indices, an int, ``"predicted"`` or ``"true"`` with ``labels=``).

- :func:`gradient` — ∂score/∂x (seed 001 Eq. 5; Simonyan et al. 2013), signed, |·|, channel-max or ×input.
- :func:`guided_backprop` — guided-ReLU backpropagation (Springenberg et al. 2014; seed 004 §3).
- :func:`grad_cam` / :func:`guided_grad_cam` — Grad-CAM of any named layer (Selvaraju et al. 2017).
- :func:`smoothgrad` — noise-averaged version of any method (Smilkov et al. 2017).
- :func:`integrated_gradients` — path attributions with the completeness error (Sundararajan et al. 2017).

``all_classes=True`` (gradient, guided_backprop, grad_cam) returns every class's map from one forward pass.
The model's train/eval mode and requires_grad flags and the inputs are left as they were.
"""

from .averaging import IGResult, integrated_gradients, smoothgrad
from .gradcam import CamResult, grad_cam, guided_grad_cam
from .gradients import gradient, guided_backprop

__all__ = ["CamResult", "IGResult", "grad_cam", "gradient", "guided_backprop", "guided_grad_cam",
           "integrated_gradients", "smoothgrad"]
