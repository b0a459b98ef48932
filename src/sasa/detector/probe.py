"""The SASA linear probe: logistic regression on augmented-pass features, saved without pickle.

A fitted probe is a *detector directory*: ``probe.safetensors`` (weight, bias, standardisation
mean/std), ``config.json`` (:class:`DetectorConfig`: the engine it reads -- layers, projection,
features --, its threshold, the model fingerprint, data, validation metrics, library versions) and
``README.md``, a model card.  Loading refuses a probe made for another model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from sasa.store.artefact import (ArtefactError, ArtefactMismatchError, ModelArtefact, library_versions, read_json_object,
                           utc_now)
from sasa.store.atomic import atomic_dir
from sasa.engine import FeatureSpec
from sasa.engine.layers import LayerSelection
from sasa.engine.projection import ProjectionConfig

logger = logging.getLogger(__name__)

DETECTOR_FORMAT = "sasa-detector"
DETECTOR_VERSION = 2
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "probe.safetensors", "README.md"


class ProbeFileError(ArtefactError):
    """A probe file that is missing, corrupt or inconsistent; the message names the file."""


class ProbeMismatchError(ArtefactMismatchError):
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
class LinearProbe(ModelArtefact):
    """w·standardise(x) + b; risk = sigmoid of that; flagged when the logit exceeds ``threshold``."""

    KIND: ClassVar[str] = "probe"
    MISMATCH_ERROR: ClassVar[type[Exception]] = ProbeMismatchError
    HINT: ClassVar[str] = "fit one for this model with `sasa probe fit`"

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
    @property
    def config(self) -> DetectorConfig:
        """The typed view of what this probe was made for (what ``config.json`` holds)."""
        return DetectorConfig.from_metadata(self.metadata, self.dim, self.threshold)

    def _write(self, out: Path) -> Path:
        """The detector directory (``probe.safetensors``, ``config.json``, ``README.md``), atomically.

        An existing directory is replaced only if it is a detector; anything else is refused."""
        from safetensors.torch import save_file

        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_detector_dir(out))):
            raise ProbeFileError(f"{out}: exists and is not a sasa detector directory; choose another --out")
        tensors = {"weight": self.weight.to(torch.float32).contiguous(),
                   "bias": torch.tensor([self.bias], dtype=torch.float32)}
        if self.mean is not None and self.std is not None:
            tensors["mean"] = self.mean.to(torch.float32).contiguous()
            tensors["std"] = self.std.to(torch.float32).contiguous()
        now = library_versions()  # the fitting's torch/transformers stay; the sasa that wrote it is stamped
        versions = {**(self.metadata.get("versions") or now), "sasa": now["sasa"]}
        config = replace(self.config, versions=versions, saved_at=utc_now())
        with atomic_dir(out) as tmp:
            save_file(tensors, str(tmp / WEIGHTS_NAME),
                      metadata={"format": "sasa-probe", "format_version": str(DETECTOR_VERSION)})
            (tmp / CONFIG_NAME).write_text(json.dumps(config.to_json(), indent=2, sort_keys=True) + "\n")
            (tmp / CARD_NAME).write_text(model_card(config))
        self.metadata = config.to_metadata()
        return out

    @classmethod
    def _read(cls, p: Path) -> LinearProbe:
        if not p.is_dir():
            raise ProbeFileError(f"detector not found: {p} is not a detector directory (write one with "
                                 "`sasa probe fit` or LinearProbe.save_pretrained)")
        return cls._read_dir(p)

    @classmethod
    def _read_dir(cls, directory: Path) -> LinearProbe:
        config_path, tensors_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for f in (config_path, tensors_path):
            if not f.is_file():
                raise ProbeFileError(f"detector file missing: {f}")
        raw = _read_json(config_path)
        if raw.get("format") != DETECTOR_FORMAT or raw.get("format_version") != DETECTOR_VERSION:
            raise ProbeFileError(f"{config_path}: not a sasa detector config (format {DETECTOR_FORMAT!r}, "
                                 f"format_version {DETECTOR_VERSION} expected)")
        config = DetectorConfig.from_json(raw, config_path)
        tensors = _read_tensors(tensors_path)
        return cls._build(tensors, tensors_path, config.dim, config.threshold, config.to_metadata())

    @classmethod
    def _build(cls, tensors: dict, tensors_path: Path, dim: Any, threshold: float, meta: dict) -> LinearProbe:
        if "weight" not in tensors or "bias" not in tensors:
            raise ProbeFileError(f"{tensors_path}: weight or bias missing")
        weight = tensors["weight"].to(torch.float64)
        if weight.ndim != 1 or weight.shape[0] != dim:
            raise ProbeFileError(f"{tensors_path}: weight has shape {tuple(weight.shape)}, the config says dim {dim}")
        mean, std = tensors.get("mean"), tensors.get("std")
        return cls(weight, float(tensors["bias"][0]), None if mean is None else mean.to(torch.float64),
                   None if std is None else std.to(torch.float64), threshold, meta)

    def made_for(self) -> tuple[str | None, dict | None]:
        model = self.metadata.get("model", {})
        return model.get("name"), model.get("fingerprint")


def engine_from_probe(adapter: Any, probe: LinearProbe) -> Any:
    """An engine configured exactly as the probe was trained (layers, projection, features)."""
    cfg = probe.config
    if cfg.layers is None:
        raise ValueError("the probe records no engine layers; refit it with sasa probe fit")
    from sasa.engine import SASAEngine

    return SASAEngine(adapter, cfg.layers, cfg.projection or ProjectionConfig(), cfg.features or FeatureSpec())


@dataclass(frozen=True)
class DetectorConfig:
    """What a probe reads and was made for: ``config.json`` of a detector directory.

    ``layers``/``projection``/``features`` configure the engine the probe must run on; the
    threshold is a risk logit (flag when the score is > it), set at ``target_fpr`` on
    ``n_calibration`` benign validation prompts."""

    dim: int
    threshold: float
    layers: LayerSelection | None = None
    projection: ProjectionConfig | None = None
    features: FeatureSpec | None = None
    model_name: str | None = None
    model_fingerprint: dict | None = None
    target_fpr: float | None = None
    n_calibration: int | None = None
    training: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    saved_at: str | None = None
    extra: dict = field(default_factory=dict)  # any other metadata the fitting code was given

    @classmethod
    def from_metadata(cls, meta: dict, dim: int, threshold: float) -> DetectorConfig:
        engine = meta.get("engine") or {}
        model = meta.get("model") or {}
        cal = meta.get("threshold") if isinstance(meta.get("threshold"), dict) else {}
        return cls(
            dim=dim, threshold=float(threshold),
            layers=LayerSelection(**engine["layers"]) if engine.get("layers") else None,
            projection=ProjectionConfig(**engine["projection"]) if engine.get("projection") else None,
            features=FeatureSpec(**engine["features"]) if engine.get("features") else None,
            model_name=model.get("name"), model_fingerprint=model.get("fingerprint"),
            target_fpr=cal.get("target_fpr"), n_calibration=cal.get("n_benign"),
            training=dict(meta.get("training") or {}), data=dict(meta.get("data") or {}),
            validation=dict(meta.get("validation") or {}), versions=dict(meta.get("versions") or {}),
            saved_at=meta.get("saved_at"), extra={k: v for k, v in meta.items() if k not in _METADATA_KEYS})

    def to_metadata(self) -> dict:
        """The probe's free-form ``metadata`` layout (what the fitting code writes)."""
        meta: dict[str, Any] = {"model": {"name": self.model_name, "fingerprint": self.model_fingerprint},
                                "training": self.training, "data": self.data, "validation": self.validation,
                                "versions": self.versions}
        if self.layers is not None:
            meta["engine"] = {"layers": self.layers.to_dict(),
                              "projection": (self.projection or ProjectionConfig()).to_dict(),
                              "features": (self.features or FeatureSpec()).to_dict()}
        if self.target_fpr is not None:
            meta["threshold"] = {"value": self.threshold, "target_fpr": self.target_fpr,
                                 "n_benign": self.n_calibration}
        if self.saved_at:
            meta["saved_at"] = self.saved_at
        return {**self.extra, **meta}

    def to_json(self) -> dict:
        out = {"format": DETECTOR_FORMAT, "format_version": DETECTOR_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
        return out

    @classmethod
    def from_json(cls, raw: dict, path: Path) -> DetectorConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known - {"format", "format_version"})
        if unknown:
            raise ProbeFileError(f"{path}: unknown fields {unknown} (made by a newer sasa?)")
        kwargs = {k: v for k, v in raw.items() if k in known}
        try:
            for name, kind in (("layers", LayerSelection), ("projection", ProjectionConfig), ("features", FeatureSpec)):
                if kwargs.get(name) is not None:
                    kwargs[name] = kind(**kwargs[name])
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ProbeFileError(f"{path}: invalid detector config ({exc})") from None


