"""One run, from samples to report: detectors (loaded or fitted) → every mode → judged records → report.

``sasa evaluate``, ``sasa demo`` and ``sasa zoo measure organism`` are this function on their own
data; what differs between them is which samples they test and what they add to ``run_info``.
Records are appended per batch and a rerun resumes (:class:`sasa.evaluation.runner.Evaluation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sasa.data.sample import Sample
from sasa.engine import SASAEngine
from sasa.evaluation.runner import DEFAULT_JUDGES, Evaluation
from sasa.guard.modes import detectors_needed, parse_modes
from sasa.report.summary import opening_prior


@dataclass
class RunResult:
    """What a run made: its records (the tested modes), summary, report paths and detectors."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]
    paths: dict[str, Any]
    detectors: dict[str, Any]
    fit_info: dict[str, Any] = field(default_factory=dict)
    evaluation: Evaluation | None = None


def run_pipeline(adapter: Any, test: Sequence[Sample], modes: Sequence[str], out: str | Path, *,
                 train: Sequence[Sample] = (), val: Sequence[Sample] = (), given: dict[str, Any] | None = None,
                 selection: Any = None, target_fpr: float = 0.05, hiddendetect: Any = None,
                 only: dict[str, Sequence[Sample]] | None = None, augment_engine: Any = None,
                 evaluation: Evaluation | None = None,
                 judges: Any = DEFAULT_JUDGES, batch_size: int = 8, max_new_tokens: int = 64,
                 evaluation_options: dict[str, Any] | None = None, title: str = "SASA evaluation",
                 n_boot: int = 1000, seed: int = 0, model_name: str | None = None,
                 run_info: dict[str, Any] | Callable[[list[dict[str, Any]], Evaluation, dict[str, Any]], dict] | None = None,
                 on_error: str = "raise", shard: Any = None, retry_errors: bool = False,
                 progress: bool = True) -> RunResult | None:
    """Assemble the detectors ``modes`` need (``given`` probe directories, the rest fitted on
    ``train`` / ``val`` at ``selection`` and ``target_fpr``), run every mode on ``test`` (a mode in
    ``only`` on that subset instead: costly modes on a share), judge, and write the report.

    ``augment_engine`` (an engine, or a function of the assembled detectors giving one) answers
    ``augment`` when no SASA detector is there to lend its engine.
    ``evaluation`` reuses a run directory the caller has already run other samples in (its
    detectors are set here); otherwise one is made in ``out`` with ``judges``, ``batch_size``,
    ``max_new_tokens`` and ``evaluation_options`` (e.g. ``adashield`` / ``ecso`` settings).
    ``run_info`` is stored in the summary: a dict, or a function of (records, evaluation,
    fit_info) for what depends on the answers.  Under a data-parallel launcher the other
    processes return None once their shard is done."""
    from sasa.distributed import current_shard
    from sasa.detector.fit import assemble_detectors

    modes = parse_modes(modes)
    detectors, fit_info = assemble_detectors(adapter, detectors_needed(modes), train, val, given,
                                             selection=selection, target_fpr=target_fpr, batch_size=batch_size,
                                             seed=seed, model_name=model_name, hiddendetect=hiddendetect,
                                             progress=progress)
    if callable(augment_engine) and not isinstance(augment_engine, SASAEngine):
        augment_engine = augment_engine(detectors)
    if evaluation is None:
        evaluation = Evaluation(adapter, out, detectors, augment_engine, judges=judges, batch_size=batch_size,
                                max_new_tokens=max_new_tokens, progress=progress, **(evaluation_options or {}))
    else:
        evaluation.detectors = detectors
    only = only or {}
    shard = shard or current_shard()
    groups: list[tuple[Sequence[Sample], list[str]]] = [(test, [m for m in modes if m not in only])]
    for mode in modes:
        if mode in only:
            same = next((g for g in groups[1:] if g[0] is only[mode]), None)
            if same:
                same[1].append(mode)
            else:
                groups.append((only[mode], [mode]))
    records: list[dict[str, Any]] = []
    for samples, group in groups:
        if group:
            records += evaluation.run(samples, group, on_error=on_error, shard=shard, retry_errors=retry_errors)
    if not shard.is_main:  # the main process merged every shard's records and reports them
        return None
    info = run_info(records, evaluation, fit_info) if callable(run_info) else run_info
    prior = opening_prior((s.meta.get("rendered_text") or s.prompt, s.label) for s in train) if train else None
    report = evaluation.report(records, modes, title=title, n_boot=n_boot, seed=seed, extra=info, form_prior=prior)
    summary = report.pop("summary")
    return RunResult(records, summary, report, detectors, fit_info, evaluation)
