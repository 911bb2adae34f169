"""The class-imbalance study (seed 002): see :mod:`.method` for the protocol."""

from ..engine import StudyDef
from .analysis import per_class_attack_metrics, summary
from .config import AttackConfig, Config, MinEpsConfig
from .method import render, run

STUDY = StudyDef(name="imbalance", Config=Config, run=run, render=render, summary=summary)

__all__ = ["STUDY", "AttackConfig", "Config", "MinEpsConfig", "per_class_attack_metrics", "render", "run",
           "summary"]
