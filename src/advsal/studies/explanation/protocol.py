"""What seed 003 Table 1 compares, and the conventions that make the two methods comparable: the paper's table,
the rows (one per method and setting), the coefficient convention and the threshold grid."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .config import Config

#: short names for row ids and stage names
LOSS_TAGS = {"probability": "prob", "log-complement": "logc", "calibrated-probability": "calp"}

#: Seed 003 Table 1 (DDSM mammograms, "inception-resnet-v3" features — the seed's name; its reference [12] is
#: Inception v3 — ~2,000 validation images), copied from the
#: paper: method, L0 approx. coeff, tv coeff, tv_γ (None: "-"), then L0, tv, classification, APE_D (α_sp = α_sm =
#: α_cl = 1) and the CC hit rate in %.
PAPER_TABLE1: list[dict[str, Any]] = [
    {"method": "MP min", "l0_coeff": 0.01, "tv_coeff": 0.2, "tv_gamma": 1, "l0": 0.9947, "tv": 0.0019,
     "classification": 0.0044, "ape": 1.001, "cc_hit_rate": 10.5},
    {"method": "MP min", "l0_coeff": 0.01, "tv_coeff": 0.2, "tv_gamma": 3, "l0": 0.5254, "tv": 0.0059,
     "classification": 0.0027, "ape": 0.5340, "cc_hit_rate": 12.6},
    {"method": "MP min", "l0_coeff": 6, "tv_coeff": 120, "tv_gamma": 1, "l0": 0.6699, "tv": 0.0002,
     "classification": 0.0883, "ape": 0.7585, "cc_hit_rate": 23.9},
    {"method": "MP min", "l0_coeff": 40, "tv_coeff": 120, "tv_gamma": 1, "l0": 0.0606, "tv": 0.0002,
     "classification": 0.0881, "ape": 0.1489, "cc_hit_rate": 27.0},
    {"method": "MP blur", "l0_coeff": 0.01, "tv_coeff": 0.2, "tv_gamma": 1, "l0": 0.9958, "tv": 0.0042,
     "classification": 0.0137, "ape": 1.0137, "cc_hit_rate": 0.10},
    {"method": "MP blur", "l0_coeff": 0.01, "tv_coeff": 0.2, "tv_gamma": 3, "l0": 0.5487, "tv": 0.0100,
     "classification": 0.009, "ape": 0.5680, "cc_hit_rate": 0.11},
    {"method": "MP blur", "l0_coeff": 6, "tv_coeff": 120, "tv_gamma": 1, "l0": 0.7240, "tv": 0.0130,
     "classification": 0.0927, "ape": 0.8297, "cc_hit_rate": 10.4},
    {"method": "MP blur", "l0_coeff": 40, "tv_coeff": 120, "tv_gamma": 1, "l0": 0.191, "tv": 0.0009,
     "classification": 0.0760, "ape": 0.2679, "cc_hit_rate": 11.9},
    {"method": "ours", "l0_coeff": 0.01, "tv_coeff": 0.2, "tv_gamma": None, "l0": 0.0203, "tv": 0.0027,
     "classification": 0.0003, "ape": 0.0234, "cc_hit_rate": 13.9},
    {"method": "ours", "l0_coeff": 6, "tv_coeff": 120, "tv_gamma": None, "l0": 0.0004, "tv": 0.0001,
     "classification": 0.0286, "ape": 0.0291, "cc_hit_rate": 29.1},
    {"method": "ours", "l0_coeff": 40, "tv_coeff": 120, "tv_gamma": None, "l0": 0.0001, "tv": 0.0001,
     "classification": 0.0174, "ape": 0.0176, "cc_hit_rate": 38.2},
]


def _g(v: float) -> str:
    return f"{v:g}"


def regularized_rows(cfg: Config, candidates: bool = True) -> list[dict[str, Any]]:
    """One row per (loss, (α, β)), ``id`` ``ours-<loss>-a<α>-b<β>`` (Table 1's settings at ``regularized.lr``,
    ``transfer`` True), then — with ``candidates`` and a tuned comparison — one per (loss, tuning (α, β, lr)),
    ``id`` ``ours-<loss>-a<α>-b<β>-lr<lr>``."""
    rows = []
    tuned = cfg.tuning.regularized if candidates and cfg.tuning.fraction > 0 else []
    for loss in cfg.regularized.losses:
        for alpha, beta, lr, transfer in [(a, b, cfg.regularized.lr, True) for a, b in cfg.regularized.settings] \
                + [(a, b, lr, False) for a, b, lr in tuned]:
            rid = f"ours-{LOSS_TAGS[loss]}-a{_g(alpha)}-b{_g(beta)}" + ("" if transfer else f"-lr{_g(lr)}")
            rows.append({"id": rid,
                         "family": "ours", "method": "ours" if loss == "probability" else f"ours ({loss})",
                         "loss": loss, "l0_coeff": float(alpha), "tv_coeff": float(beta), "tv_gamma": None,
                         "lr": float(lr), "transfer": transfer})
    return rows


def meaningful_rows(cfg: Config) -> list[dict[str, Any]]:
    """One row per (deletion, (λ1, λ2, TV β)), ``id`` ``mp-<deletion>-l<λ1>-t<λ2>-g<β>``, deletions outermost
    as in Table 1: Table 1's settings (``transfer`` True), then the tuning candidates."""
    tuned = cfg.tuning.meaningful if cfg.tuning.fraction > 0 else []
    settings = [(*s, True) for s in cfg.meaningful.settings] + [(*s, False) for s in tuned]
    return [{"id": f"mp-{d}-l{_g(l1)}-t{_g(tv)}-g{_g(beta)}", "family": "mp", "method": f"MP {d}", "deletion": d,
             "l0_coeff": float(l1), "tv_coeff": float(tv), "tv_gamma": float(beta), "transfer": transfer}
            for d in cfg.meaningful.deletions for l1, tv, beta, transfer in settings]


def mp_tv_coeff(tv_coeff: float, height: int, width: int, mask_scale: int) -> float:
    """λ2 of the per-element-mean convention as ``meaningful_perturbation``'s ``tv_coeff`` (which divides the TV
    sum by the mask side s): mean|∂x m|^β + mean|∂y m|^β = Σ/(s(s − 1)) on an s×s mask, so tv_coeff = λ2/(s − 1).
    A one-cell mask has no neighbours and no TV.

    Table 1 uses one pair of columns for both methods, so both read one convention: the coefficients multiply
    per-element means — for MP the convention of the widely used PyTorch implementation of Fong & Vedaldi,
    whose defaults (λ1 = 0.01, λ2 = 0.2, β = 3) are Table 1's second MP row. ``regularized_explanation``
    already uses α·mean(S) + β·TV(S)/N, so α and β go in as printed."""
    side = math.sqrt(math.ceil(height / mask_scale) * math.ceil(width / mask_scale))
    return tv_coeff / (side - 1) if side > 1 else 0.0


def threshold_grid(linear: int, fine: int) -> list[float]:
    """0, 1/k, …, (k−1)/k plus ``fine`` log-spaced values in [1e-6, 1e-2] (seed 003 §5.1 scans at 1e-6 steps;
    the fine values resolve the near-zero thresholds that heavily penalised masks, λ1 = 6 or 40, need)."""
    grid = {i / linear for i in range(linear)}
    if fine:
        grid |= {float(v) for v in np.logspace(-6, -2, fine)}
    return sorted(grid)