_METADATA_KEYS = {"model", "engine", "threshold", "training", "data", "validation", "versions", "saved_at",
                  "format_version", "dim", "threshold_value"}  # the last three: the old layout's bookkeeping


def model_card(config: DetectorConfig) -> str:
    """``README.md`` of a detector directory: what it reads, what it was fitted on, how it validated."""
    fp = config.model_fingerprint or {}
    layers = config.layers.to_dict() if config.layers else None
    val = config.validation
    lines = [
        "# SASA detector", "",
        f"A linear probe on {'the SASA-augmented' if config.features is None or config.features.projected else 'the plain'}"
        f" pass's {config.features.kind if config.features else 'logits'} at the last prompt position "
        "(Self-Aware Safety Augmentation, arXiv 2507.21637); a prompt is flagged when its risk logit "
        "exceeds the threshold.", "",
        "## Model", "",
        f"- name: `{config.model_name}`",
        f"- fingerprint: {', '.join(f'{k}={v}' for k, v in sorted(fp.items())) or 'none recorded'}", "",
        "## Engine", "",
        f"- layers: s={layers['safety']}, f={layers['fused']} ({layers['indexing']})" if layers else "- layers: none recorded",
        f"- projection: {config.projection.to_dict() if config.projection else 'paper default'}",
        f"- features: {config.features.to_dict() if config.features else 'paper default'}", "",
        "## Threshold", "",
        f"- risk logit > {config.threshold:.6g}" + (f", set at {config.target_fpr:.1%} FPR on {config.n_calibration} "
                                                    "benign validation prompts" if config.target_fpr is not None else ""),
        "", "## Data it was fitted on", "",
        f"- training prompts: {config.data.get('n_train', '?')}, validation prompts: {config.data.get('n_val', '?')}, "
        f"split seed {config.data.get('seed', '?')}",
        f"- sources: {', '.join(config.data.get('sources', [])) or 'not recorded'}",
        f"- fit: {', '.join(f'{k}={v}' for k, v in sorted(config.training.items())) or 'not recorded'}", "",
        "## Validation", "",
    ]
    lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in sorted(val.items())] or ["- not recorded"]
    lines += ["", "## Use", "", "```python", "from sasa import Guard", "",
              'guard = Guard.from_pretrained("MODEL", "THIS_DIRECTORY")',
              'print(guard.generate(["How do I bake bread?"])[0].text)', "```", "",
              f"Versions: {', '.join(f'{k} {v}' for k, v in sorted(config.versions.items()))}", ""]
    return "\n".join(lines)


def _is_detector_dir(directory: Path) -> bool:
    try:
        return json.loads((directory / CONFIG_NAME).read_text()).get("format") == DETECTOR_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _read_json(path: Path) -> dict:
    return read_json_object(path, ProbeFileError)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ProbeFileError(f"{path}: cannot read safetensors ({exc})") from None
    if header.get("format") != "sasa-probe":
        raise ProbeFileError(f"{path}: not a sasa probe file")
    return tensors
