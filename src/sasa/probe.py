"""The SASA linear probe: logistic regression on augmented-pass features, saved without pickle.

A probe is two files: ``NAME.safetensors`` (weight, bias, standardisation mean/std) and
``NAME.json`` (what it was made for: model fingerprint, layers, projection, feature kind, threshold,
library versions). Loading checks both and refuses a probe made for another model.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sasa.atomic import atomic_path, atomic_write_text
from sasa.models.adapters import fingerprint_differences

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class ProbeFileError(ValueError):
    """A probe file that is missing, corrupt or inconsistent; the message names the file."""


class ProbeMismatchError(ValueError):
    """A probe made for a different model or feature layout than the one it is used with."""


def _as_tensor(x: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    return t.detach().to(torch.float64).cpu()


def threshold_at_fpr(benign_scores: Any, target_fpr: float) -> float:
    """The guard's threshold: a prompt is flagged when its score is > t, and at most ``target_fpr``
    of the benign scores are.  The one calibration, :func:`sasa.metrics.threshold_for_fpr` with
    rule ``>`` (ties at t are never flagged)."""
    from sasa.metrics import threshold_for_fpr

    return threshold_for_fpr(benign_scores, target_fpr, rule=">")


@dataclass
class LinearProbe:
    """w·standardise(x) + b; risk = sigmoid of that; flagged when the logit exceeds ``threshold``."""

    weight: torch.Tensor
    bias: float
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    threshold: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    # --- fitting ------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        features: Any,
        labels: Any,
        *,
        standardize: bool = True,
        class_weight: str | None = "balanced",
        l2: float = 1e-2,
        max_iter: int = 500,
        metadata: dict[str, Any] | None = None,
    ) -> "LinearProbe":
        """L2-regularised logistic regression by L-BFGS in float64 (deterministic; no sampling).

        labels: 1 = harmful, 0 = benign. ``class_weight="balanced"`` weighs each class by n / (2 n_c).
        ``l2`` is the penalty on the mean loss, as 1 / (C n) in scikit-learn's terms.
        """
        x = _as_tensor(features)
        y = _as_tensor(labels).reshape(-1)
        if x.ndim != 2:
            raise ValueError(f"features must be 2-D [n, d], got shape {tuple(x.shape)}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{x.shape[0]} feature rows but {y.shape[0]} labels")
        if not torch.isfinite(x).all():
            raise ValueError("features contain NaN or inf")
        classes = set(y.unique().tolist())
        if not classes <= {0.0, 1.0}:
            raise ValueError(f"labels must be 0 (benign) or 1 (harmful), got {sorted(classes)}")
        if len(classes) < 2:
            raise ValueError("probe fitting needs both harmful (1) and benign (0) examples")
        if class_weight not in (None, "balanced"):
            raise ValueError("class_weight must be None or 'balanced'")
        mean = std = None
        if standardize:
            mean = x.mean(0)
            std = x.std(0, unbiased=False).clamp_min(1e-6)
            x = (x - mean) / std
        n = y.shape[0]
        if class_weight == "balanced":
            n_pos = float(y.sum())
            sample_w = torch.where(y > 0.5, n / (2 * n_pos), n / (2 * (n - n_pos)))
        else:
            sample_w = torch.ones_like(y)
        w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                                history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            z = x @ w + b
            loss = (sample_w * torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")).mean()
            loss = loss + 0.5 * l2 * (w * w).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        meta = dict(metadata or {})
        meta.setdefault("training", {}).update(
            {"n": int(n), "n_harmful": int(y.sum()), "standardize": standardize, "class_weight": class_weight,
             "l2": l2})
        return cls(w.detach(), float(b.detach()), mean, std, 0.0, meta)

    # --- scoring ------------------------------------------------------------------------------
    def decision_function(self, features: Any) -> np.ndarray:
        """Risk logits, one per row."""
        x = _as_tensor(features)
        if x.ndim == 1:
            x = x.unsqueeze(0)
        if x.shape[1] != self.dim:
            raise ProbeMismatchError(f"probe expects {self.dim} features per row, got {x.shape[1]}")
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return ((x * self.weight).sum(-1) + self.bias).numpy()

    def predict_proba(self, features: Any) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision_function(features)))

    def flag(self, features: Any) -> np.ndarray:
        return self.decision_function(features) > self.threshold

    def calibrate(self, benign_features: Any, target_fpr: float) -> float:
        """Set the threshold so at most ``target_fpr`` of these benign prompts are flagged."""
        return self.calibrate_scores(self.decision_function(benign_features), target_fpr)

    def calibrate_scores(self, benign_scores: Any, target_fpr: float) -> float:
        """As :meth:`calibrate`, from risk logits already computed with this probe."""
        self.threshold = threshold_at_fpr(benign_scores, target_fpr)
        self.metadata["threshold"] = {"value": self.threshold, "target_fpr": target_fpr,
                                      "n_benign": int(len(benign_scores))}
        return self.threshold

    # --- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write NAME.safetensors and NAME.json atomically; returns both paths."""
        from safetensors.torch import save_file

        import sasa

        tensors_path, meta_path = probe_paths(path)
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": self.weight.to(torch.float32).contiguous(),
                   "bias": torch.tensor([self.bias], dtype=torch.float32)}
        if self.mean is not None and self.std is not None:
            tensors["mean"] = self.mean.to(torch.float32).contiguous()
            tensors["std"] = self.std.to(torch.float32).contiguous()
        meta = dict(self.metadata)
        meta.update({"format_version": FORMAT_VERSION, "dim": self.dim, "threshold_value": self.threshold,
                     "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        meta.setdefault("versions", _versions())
        meta["versions"]["sasa"] = sasa.__version__
        with atomic_path(tensors_path) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "sasa-probe", "format_version": str(FORMAT_VERSION)})
        atomic_write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True))
        return tensors_path, meta_path

    @classmethod
    def load(cls, path: str | os.PathLike, expect_fingerprint: dict | None = None) -> "LinearProbe":
        """Read a probe; with ``expect_fingerprint``, refuse one made for another model."""
        from safetensors import safe_open

        tensors_path, meta_path = probe_paths(path)
        for p in (tensors_path, meta_path):
            if not p.is_file():
                raise ProbeFileError(f"probe file missing: {p}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProbeFileError(f"{meta_path}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            raise ProbeFileError(f"{meta_path}: not a sasa probe (format_version {FORMAT_VERSION} expected)")
        try:
            with safe_open(str(tensors_path), framework="pt") as fh:
                header = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise ProbeFileError(f"{tensors_path}: cannot read safetensors ({exc})") from None
        if header.get("format") != "sasa-probe":
            raise ProbeFileError(f"{tensors_path}: not a sasa probe file")
        if "weight" not in tensors or "bias" not in tensors:
            raise ProbeFileError(f"{tensors_path}: weight or bias missing")
        weight = tensors["weight"].to(torch.float64)
        if weight.ndim != 1 or weight.shape[0] != meta.get("dim"):
            raise ProbeFileError(f"{tensors_path}: weight has shape {tuple(weight.shape)}, metadata says dim "
                                 f"{meta.get('dim')}")
        mean = tensors.get("mean")
        std = tensors.get("std")
        probe = cls(weight, float(tensors["bias"][0]), None if mean is None else mean.to(torch.float64),
                    None if std is None else std.to(torch.float64), float(meta.get("threshold_value", 0.0)), meta)
        if expect_fingerprint is not None:
            probe.check_model(expect_fingerprint)
        return probe

    def check_model(self, fingerprint: dict) -> None:
        """Raise ProbeMismatchError naming every field where the model differs from the probe's."""
        made_for = self.metadata.get("model", {}).get("fingerprint")
        if not made_for:
            raise ProbeMismatchError("this probe records no model fingerprint; refit it with sasa probe fit")
        diffs = fingerprint_differences(made_for, fingerprint, "probe")
        if diffs:
            name = self.metadata.get("model", {}).get("name", "?")
            raise ProbeMismatchError(f"probe was made for another model ({name}): " + "; ".join(diffs))


def probe_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def _versions() -> dict[str, str]:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}
