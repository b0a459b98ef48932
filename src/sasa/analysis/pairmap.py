"""The (s, f) map: SASA's probe validation AUROC for every pair s < f on a grid over all depths.

The paper picks s (safety perception) and f (semantic understanding) from per-layer curves; the map
shows what that choice is worth against every other pair.  For each pair on the grid the engine's
SASA features (next-token logits of the augmented pass, the probe's default) are taken for the
training and validation samples -- one plain forward per batch, one pass 2 per pair
(:meth:`sasa.engine.SASAEngine.prefill_pairs`) -- a probe is fitted on the training rows exactly as
``sasa probe fit`` fits it, and scored (AUROC) on the validation rows.  The no-projection probe
(the plain forward's logits, the same recipe) is the reference.  Two picks are reported: the map's
maximum, and the maximum of the map smoothed over each cell's grid neighbours (a rule that moves
less with the sample draw).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from sasa.data.sample import Sample
from sasa.engine import SASAEngine
from sasa.engine.samples import batches, encode_samples
from sasa.engine.layers import LayerSelection
from sasa.metrics import auroc
from sasa.models.adapters import Adapter
from sasa.detector.probe import LinearProbe
from sasa.engine.projection import ProjectionConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairMapConfig:
    """step: the grid's stride over block depths (None: about 8 depths); the last block is always in."""

    step: int | None = None
    batch_size: int = 8
    l2: float = 1e-2
    progress: bool = True


def grid_depths(num_layers: int, step: int | None = None) -> list[int]:
    """0, step, 2 step, ... and the last block: a grid that covers every depth."""
    if num_layers < 2:
        raise ValueError("a layer pair needs a model with at least 2 blocks")
    step = step or max(1, round((num_layers - 1) / 8))
    if step < 1:
        raise ValueError(f"the grid step must be >= 1, got {step}")
    depths = list(range(0, num_layers, step))
    if depths[-1] != num_layers - 1:
        depths.append(num_layers - 1)
    return depths


def _probe_auroc(x: np.ndarray, y: np.ndarray, train: np.ndarray, l2: float) -> float:
    probe = LinearProbe.fit(x[train], y[train], standardize=True, class_weight="balanced", l2=l2)
    return float(auroc(y[~train], probe.decision_function(x[~train])))


def smoothed_pick(depths: Sequence[int], grid: Sequence[Sequence[float | None]]) -> tuple[int, int, float]:
    """(s, f, smoothed AUROC) of the cell whose mean with its valid grid neighbours (3 x 3) is highest."""
    n = len(depths)
    best = None
    for i in range(n):
        for j in range(n):
            if grid[i][j] is None:
                continue
            around = [grid[a][b] for a in range(max(0, i - 1), min(n, i + 2)) for b in range(max(0, j - 1), min(n, j + 2))
                      if grid[a][b] is not None]
            value = float(np.mean(around))
            if best is None or value > best[2] + 1e-12:
                best = (depths[i], depths[j], value)
    return best


def pair_map(adapter: Adapter, train: Sequence[Sample], val: Sequence[Sample], cfg: PairMapConfig = PairMapConfig(),
             projection: ProjectionConfig | None = None) -> dict[str, Any]:
    """The map on ``train`` (probe fits) and ``val`` (AUROC); see the module docstring."""
    fit = [s for s in train if s.label in ("harmful", "benign")]
    held = [s for s in val if s.label in ("harmful", "benign")]
    samples = fit + held
    y = np.array([s.label == "harmful" for s in samples], dtype=float)
    is_train = np.array([True] * len(fit) + [False] * len(held))
    for name, part in (("training", y[is_train]), ("validation", y[~is_train])):
        if part.size == 0 or part.all() or not part.any():
            raise ValueError(f"the (s, f) map needs harmful and benign {name} samples")
    depths = grid_depths(adapter.num_layers, cfg.step)
    pairs = [(s, f) for s in depths for f in depths if s < f]
    engine = SASAEngine(adapter, LayerSelection(*pairs[0]), projection)
    feats: dict[tuple[int, int], list[np.ndarray]] = {p: [] for p in pairs}
    plain: list[np.ndarray] = []
    bar = tqdm(total=len(samples), desc=f"(s, f) map, {len(pairs)} pairs", unit="prompt", disable=not cfg.progress)
    for chunk in batches(samples, cfg.batch_size):
        got, logits = engine.prefill_pairs(encode_samples(engine, chunk), pairs)
        for p in pairs:
            feats[p].append(got[p].numpy())
        plain.append(logits.numpy())
        bar.update(len(chunk))
    bar.close()
    index = {d: k for k, d in enumerate(depths)}
    grid: list[list[float | None]] = [[None] * len(depths) for _ in depths]
    for (s, f) in pairs:
        grid[index[s]][index[f]] = _probe_auroc(np.concatenate(feats[(s, f)]), y, is_train, cfg.l2)
    s_best, f_best = max(pairs, key=lambda p: grid[index[p[0]]][index[p[1]]])
    s_smooth, f_smooth, smooth_value = smoothed_pick(depths, grid)
    return {
        "depths": depths, "grid": grid, "indexing": "0-based",
        "noproj_auroc": _probe_auroc(np.concatenate(plain), y, is_train, cfg.l2),
        "best": {"s": s_best, "f": f_best, "auroc": grid[index[s_best]][index[f_best]]},
        "smoothed_best": {"s": s_smooth, "f": f_smooth, "auroc": grid[index[s_smooth]][index[f_smooth]],
                          "smoothed_auroc": smooth_value},
        "n_train": int(is_train.sum()), "n_val": int((~is_train).sum()), "config": asdict(cfg),
    }


def pair_map_svg(result: dict[str, Any], marks: dict[str, tuple[int, int]] | None = None) -> str:
    """The map as an SVG heat map (rows s, columns f), with the picks and any ``marks`` ({label: (s, f)})."""
    from sasa.report.svg import heat_map

    depths = result["depths"]
    index = {d: k for k, d in enumerate(depths)}
    shown = {"map's maximum": (result["best"]["s"], result["best"]["f"]),
             "smoothed maximum": (result["smoothed_best"]["s"], result["smoothed_best"]["f"]), **(marks or {})}
    cells = {label: (index[s], index[f]) for label, (s, f) in shown.items() if s in index and f in index}
    values = [v for row in result["grid"] for v in row if v is not None]
    lo = min(values + [result["noproj_auroc"]]) if values else 0.5
    return heat_map(result["grid"], depths, depths, title=f"SASA probe validation AUROC per (s, f); no projection: "
                    f"{result['noproj_auroc']:.3f}", xlabel="f (block, 0-based)", ylabel="s (block, 0-based)",
                    marks=cells, lo=min(lo, 0.95), hi=1.0)


def grid_value(pm: dict[str, Any], s: int, f: int) -> float | None:
    """The map's AUROC at (s, f), or None when the pair is off its grid."""
    depths = pm["depths"]
    if s in depths and f in depths:
        return pm["grid"][depths.index(s)][depths.index(f)]
    return None
