"""Deterministic train/val/test splits by family (source and attack kind), for honest evaluation.

A sample's *family* is ``"<source>:<attack>"``, e.g. ``figstep:text``, ``figstep:figstep``,
``xstest:text``, ``harmbench:figstep-render``.  A split plan sends whole families to train or to
test, so a probe trained on one family is judged on families it never saw (other benchmarks,
image attacks); families named as *shared* are cut by a hash instead, so they appear on both sides
(typically the benign set, so every split has both classes).

Assignment never depends on input order or on randomness: a shared family's sample goes to a side
by ``sha256(seed, group)``, where ``group`` is ``meta["group"]`` (the loaders use it to tie the
variants of one question together: a FigStep question's text and image, an MM-SafetyBench
question's SD/TYPO/SD_TYPO images), falling back to the sample id.  Variants of one question
therefore never straddle train and test within a shared family.

Patterns are :func:`fnmatch.fnmatch` globs on the family (``"sasa-benign:*"``, ``"*:figstep*"``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np

from sasa.data.sample import LABELS, Sample

SPLITS = ("train", "val", "test")


def family(sample: Sample) -> str:
    """``"<source>:<attack>"``; missing parts read ``unknown`` / ``text``."""
    return f"{sample.source or 'unknown'}:{sample.attack or 'text'}"


def group_key(sample: Sample) -> str:
    g = sample.meta.get("group") if isinstance(sample.meta, dict) else None
    return g if isinstance(g, str) and g else sample.id


def unit_hash(key: str, seed: int = 0) -> float:
    """A deterministic number in [0, 1) for ``key`` (stable across runs, platforms, Python versions)."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class SplitPlan:
    """Which families train, which test, which are shared; fractions for the shared cut.

    * ``train``: families sent to train (a ``val_fraction`` of their groups goes to val instead);
    * ``test``: families sent to test; ``None`` means every family not matched otherwise;
    * ``shared``: families cut by hash into train / val / test with ``train_fraction`` and
      ``val_fraction`` (the rest is test); checked before ``train`` and ``test``;
    * families matched by nothing are left out (reported by :func:`split_report`).
    """

    train: tuple[str, ...] = ()
    test: tuple[str, ...] | None = None
    shared: tuple[str, ...] = ()
    train_fraction: float = 0.7
    val_fraction: float = 0.0
    seed: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if not (0.0 <= self.train_fraction <= 1.0 and 0.0 <= self.val_fraction <= 1.0):
            raise ValueError("train_fraction and val_fraction must lie in [0, 1]")
        if self.train_fraction + self.val_fraction > 1.0 + 1e-9:
            raise ValueError("train_fraction + val_fraction must not exceed 1")

    def side(self, sample: Sample) -> str | None:
        """``train``, ``val``, ``test``, or None when the plan does not use this sample."""
        fam = family(sample)
        if _matches(fam, self.shared):
            u = unit_hash(group_key(sample), self.seed)
            if u < self.train_fraction:
                return "train"
            return "val" if u < self.train_fraction + self.val_fraction else "test"
        if _matches(fam, self.train):
            if self.val_fraction and unit_hash(group_key(sample), self.seed) < self.val_fraction:
                return "val"
            return "train"
        if self.test is None or _matches(fam, self.test):
            return "test"
        return None


def _matches(fam: str, patterns: Iterable[str] | None) -> bool:
    return any(fnmatch.fnmatchcase(fam, p) for p in (patterns or ()))


PRESETS: dict[str, SplitPlan] = {
    "unseen-families": SplitPlan(
        train=("figstep:text",),
        shared=("sasa-benign:*",),
        test=None,
        train_fraction=0.55,
        val_fraction=0.15,
        description="train on FigStep questions (text) + 55% of the benign set, validation (threshold) "
                    "on 15% of each; test on every other family (XSTest, HarmBench, StrongREJECT, image "
                    "attacks) + the other 30% benign",
    ),
    "builtin": SplitPlan(
        train=("harmbench:text",),
        shared=("sasa-benign:*",),
        test=None,
        train_fraction=0.55,
        val_fraction=0.15,
        description="for the offline default dataset: train on HarmBench + 55% benign, validation "
                    "(threshold) on 15% of each; test on StrongREJECT (and anything else) + 30% benign",
    ),
    "text-to-image": SplitPlan(
        train=("*:text", "*:statement"),
        shared=(),
        test=None,
        description="train on every text-only family; test on every image family",
    ),
    "random": SplitPlan(
        shared=("*",),
        train_fraction=0.8,
        description="every family cut 80/20 by group hash (in-distribution baseline)",
    ),
}


