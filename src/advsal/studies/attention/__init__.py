"""The attention study (seed 004, Kotyan & Vargas, "Deep neural network loses attention to adversarial images"):
guided backprop and Grad-CAM of original and adversarial images under PGD and Pixel Attack, every claim of the
paper measured and decided. ``method.run`` is the pipeline, ``analysis`` the tables and verdicts, the renderer
``advsal.report.attention``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..engine import StudyDef
from .analysis import (
    Claim,
    Test,
    analyse,
    claims,
    common_images,
    compare_attacks,
    comparison_metrics,
    evaluate_claims,
    pool_pixel_attacks,
    summary,
    verdict,
)
from .config import Config, PGDConfig, PixelConfig
from .method import run
from .steps import cam_layers, control_perturbation, early_stopped_pgd, image_metrics


def render(run_dir: str | Path, results: dict[str, Any]) -> tuple[Path, Path]:
    from ...report.attention import render_attention_report

    return render_attention_report(Path(run_dir), results)


STUDY = StudyDef(name="attention", Config=Config, run=run, render=render, summary=summary)

__all__ = ["STUDY", "Claim", "Config", "PGDConfig", "PixelConfig", "Test", "analyse", "cam_layers", "claims",
           "common_images", "compare_attacks", "comparison_metrics", "control_perturbation", "early_stopped_pgd",
           "evaluate_claims", "image_metrics", "pool_pixel_attacks", "render", "run", "summary", "verdict"]
