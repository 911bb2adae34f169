"""Adversarial attacks: one module per family on a shared base (``Attack`` → ``AttackResult``)."""

from .base import L0_TOLERANCE, Attack, AttackResult, perturbation_norms

__all__ = ["L0_TOLERANCE", "Attack", "AttackResult", "perturbation_norms"]