def assign_splits(samples: Iterable[Sample], plan: SplitPlan | str = "unseen-families") -> list[Sample]:
    """Copies of the samples the plan uses, with ``split`` set; input order is kept."""
    if isinstance(plan, str):
        if plan not in PRESETS:
            raise ValueError(f"unknown split preset {plan!r}; known: {', '.join(PRESETS)}")
        plan = PRESETS[plan]
    out = []
    for s in samples:
        side = plan.side(s)
        if side is not None:
            out.append(replace(s, split=side, meta=dict(s.meta)))
    return out


@dataclass
class SplitReport:
    """Class balance per split and per family, and what the plan left out."""

    by_split: dict[str, Counter] = field(default_factory=dict)
    by_family: dict[tuple[str, str], Counter] = field(default_factory=dict)
    unused: Counter = field(default_factory=Counter)

    def format(self) -> str:
        header = f"{'split':<8}{'family':<34}" + "".join(f"{lab:>9}" for lab in LABELS) + f"{'total':>8}"
        lines = [header, "-" * len(header)]
        for split in [s for s in SPLITS if s in self.by_split] + sorted(set(self.by_split) - set(SPLITS)):
            for (sp, fam), c in sorted(self.by_family.items()):
                if sp == split:
                    lines.append(f"{split:<8}{fam:<34}" + "".join(f"{c[lab]:>9}" for lab in LABELS)
                                 + f"{sum(c.values()):>8}")
            c = self.by_split[split]
            total = sum(c.values())
            share = "  ".join(f"{lab} {100 * c[lab] / total:.0f}%" for lab in LABELS if c[lab]) if total else ""
            lines.append(f"{split:<8}{'= all':<34}" + "".join(f"{c[lab]:>9}" for lab in LABELS)
                         + f"{total:>8}   ({share})")
            lines.append("")
        if self.unused:
            lines.append("left out (no rule matched): " + ", ".join(f"{f} {n}" for f, n in sorted(self.unused.items())))
        return "\n".join(lines).rstrip()


def split_report(samples: Sequence[Sample], all_samples: Sequence[Sample] | None = None) -> SplitReport:
    """Class balance of split samples; pass the unsplit input as ``all_samples`` to count the unused."""
    rep = SplitReport()
    for s in samples:
        split = s.split or "none"
        rep.by_split.setdefault(split, Counter())[s.label] += 1
        rep.by_family.setdefault((split, family(s)), Counter())[s.label] += 1
    if all_samples is not None:
        used = {s.id for s in samples}
        rep.unused = Counter(family(s) for s in all_samples if s.id not in used)
    return rep


def class_balance(samples: Iterable[Sample]) -> dict[str, dict[str, int]]:
    """``{split: {label: count}}`` for all labels (zeros included)."""
    out: dict[str, dict[str, int]] = {}
    for s in samples:
        row = out.setdefault(s.split or "none", {lab: 0 for lab in LABELS})
        row[s.label] += 1
    return out


def subsample(samples: Sequence[Sample], *, per_label: int | None = None, limit: int | None = None,
              seed: int = 0, whole_groups: bool = False) -> list[Sample]:
    """The one deterministic sub-sampler: ``per_label`` samples of each label (class-balanced), or
    ``limit`` samples drawn regardless of label; all when both are None.  Input order is kept.

    ``whole_groups`` (with ``per_label``): never split a ``meta['group']`` (an image sample and its
    text stay together, as the layer analysis pairs them): per label, including ``unknown``, whole
    groups are taken in a seeded order until ``per_label`` samples are reached or passed."""
    if per_label is not None and limit is not None:
        raise ValueError("subsample takes per_label or limit, not both")
    if whole_groups:
        if per_label is None:
            raise ValueError("subsample: whole_groups needs per_label")
        return _whole_groups(samples, per_label, seed)
    rng = random.Random(seed)
    if per_label is not None:
        keep: set[str] = set()
        for label in ("harmful", "benign"):
            pool = [s.id for s in samples if s.label == label]
            keep.update(rng.sample(pool, min(per_label, len(pool))))
        return [s for s in samples if s.id in keep]
    if limit is None or len(samples) <= limit:
        return list(samples)
    chosen = set(rng.sample(range(len(samples)), limit))
    return [s for i, s in enumerate(samples) if i in chosen]


def _whole_groups(samples: Sequence[Sample], per_label: int, seed: int) -> list[Sample]:
    keep: set[str] = set()
    rng = np.random.default_rng(seed)
    for label in sorted({s.label for s in samples}):
        groups: dict[str, list[Sample]] = {}
        for s in samples:
            if s.label == label:
                groups.setdefault(group_key(s), []).append(s)
        names = sorted(groups)
        taken = 0
        for i in rng.permutation(len(names)):
            if taken >= per_label:
                break
            members = groups[names[i]]
            keep.update(m.id for m in members)
            taken += len(members)
    return [s for s in samples if s.id in keep]
