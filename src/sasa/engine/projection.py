"""Eq. 8 of the SASA paper: project the safety layer's state onto the fused layer's state.

``h_s <- (<h_s, h_f> / ||h_f||^2) h_f`` at every selected position. The paper replaces h_s outright;
``residual`` adds the projection to h_s and ``interpolate`` mixes the two, as ablations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("replace", "residual", "interpolate")
POSITIONS = ("all", "text", "image", "last")


@dataclass(frozen=True)
class ProjectionConfig:
    """How the projected state is formed and where it is written.

    mode: ``replace`` (paper) sets h_s to the projection; ``residual`` sets h_s + alpha * proj;
        ``interpolate`` sets (1 - alpha) * h_s + alpha * proj.
    alpha: coefficient for ``residual`` and ``interpolate``.
    eps: added to ||h_f||^2 so a zero fused state yields a zero projection, not NaN.
    positions: which prompt positions are projected: ``all`` (paper: every prompt position),
        ``text`` (non-image tokens), ``image`` (image tokens only) or ``last`` (last prompt token).
        Padding positions are never touched.
    """

    mode: str = "replace"
    alpha: float = 1.0
    eps: float = 1e-6
    positions: str = "all"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"projection mode must be one of {MODES}, got {self.mode!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"projection positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.eps < 0:
            raise ValueError("projection eps must be >= 0")

    def to_dict(self) -> dict:
        return {"mode": self.mode, "alpha": self.alpha, "eps": self.eps, "positions": self.positions}


def project(h_s: torch.Tensor, h_f: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The projection of h_s onto h_f along the last dimension, computed in float32."""
    a, b = h_s.float(), h_f.float()
    coef = (a * b).sum(-1, keepdim=True) / (b * b).sum(-1, keepdim=True).add(eps)
    return (coef * b).to(h_s.dtype)


def apply_projection(
    h_s: torch.Tensor,
    h_f: torch.Tensor,
    config: ProjectionConfig,
    position_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return the new safety-layer state; positions where ``position_mask`` is False keep h_s."""
    if h_s.shape != h_f.shape:
        raise ValueError(f"h_s and h_f shapes differ: {tuple(h_s.shape)} vs {tuple(h_f.shape)}")
    h_f = h_f.to(h_s.device)  # under a device_map blocks s and f may sit on different devices
    proj = project(h_s, h_f, config.eps)
    if config.mode == "replace":
        new = proj
    elif config.mode == "residual":
        new = h_s + config.alpha * proj
    else:
        new = (1.0 - config.alpha) * h_s + config.alpha * proj
    if position_mask is None:
        return new
    return torch.where(position_mask.unsqueeze(-1).to(h_s.device), new, h_s)


def position_mask(
    config: ProjectionConfig,
    attention_mask: torch.Tensor,
    image_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Boolean [batch, seq] mask of the positions to project, never including padding."""
    real = attention_mask.bool()
    if config.positions == "all":
        return real
    if config.positions == "last":
        mask = torch.zeros_like(real)
        mask[:, -1] = real[:, -1]
        return mask
    if image_mask is None:
        image_mask = torch.zeros_like(real)
    if config.positions == "image":
        return real & image_mask.bool()
    return real & ~image_mask.bool()
