"""The main study: saliency-based adversarial detection (seeds 000/001) — ``advsal run detection``.

``method.py`` is the paper's method section; ``steps.py`` the stages it is made of; ``registry.py`` the
detectors it compares (attacks: :mod:`advsal.attacks.specs`); ``analysis.py`` the tables; the report is drawn by
:mod:`advsal.report.detection` from the results alone.
"""

from __future__ import annotations

from typing import Any

from ...attacks.specs import display_name
from ..engine import StudyDef
from .config import Config, DetectorConfig, GeneralisationConfig, SecondRoundConfig
from .method import render, run
from .registry import (
    DETECTOR_SPECS,
    MAIN_DETECTOR,
    DetectorSpec,
    default_layers,
    register_detector_spec,
    study_layers,
)


def summary(results: dict[str, Any]) -> list[str]:
    """The lines ``advsal run detection`` prints at the end: F's accuracy and Table II."""
    names = results.get("names", {}).get("attacks", {})
    lines = [f"classifier test accuracy {results['classifier']['test']['accuracy']:.4f}"]
    for name, row in results.get("table2", {}).items():
        lines.append(f"{names.get(name, display_name(name)):<14} f(x_adv) {row['f_adv']:.2f}  "
                     f"D(x_test) {row['d_clean']:.3f}  D(x_adv) {row['d_adv']:.3f}  AUROC {row['auroc']:.4f}")
    return lines


STUDY = StudyDef(name="detection", Config=Config, run=run, render=render, summary=summary)

__all__ = ["DETECTOR_SPECS", "MAIN_DETECTOR", "STUDY", "Config", "DetectorConfig", "DetectorSpec",
           "GeneralisationConfig", "SecondRoundConfig", "default_layers", "register_detector_spec", "render", "run",
           "study_layers", "summary"]
