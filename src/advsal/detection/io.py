"""Saving and loading trained detectors: safetensors tensors plus a JSON sidecar; nothing is unpickled.

    save_detector(det, "guard/detector", classifier=model)      # guard/detector.safetensors + .json
    det = load_detector("guard/detector", model)                  # refuses another classifier, a modified file

The sidecar records the detector's kind (its class name, see :data:`DETECTOR_KINDS`), its ``params()``, the
classifier's content hash (:func:`advsal.store.fingerprint`: a detector is only meaningful for the classifier it
was trained with), the threshold, an optional calibration record, and the SHA-256 of the tensor file, so a
truncated or modified file is refused rather than half-loaded.

What is stored per family:

- network detectors (``NetworkDetector``: saliency, image-only, feature-map, N+1): the ``state_dict`` and the
  network's input shape ``feature_shape_`` (``build`` recreates the network before the weights are loaded);
- statistic detectors (LID, Mahalanobis, KD+BU, feature squeezing): their fitted state — every public attribute
  with a trailing underscore — exported by :func:`fitted_state` as tensors (lists of tensors as numbered
  entries) plus JSON values, and restored by :func:`load_fitted_state`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .. import __version__
from ..errors import AdvsalError
from ..store import atomic_write_bytes, atomic_write_text, fingerprint, to_jsonable
from ..tensors import model_device
from .baselines import FeatureSqueezingDetector, KDBUDetector, LIDDetector, MahalanobisDetector
from .detectors import FeatureDetector, NetworkDetector, NPlusOneDetector, SaliencyDetector

FORMAT = 1
_STATE = "state."    # tensor-file prefix of a statistic detector's fitted tensors
_WEIGHTS = "net."    # tensor-file prefix of a network detector's state_dict entries

#: Detector classes :func:`load_detector` can rebuild, by the name the sidecar records (``type(det).__name__``).
DETECTOR_KINDS: dict[str, type] = {cls.__name__: cls for cls in (
    SaliencyDetector, FeatureDetector, NPlusOneDetector, LIDDetector, MahalanobisDetector, KDBUDetector,
    FeatureSqueezingDetector)}


class DetectorFileError(AdvsalError, ValueError):
    """A saved detector is missing, corrupt, modified, of an unknown kind, or made for another classifier."""


def register_detector_kind(cls: type) -> type:
    """Make ``cls`` loadable by :func:`load_detector` (its constructor takes ``(classifier, **params())``).
    Usable as a class decorator."""
    DETECTOR_KINDS[cls.__name__] = cls
    return cls


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


# ------------------------------------------------------------------------------------------------ fitted state
def fitted_state(detector: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A statistic detector's fitted state (public attributes ending in ``_``) as (tensors, JSON values).

    A tensor ``coef_`` becomes tensor ``coef_``; a list of tensors ``precisions_`` becomes ``precisions_.0``,
    ``precisions_.1``, … (its length in the JSON part); numbers, strings and lists of them go to the JSON part.
    Anything else raises :class:`DetectorFileError` naming the attribute."""
    tensors: dict[str, Tensor] = {}
    values: dict[str, Any] = {}
    lists: dict[str, int] = {}
    for name, value in sorted(vars(detector).items()):
        if not name.endswith("_") or name.startswith("_"):
            continue
        if isinstance(value, Tensor):
            tensors[name] = value.detach().cpu().contiguous()
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Tensor) for v in value):
            lists[name] = len(value)
            for i, v in enumerate(value):
                tensors[f"{name}.{i}"] = v.detach().cpu().contiguous()
        elif value is None or isinstance(value, (bool, int, float, str, list, tuple, dict)):
            values[name] = to_jsonable(value)
        else:
            raise DetectorFileError(f"{type(detector).__name__}.{name} is a {type(value).__name__}; only tensors, "
                                    "lists of tensors and JSON values can be saved")
    return tensors, {"values": values, "tensor_lists": lists}


