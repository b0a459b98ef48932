"""Adaptive attacks on the detectors: PGD on an image's pixels against a detector the attacker knows.

``pixels`` (the image in the model's own input layout, differentiable), ``scores`` (each
detector's score with its gradient), ``pgd`` (the attack, one record per image and budget).
"""

from sasa.attack.pgd import AttackConfig, AttackOutcome, attack_batch, run_attack
from sasa.attack.pixels import PixelSpace, PixelSpaceError
from sasa.attack.scores import differentiable_score

__all__ = ["AttackConfig", "AttackOutcome", "PixelSpace", "PixelSpaceError", "attack_batch", "differentiable_score",
           "run_attack"]
