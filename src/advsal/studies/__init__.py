"""Studies: the papers' pipelines composed from the library, cached and resumable in a run directory.

Each study module provides ``Config`` (a dataclass), ``load_config(path | None)``, ``run(config, run_dir, log)``
returning the results dict (also written to ``results.json``), ``render(run_dir, results)`` writing the report,
and ``summary(results)`` giving a few lines for the terminal.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

STUDIES = {
    "detection": "advsal.studies.detection",
    "imbalance": "advsal.studies.imbalance",
    "explanation": "advsal.studies.explanation",
    "attention": "advsal.studies.attention",
}


def get_study(name: str) -> ModuleType:
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; available: {', '.join(STUDIES)}")
    try:
        return importlib.import_module(STUDIES[name])
    except ModuleNotFoundError as exc:
        if exc.name == STUDIES[name]:
            raise ValueError(f"the {name} study is not available in this version of advsal") from exc
        raise


def render_run(run_dir: str | Path) -> tuple[Path, Path]:
    """Re-render a finished run's report from its ``results.json`` (no recomputation)."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the study first (`advsal run STUDY --name ...`)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is corrupt ({exc}); re-run the study to rebuild it") from exc
    return get_study(results.get("study", "")).render(run_dir, results)
