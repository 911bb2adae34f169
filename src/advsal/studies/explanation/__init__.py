"""The explanation study (seed 003): regularized adversarial examples for interpretability against meaningful
perturbation, Table 1 on cluttered-mnist. ``method.run`` is the pipeline; ``advsal run explanation``."""

from ..engine import StudyDef
from .analysis import compare_contrast, compare_rows, paired_comparison, paper_verdicts, render, summarize, summary
from .config import Config, MeaningfulConfig, RegularizedConfig
from .method import run
from .protocol import LOSS_TAGS, PAPER_TABLE1, meaningful_rows, mp_tv_coeff, regularized_rows, threshold_grid
from .steps import top_k_masks

STUDY = StudyDef(name="explanation", Config=Config, run=run, render=render, summary=summary)

__all__ = ["LOSS_TAGS", "PAPER_TABLE1", "STUDY", "Config", "MeaningfulConfig", "RegularizedConfig",
           "compare_contrast", "compare_rows", "meaningful_rows", "mp_tv_coeff", "paired_comparison",
           "paper_verdicts", "regularized_rows", "render", "run", "summarize", "summary", "threshold_grid",
           "top_k_masks"]
