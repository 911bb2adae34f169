"""Saving and loading models safely: safetensors weights plus a JSON sidecar; nothing is unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .. import __version__
from ..errors import AdvsalError
from ..store import atomic_write_bytes, atomic_write_text
from .zoo import ZooModel, build_model


class ModelFileError(AdvsalError, ValueError):
    """A model file is missing, corrupt, or does not match its metadata."""


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p.with_suffix(".safetensors") if p.suffix in ("", ".json") else Path(f"{p}.safetensors")
    return p, p.with_suffix(".json")


def save_model(model: ZooModel, path: str | Path, classes: list[str] | None = None, **info) -> Path:
    """Write ``path`` (.safetensors weights) and its .json sidecar (architecture, input shape, classes,
    normalisation, any extra ``info`` such as training metrics, advsal version). Returns the weights path."""
    if not getattr(model, "spec", None):
        raise ModelFileError("save_model needs a model made by advsal.models.build_model (it records the "
                             "architecture); for another nn.Module save its state_dict with safetensors directly")
    weights, sidecar = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(weights, safetensors_bytes(tensors))
    meta = {**model.spec, "classes": classes, "advsal_version": __version__, **info}
    atomic_write_text(sidecar, json.dumps(meta, indent=2, default=float))
    return weights


def read_model_info(path: str | Path) -> dict:
    """The JSON sidecar of a saved model."""
    weights, sidecar = _paths(path)
    if not sidecar.is_file():
        raise ModelFileError(f"{sidecar} not found: a model saved by advsal has {weights.name} and "
                             f"{sidecar.name}; train one with `advsal train`")
    try:
        info = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{sidecar}: corrupt metadata ({exc})") from None
    if not isinstance(info, dict):
        raise ModelFileError(f"{sidecar}: metadata must be a JSON object, got {type(info).__name__}; it was not "
                             "written by advsal.save_model")
    limits = {"num_classes": 1_000_000, "in_channels": 64, "input_size": 8192}
    for key, top in limits.items():
        value = info.get(key)
        if key in info and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top):
            raise ModelFileError(f"{sidecar}: {key} must be an integer in [1, {top}], got {value!r}; the metadata "
                                 "is corrupt — save the model again")
    return info


def load_model(path: str | Path, device: str | torch.device = "cpu") -> ZooModel:
    """Rebuild a saved model from its sidecar and load its weights (safetensors; no unpickling), in eval mode."""
    weights, _ = _paths(path)
    info = read_model_info(weights)
    if not weights.is_file():
        raise ModelFileError(f"{weights} not found (the metadata file exists but the weights do not)")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(f"{weights}: corrupt or truncated weights file ({exc}); save the model again") from exc
    try:
        model = build_model(info["architecture"], info["num_classes"], info["in_channels"], info["input_size"],
                            info.get("mean"), info.get("std"))
    except KeyError as exc:
        raise ModelFileError(f"{weights}: metadata lacks {exc}; it was not written by advsal.save_model") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{weights}: weights do not match architecture {info['architecture']!r} "
                             f"({str(exc).splitlines()[0]})") from exc
    model.classes = info.get("classes")
    return model.to(device).eval()


def load_vgg16_weights(model: ZooModel, checkpoint: str | Path, load_head: bool | None = None) -> ZooModel:
    """Load a torchvision-layout VGG16 state dict (e.g. ImageNet weights ``vgg16-397923af.pth`` or a
    .safetensors file) into an advsal ``vgg16``; the head is skipped when its class count differs.
    ``.pth`` files are read with ``torch.load(weights_only=True)``."""
    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise ModelFileError(f"{ckpt} not found: pass a torchvision VGG16 state dict (.pth or .safetensors)")
    try:
        state = load_file(str(ckpt)) if ckpt.suffix == ".safetensors" else torch.load(ckpt, weights_only=True,
                                                                                       map_location="cpu")
    except Exception as exc:
        raise ModelFileError(f"{ckpt}: not a readable state dict ({exc})") from exc
    own = model.state_dict()
    head = {"classifier.6.weight", "classifier.6.bias"}
    if load_head is None:
        load_head = state.get("classifier.6.weight", torch.empty(0)).shape == own["classifier.6.weight"].shape
    picked = {k: v for k, v in state.items() if k in own and (load_head or k not in head)}
    missing = [k for k in own if k not in picked and not k.startswith("normalize.") and k not in head]
    if missing:
        raise ModelFileError(f"{ckpt}: not a VGG16 state dict (missing {missing[:3]}…)")
    model.load_state_dict(picked, strict=False)
    return model

