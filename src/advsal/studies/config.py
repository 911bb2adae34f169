"""Study configurations: typed dataclasses filled from YAML presets or files, validated completely up front.

A wrong key, type or value names the field (``detection.second_round.steps``) and what it accepts, before the
first stage runs. Presets ship inside the package (``advsal/presets/STUDY-PRESET.yaml``), so an installed advsal
finds them; ``--preset cifar10`` picks ``STUDY-cifar10.yaml``, ``--config FILE`` any file.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from ..errors import ConfigError

C = TypeVar("C")


def presets(study: str) -> list[str]:
    """The preset names shipped for ``study`` (``STUDY-NAME.yaml`` in the package's presets folder)."""
    folder = resources.files("advsal") / "presets"
    prefix = f"{study}-"
    return sorted(p.name[len(prefix):-5] for p in folder.iterdir() if p.name.startswith(prefix)
                  and p.name.endswith(".yaml"))


def preset_text(study: str, preset: str) -> str:
    folder = resources.files("advsal") / "presets"
    path = folder / f"{study}-{preset}.yaml"
    if not path.is_file():
        raise ConfigError(f"no preset {preset!r} for the {study} study; available: {', '.join(presets(study))}")
    return path.read_text()


def load_config(cls: type[C], study: str, *, preset: str | None = None, path: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> C:
    """``cls`` filled from a preset or a YAML file (defaults when neither), then ``overrides``; validated."""
    if preset is not None and path is not None:
        raise ConfigError("give either --preset or --config, not both")
    raw: Any = {}
    where = f"{study} defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found (presets of the {study} study: "
                              f"{', '.join(presets(study))}; pick one with --preset)")
        text, where = path.read_text(), str(path)
    elif preset is not None:
        text, where = preset_text(study, preset), f"preset {study}-{preset}"
    else:
        text = ""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a study config must be a mapping of option: value")
    cfg = from_mapping(cls, raw, where)
    if overrides:
        cfg = from_mapping(cls, overrides, "command line", base=cfg)
    return cfg


def from_mapping(cls: type[C], raw: dict[str, Any], where: str = "config", base: C | None = None) -> C:
    """``base`` (default ``cls()``) with the fields in ``raw`` replaced — nested dataclasses merged — checked
    field by field against the type annotations, then by each dataclass's ``validate()``."""
    cfg = _merge(base if base is not None else cls(), raw, where)
    check(cfg, where)
    return cfg


def _merge(base: Any, raw: dict[str, Any], where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of option: value, got {_show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(base)}
    unknown = sorted(set(map(str, raw)) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    hints = typing.get_type_hints(type(base))
    updates = {}
    for key, value in raw.items():
        current = getattr(base, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            updates[key] = _merge(current, value, f"{where}.{key}")
        else:
            updates[key] = _coerce(value, hints[key], f"{where}.{key}")
    return dataclasses.replace(base, **updates)


def check(cfg: Any, where: str = "config") -> None:
    """Type-check every field of the dataclass ``cfg`` (recursively) and run its ``validate()``."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check(value, f"{where}.{f.name}")
        else:
            _coerce(value, hints[f.name], f"{where}.{f.name}")
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as exc:
            raise ConfigError(f"{where}.{exc}") from None


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` if it matches annotation ``tp`` (ints are accepted for floats), else ConfigError."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(exc)
        names = " or ".join(_type_name(o) for o in typing.get_args(tp))
        raise ConfigError(f"{where} must be {names}, got {_show(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where} must be null, got {_show(value)}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, typing.get_args(tp)))}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {_show(value)}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {_show(value)}")
        k_tp, v_tp = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, k_tp, f"{where} key"): _coerce(v, v_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return value
        raise ConfigError(f"{where} must be a finite number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {_show(value)}")
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        return from_mapping(tp, value, where)
    raise TypeError(f"{where}: unsupported annotation {tp!r} in a study config")  # a bug in advsal, not the user's


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


# -- range checks used by the studies' validate() methods --------------------------------------------------------
def require(condition: bool, field: str, message: str) -> None:
    """Inside ``validate()``: raise ConfigError ``field: message`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"{field} {message}")


__all__ = ["check", "from_mapping", "load_config", "preset_text", "presets", "require"]