def load_fitted_state(detector: Any, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Any:
    """Set the attributes :func:`fitted_state` exported (tensors on the classifier's device, dtypes kept)."""
    device = model_device(detector.classifier)
    lists = meta.get("tensor_lists", {})
    for name, n in lists.items():
        setattr(detector, name, [tensors[f"{name}.{i}"].to(device) for i in range(int(n))])
    listed = {f"{name}.{i}" for name, n in lists.items() for i in range(int(n))}
    for name, t in tensors.items():
        if name not in listed:
            setattr(detector, name, t.to(device))
    for name, value in meta.get("values", {}).items():
        setattr(detector, name, value)
    return detector


# ------------------------------------------------------------------------------------------------ save / load
def save_detector(detector: Any, path: str | Path, classifier: nn.Module | None = None, *,
                  calibration: dict[str, Any] | None = None, **info: Any) -> Path:
    """Write ``path``.safetensors (weights or fitted arrays) and ``path``.json (kind, ``params()``, classifier
    hash, threshold, ``calibration``, extra ``info``); returns the tensor file's path.

    ``classifier`` defaults to ``detector.classifier``; its fingerprint is what :func:`load_detector` checks."""
    from safetensors.torch import save as safetensors_bytes

    kind = type(detector).__name__
    if kind not in DETECTOR_KINDS:
        raise DetectorFileError(f"cannot save a {kind}: known kinds are {', '.join(DETECTOR_KINDS)} (add yours with "
                                "advsal.detection.io.register_detector_kind)")
    if not getattr(detector, "is_fitted", False):
        raise DetectorFileError(f"{kind} is not fitted: call fit(x_clean, x_adv) before saving it")
    classifier = classifier if classifier is not None else detector.classifier
    meta: dict[str, Any] = {}
    if isinstance(detector, NetworkDetector):
        tensors = {_WEIGHTS + k: v.detach().cpu().contiguous() for k, v in detector.state_dict().items()}
        shape = getattr(detector, "feature_shape_", None)
        if shape is None and not isinstance(detector, NPlusOneDetector):
            raise DetectorFileError(f"{kind} does not record its input shape (feature_shape_); call "
                                    "detector.build(feature_shape) or fit it with this advsal version")
        meta["feature_shape"] = list(shape) if shape is not None else None
        history = getattr(detector, "history_", None)
        meta["history"] = history.to_dict() if history is not None else None
    else:
        state, meta["state"] = fitted_state(detector)
        tensors = {_STATE + k: v for k, v in state.items()}
    blob = safetensors_bytes(tensors)
    weights, sidecar = _paths(path)
    sidecar_data = {
        "format": FORMAT, "kind": kind, "params": to_jsonable(detector.params()),
        "classifier": fingerprint(classifier), "threshold": float(detector.threshold),
        "calibration": to_jsonable(calibration), "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
        "advsal_version": __version__, **meta, **to_jsonable(info)}
    atomic_write_bytes(weights, blob)
    atomic_write_text(sidecar, json.dumps(sidecar_data, indent=2))
    return weights


def read_detector_info(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of a saved detector (checked to be one)."""
    weights, sidecar = _paths(path)
    if not sidecar.is_file():
        raise DetectorFileError(f"{sidecar} not found: a saved detector is {weights.name} plus {sidecar.name}; "
                                "write one with save_detector or `advsal export`")
    try:
        info = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DetectorFileError(f"{sidecar}: corrupt metadata ({exc}); export the detector again") from None
    missing = [k for k in ("format", "kind", "params", "classifier", "threshold", "sha256")
               if not isinstance(info, dict) or k not in info]
    if missing:
        raise DetectorFileError(f"{sidecar}: not a detector sidecar (missing {', '.join(missing)}); export the "
                                "detector again")
    if info["format"] != FORMAT:
        raise DetectorFileError(f"{sidecar}: detector format {info['format']} (this advsal reads {FORMAT}); "
                                "export it with this advsal version")
    shape = info.get("feature_shape")
    wrong = [name for name, ok in (
        ("kind", isinstance(info["kind"], str)), ("params", isinstance(info["params"], dict)),
        ("threshold", isinstance(info["threshold"], (int, float)) and not isinstance(info["threshold"], bool)
         and info["threshold"] == info["threshold"]),
        ("feature_shape", shape is None or (isinstance(shape, list) and all(isinstance(v, int) for v in shape))),
        ("calibration", info.get("calibration") is None or isinstance(info["calibration"], dict))) if not ok]
    if wrong:
        raise DetectorFileError(f"{sidecar}: malformed {', '.join(wrong)} (edited?); export the detector again")
    return info


def load_detector(path: str | Path, classifier: nn.Module, *, check_classifier: bool = True) -> Any:
    """Rebuild a detector saved by :func:`save_detector` for ``classifier``, on the classifier's device.

    Refuses (``DetectorFileError``) a sidecar naming another classifier hash (unless ``check_classifier`` is
    False), a tensor file whose SHA-256 differs from the sidecar's (truncated or modified), and an unknown kind.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load

    info = read_detector_info(path)
    weights, sidecar = _paths(path)
    if check_classifier:
        have = fingerprint(classifier)
        if have != info["classifier"]:
            raise DetectorFileError(
                f"{sidecar} was trained for classifier {info['classifier']}, but the given classifier's hash is "
                f"{have}: a detector only works with its own classifier; pass the model it was exported with")
    cls = DETECTOR_KINDS.get(info["kind"])
    if cls is None:
        raise DetectorFileError(f"{sidecar}: unknown detector kind {info['kind']!r}; known: "
                                f"{', '.join(DETECTOR_KINDS)} (register yours with register_detector_kind)")
    if not weights.is_file():
        raise DetectorFileError(f"{weights} not found (the sidecar exists but the tensors do not); export the "
                                "detector again")
    blob = weights.read_bytes()
    if hashlib.sha256(blob).hexdigest() != info["sha256"]:
        raise DetectorFileError(f"{weights} does not match the checksum in {sidecar.name} (truncated or modified, "
                                f"{len(blob)} of {info.get('bytes', '?')} bytes); export the detector again")
    try:
        tensors = safetensors_load(blob)
    except SafetensorError as exc:
        raise DetectorFileError(f"{weights}: unreadable tensor file ({exc}); export the detector again") from None
    try:
        detector = cls(classifier, **info["params"])
    except (TypeError, ValueError) as exc:
        raise DetectorFileError(f"{sidecar}: its params do not build a {cls.__name__} for this classifier "
                                f"({exc})") from None
    device = model_device(classifier)
    if isinstance(detector, NetworkDetector):
        if info.get("feature_shape") is not None:
            detector.build(tuple(info["feature_shape"]))
        state = {k[len(_WEIGHTS):]: v.to(device) for k, v in tensors.items() if k.startswith(_WEIGHTS)}
        try:
            detector.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise DetectorFileError(f"{weights}: weights do not fit a {cls.__name__} with params "
                                    f"{info['params']} ({str(exc).splitlines()[0]})") from None
        detector.eval()
    else:
        load_fitted_state(detector, {k[len(_STATE):]: v for k, v in tensors.items() if k.startswith(_STATE)},
                          info.get("state", {}))
    detector.threshold = float(info["threshold"])
    return detector



# ------------------------------------------------------------------------------------------------ study runs
def _verified_payload(stage_dir: Path) -> dict[str, Any]:
    """A finished stage's payload, after checking every file against its manifest (as the store does)."""
    from ..store import MANIFEST_FILE, load_payload

    try:
        manifest = json.loads((stage_dir / MANIFEST_FILE).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DetectorFileError(f"{stage_dir}: unreadable stage manifest ({exc}); re-run the study") from None
    for fname, meta in files.items():
        path = stage_dir / fname
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != meta.get("sha256"):
            raise DetectorFileError(f"{path} does not match its manifest (truncated or modified); re-run the "
                                    "study to recompute the stage")
    return load_payload(stage_dir)


def _stage_dirs(run_dir: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    """(name, directory, manifest) of every finished stage of a run."""
    from ..store import MANIFEST_FILE

    out = []
    for d in sorted((run_dir / "stages").iterdir()) if (run_dir / "stages").is_dir() else []:
        if not d.is_dir() or ".partial-" in d.name or not (d / MANIFEST_FILE).is_file():
            continue
        try:
            manifest = json.loads((d / MANIFEST_FILE).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and isinstance(manifest.get("stage"), str):
            out.append((manifest["stage"], d, manifest))
    return out


def _run_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json"
    if not path.is_file():
        raise DetectorFileError(f"{path} not found: {run_dir} is not a finished study run (run `advsal run "
                                "detection --name NAME` to completion first)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DetectorFileError(f"{path}: unreadable ({exc}); re-run the study") from None


def run_classifier(run_dir: str | Path) -> nn.Module:
    """The classifier F a study run trained, rebuilt from its ``classifier`` stage (a zoo model, in eval mode on
    the CPU). A run with a classifier the user brought has no such stage: load that model yourself."""
    import re

    from ..models import ZOO, build_model

    run_dir = Path(run_dir)
    results = _run_results(run_dir)
    info = results.get("classifier") or {}
    arch = info.get("architecture")
    key = info.get("fingerprint")
    stage_dir = run_dir / "stages" / f"classifier-{key}"
    if info.get("given") or arch not in ZOO or not stage_dir.is_dir():
        raise DetectorFileError(f"{run_dir}: the classifier ({arch!r}) was not trained by the run as a zoo model, "
                                "so it cannot be rebuilt from the run; pass the model with --model")
    match = re.search(r"images (\d+)x(\d+)x(\d+), (\d+) classes", str(results.get("data", {}).get("train", "")))
    if not match:
        raise DetectorFileError(f"{run_dir}/results.json does not describe the training data's shape; re-run the "
                                "study with this advsal version")
    channels, size, _, classes = (int(g) for g in match.groups())
    state = {k[2:]: v for k, v in _verified_payload(stage_dir).items() if k.startswith("w.")}
    mean = state.get("normalize.mean")
    std = state.get("normalize.std")
    model = build_model(arch, classes, channels, size, None if mean is None else mean.flatten().tolist(),
                        None if std is None else std.flatten().tolist())
    model.load_state_dict(state, strict=True)
    return model.eval()


def check_run_classifier(run_dir: str | Path, classifier: nn.Module) -> None:
    """Refuse a classifier other than the one the run's detectors were trained for (they read its saliency):
    a classifier the user brought is compared with the content hash the run recorded, a zoo model the run
    trained with the one rebuilt from its stage."""
    info = _run_results(Path(run_dir)).get("classifier") or {}
    want = info.get("fingerprint") if info.get("given") else fingerprint(run_classifier(run_dir))
    have = fingerprint(classifier)
    if have != want:
        raise DetectorFileError(f"the given classifier's hash is {have}, but the detectors of {run_dir} were "
                                f"trained for classifier {want}; pass the model the run used")


def run_detector_names(run_dir: str | Path, main: str = "image+saliency",
                       kinds: tuple[str, ...] = ()) -> dict[str, str]:
    """Display name → stage name of the detector stages of a run that hold a trained network: the study's own
    detector ``detector-A`` is ``{main}-A``; a baseline ``detector-K-A`` (K one of ``kinds``) is ``K-A``."""
    names: dict[str, str] = {}
    for stage, _, manifest in _stage_dirs(Path(run_dir)):
        if not stage.startswith("detector-") or "tensors.safetensors" not in manifest.get("files", {}):
            continue
        rest = stage[len("detector-"):]
        baseline = any(rest.startswith(k + "-") for k in kinds if k != main)
        names[rest if baseline else f"{main}-{rest}"] = stage
    return names


def run_detector(run_dir: str | Path, name: str, classifier: nn.Module, main: str = "image+saliency",
                 kinds: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """The detector ``name`` (see :func:`run_detector_names`; the stage name ``detector-…`` works too) trained
    by a study run, rebuilt for ``classifier`` from its stage; returns (detector, stage payload: its stored
    scores ``scores_clean`` / ``scores_adv``). Unknown names raise, listing the available ones."""
    run_dir = Path(run_dir)
    names = run_detector_names(run_dir, main, kinds)
    stage = names.get(name) or (name if name in names.values() else None)
    if stage is None:
        listed = ", ".join(sorted(names)) or "none (no detector stage with a trained network)"
        raise DetectorFileError(f"no detector {name!r} in {run_dir}; available: {listed}")
    candidates = [(m.get("created", ""), d, m) for s, d, m in _stage_dirs(run_dir) if s == stage]
    results = _run_results(run_dir)
    current = (results.get("classifier") or {}).get("fingerprint")
    same = [c for c in candidates if c[2].get("inputs", {}).get("classifier") == current]
    _, stage_dir, manifest = max(same or candidates, key=lambda c: c[0])
    payload = _verified_payload(stage_dir)
    params = (manifest.get("params") or {}).get("detector") or {}
    kinds_found = [cls for cls in DETECTOR_KINDS.values()
                   if set(getattr(cls, "_param_names", ())) == set(params)]
    network = [cls for cls in kinds_found if issubclass(cls, NetworkDetector)]
    statistic = [cls for cls in kinds_found if not issubclass(cls, NetworkDetector)]
    if len(network) == 1 and any(k.startswith("d.") for k in payload):
        detector = network[0](classifier, **params)
        if payload.get("feature_shape") is not None:
            detector.build(tuple(payload["feature_shape"]))
        device = model_device(classifier)
        detector.load_state_dict({k[2:]: v.to(device) for k, v in payload.items() if k.startswith("d.")},
                                 strict=True)
    elif len(statistic) == 1 and "state_meta" in payload:
        detector = load_fitted_state(statistic[0](classifier, **params),
                                     {k[2:]: v for k, v in payload.items() if k.startswith("s.")},
                                     payload.get("state_meta", {}))
    else:
        raise DetectorFileError(f"detector {name!r} (params {params}) in {run_dir} holds no fitted state this "
                                "advsal can rebuild (a run made by an older version?); re-run the study, or fit "
                                "the detector again and save it with advsal.detection.save_detector")
    if "threshold" in payload:
        detector.threshold = float(payload["threshold"])
    if hasattr(detector, "eval"):
        detector.eval()
    return detector, payload

__all__ = ["DETECTOR_KINDS", "DetectorFileError", "fitted_state", "load_detector", "load_fitted_state",
           "read_detector_info", "register_detector_kind", "run_classifier", "run_detector", "run_detector_names",
           "save_detector"]
