"""Studies: the papers' pipelines composed from the library, cached and resumable in a run directory.

Each study is a package (``studies/detection``, ``imbalance``, ``explanation``, ``attention``) exposing
``STUDY``, a :class:`~advsal.studies.engine.Study`: its typed ``Config``, ``run(config, run_dir, model=,
data=, log=)`` returning the results dict (also written to ``results.json``), ``render(run_dir, results)`` and
``summary(results)``. Its ``method.py`` reads like the paper's method section; the stage graph
(:mod:`advsal.store`) caches every step by what it is computed from.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreError
from .config import load_config, presets
from .engine import Study

STUDIES = ("detection", "imbalance", "explanation", "attention")


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise ConfigError(f"unknown study {name!r}; available: {', '.join(STUDIES)}")
    return importlib.import_module(f"advsal.studies.{name}").STUDY


def study_config(name: str, *, preset: str | None = None, path: str | Path | None = None,
                 overrides: dict[str, Any] | None = None) -> Any:
    """The validated config of study ``name`` from its defaults, a preset or a YAML file, plus ``overrides``."""
    return load_config(get_study(name).Config, name, preset=preset, path=path, overrides=overrides)


def read_results(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's ``results.json``, checked to be a study's results."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise StoreError(f"{path} not found: run the study first (`advsal run STUDY --name ...`)")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path} is corrupt ({exc}); re-run the study to rebuild it") from None
    if not isinstance(results, dict) or results.get("study") not in STUDIES:
        raise StoreError(f"{path} is not the results of an advsal study; re-run the study to rebuild it")
    return results


def render_run(run_dir: str | Path) -> tuple[Path, Path]:
    """Re-render a finished run's report from its ``results.json`` (no recomputation)."""
    results = read_results(run_dir)
    return get_study(results["study"]).render(Path(run_dir), results)


__all__ = ["STUDIES", "Study", "get_study", "presets", "read_results", "render_run", "study_config"]
