"""Saliency maps of a classifier's decisions: functions of ``(model, x, target, ...)``, batched, one target
per example (a tensor of class indices, an int, ``"predicted"`` or ``"true"`` with ``labels=``).

- :func:`gradient` — ∂score/∂x (seed 001 Eq. 5; Simonyan et al. 2013), signed, |·|, channel-max or ×input.
- :func:`guided_backprop` — guided-ReLU backpropagation (Springenberg et al. 2014; seed 004 §3).
- :func:`grad_cam` / :func:`guided_grad_cam` — Grad-CAM of any named layer (Selvaraju et al. 2017);
  :func:`grad_cam_layers` — Grad-CAM of several layers from one forward/backward pass.
- :func:`smoothgrad` — noise-averaged version of any method (Smilkov et al. 2017).
- :func:`integrated_gradients` — path attributions with the completeness error (Sundararajan et al. 2017).

Every argument after ``target`` is keyword-only. :data:`SALIENCY_METHODS` (``saliency.methods``) is the one
registry of method names ("gradient", "guided-backprop", "grad-cam", "guided-grad-cam", "smoothgrad",
"integrated-gradients") shared with ``smoothgrad(method=...)`` and the CLI.

``all_classes=True`` (gradient, guided_backprop, grad_cam) returns every class's map from one forward pass.
The model's train/eval mode and requires_grad flags and the inputs are left as they were.
"""

from .averaging import IGResult, integrated_gradients, smoothgrad
from .gradcam import CamResult, grad_cam, grad_cam_layers, guided_grad_cam
from .gradients import gradient, guided_backprop
from .methods import SALIENCY_METHODS, SaliencyMethod, saliency_method

__all__ = ["SALIENCY_METHODS", "CamResult", "IGResult", "SaliencyMethod", "grad_cam", "grad_cam_layers",
           "gradient", "guided_backprop", "guided_grad_cam", "integrated_gradients", "saliency_method",
           "smoothgrad"]
