"""advsal — adversarial examples and saliency for PyTorch classifiers.

Layers (see DESIGN.md): data, models, training → attacks, saliency → detection, explanation → studies → report, cli.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
