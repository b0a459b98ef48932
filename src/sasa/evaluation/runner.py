"""The evaluation runner: every mode on the same samples, per-sample records, summary and report.

The modes are :data:`sasa.guard.modes.MODES`: each declares what it needs and answers a batch itself;
the evaluation runs them, judges their answers and keeps the records.

Every answered response is judged by each of ``judges``; the first is the primary judge that fills
``refused``, and every verdict is kept in ``verdicts`` so the report shows them side by side.  The
default primary is VLGuard's keyword list, the offline judge that agrees best with people
(88.8 % [87.4, 90.0] on XSTest v2's 2 250 human-labelled completions; docs/baselines-and-judges.md);
the SASA paper's list (78.8 %) follows so the paper's numbers stay comparable, then XSTest's match.

Detector modes answer passing prompts with exactly the tokens of ``vanilla``, so when ``vanilla``
ran in the same run its responses are reused (:class:`sasa.guard.modes.DetectorMode`).  When ``vanilla``
and detector modes run together, one guarded generation per batch answers them all
(:func:`sasa.guard.modes.fused_answers`: the same records at the cost of one pass; ``fuse=False`` runs
each mode on its own).
``records.jsonl`` is appended per batch; a rerun skips (mode, id) pairs already there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from sasa.store.atomic import atomic_write_json, atomic_write_text
from sasa.guard.defences import AdaShieldConfig, ECSOConfig
from sasa.data.sample import Sample
from sasa.detector.detectors import Detector
from sasa.distributed import Shard, current_shard
from sasa.engine import SASAEngine
from sasa.engine.samples import SampleError, batches, run_into
from sasa.judge import get_judge
from sasa.judge.registry import DEFAULT_JUDGES
from sasa.models.adapters import Adapter
from sasa.data.sample import unreadable
from sasa.guard.modes import EVAL_MODES, MODES, REFUSAL, Answer, RunContext, fusable, fused_answers, parse_modes
from sasa.store.records import Record, append_records, drop_errors, read_records
from sasa.report import summarize, write_report

logger = logging.getLogger(__name__)

PRIMARY_JUDGE_WHY = ("primary judge: VLGuard's refusal list, the offline judge with the best measured agreement "
                     "with human refusal labels (88.8 % on XSTest v2's 2 250 completions, against 78.8 % for the "
                     "SASA paper's list, shown beside it so the paper's numbers stay comparable)")


class Evaluation:
    """Holds the model, detectors, baseline settings and judges for one run directory."""

    def __init__(self, adapter: Adapter, out_dir: str | Path, detectors: dict[str, Detector] | None = None,
                 augment_engine: SASAEngine | None = None, judges: Any = DEFAULT_JUDGES, batch_size: int = 4,
                 max_new_tokens: int = 64, progress: bool = True, adashield: AdaShieldConfig = AdaShieldConfig(),
                 ecso: ECSOConfig = ECSOConfig(), fuse: bool = True) -> None:
        self.adapter = adapter
        self.out_dir = Path(out_dir)
        self.detectors = detectors or {}
        self.augment_engine = augment_engine
        if isinstance(judges, str) or not isinstance(judges, (list, tuple)):
            judges = [judges]
        self.judges = [get_judge(j) if isinstance(j, str) else j for j in judges]
        if not self.judges:
            raise ValueError("Evaluation needs at least one judge")
        names = [j.name for j in self.judges]
        if len(set(names)) != len(names):
            raise ValueError(f"judges must differ, got {names}")
        self.adashield = adashield
        self.ecso = ecso
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        self.fuse = fuse

    @property
    def judge(self) -> Any:
        """The primary judge: its verdict is a record's ``refused``."""
        return self.judges[0]

    @property
    def records_path(self) -> Path:
        return self.out_dir / "records.jsonl"

    def run(self, samples: Sequence[Sample], modes: Sequence[str], on_error: str = "raise",
            shard: Shard | None = None, retry_errors: bool = False) -> list[dict[str, Any]]:
        """Every mode on ``samples``, appended to ``records.jsonl`` per batch, resuming what is there.
        ``on_error="skip"`` records a sample that cannot be run (unreadable image, empty prompt) as
        an ``error`` record with the reason and goes on; the summary leaves those out.
        ``retry_errors`` drops the ``error`` records first, so a rerun runs those samples again.

        Under a launcher (``shard``, default :func:`sasa.distributed.current_shard`) each process
        runs its batches into ``records.shard-R-of-N.jsonl`` (appended per batch, so a killed
        process resumes its shard), then the main process merges them into ``records.jsonl``."""
        modes = parse_modes(modes)
        for m in modes:
            MODES[m].check(self.context)
        shard = shard or current_shard()
        self._check_run_config(modes, write=shard.is_main)
        if retry_errors and shard.is_main:  # the others wait at the barrier while the files change
            dropped = sum(drop_errors(p) for p in [self.records_path, *self._shard_files()])
            if dropped:
                logger.info("%s: retrying %d records that were errors", self.out_dir, dropped)
        shard.barrier()
        ordered = sorted(modes, key=lambda m: (m != "vanilla", EVAL_MODES.index(m)))
        existing = read_records(self.records_path, repair=shard.is_main)
        for path in self._shard_files():
            existing += read_records(path, repair=path == self._shard_file(shard))
        done = {(r["mode"], r["id"]) for r in existing}
        vanilla = {r["id"]: r for r in existing if r["mode"] == "vanilla" and r.get("decision") != "error"}
        mine = shard.items(list(samples), self.batch_size) if shard.parallel else list(samples)
        out = self._shard_file(shard) if shard.parallel else self.records_path
        fused = fusable(self.context, ordered) if self.fuse else []
        todo = [s for s in mine if not unreadable(s) and all((m, s.id) not in done for m in fused)] if fused else []
        if todo:
            bar = tqdm(total=len(todo), desc=f"evaluate[{'+'.join(fused)}]", unit="prompt",
                       disable=not self.progress or not shard.is_main)
            for chunk in batches(todo, self.batch_size):
                try:
                    answers = fused_answers(self.context, chunk, fused)
                except SampleError:  # the modes' own loop below runs this batch and records the bad sample
                    if on_error == "raise":
                        raise
                    logger.warning("a fused batch failed; its samples go through each mode on their own")
                    continue
                recs = [r.to_json() for mode in fused for r in self._records(mode, chunk, answers[mode])]
                append_records(out, recs)  # one write per batch: a kill leaves all of its modes or none
                done.update((r["mode"], r["id"]) for r in recs)
                vanilla.update({r["id"]: r for r in recs if r["mode"] == "vanilla"})
                bar.update(len(chunk))
            bar.close()
        for mode in ordered:
            todo = [s for s in mine if (mode, s.id) not in done]
            if not todo:
                continue
            for recs in run_into(out, todo, self.batch_size, lambda part: self._run_chunk(mode, part, vanilla), mode,
                                 on_error, self.progress and shard.is_main, desc=f"evaluate[{mode}]"):
                if mode == "vanilla":
                    vanilla.update({r["id"]: r for r in recs if r["decision"] != "error"})
        if shard.parallel:
            shard.barrier()
            if shard.is_main:
                self._merge_shards(samples, ordered, fused)
            shard.barrier()
        ids = {s.id for s in samples}
        return [r for r in read_records(self.records_path) if r["id"] in ids and r["mode"] in modes]

    def _shard_file(self, shard: Shard) -> Path:
        return self.out_dir / f"records.shard-{shard.rank}-of-{shard.world}.jsonl"

    def _shard_files(self) -> list[Path]:
        return sorted(self.out_dir.glob("records.shard-*-of-*.jsonl"))

    def _merge_shards(self, samples: Sequence[Sample], ordered: Sequence[str], fused: Sequence[str] = ()) -> None:
        """Fold every shard's records into ``records.jsonl`` (atomically), in a one-process run's
        order: what was there first, then the fused modes batch by batch (each batch mode by mode),
        then the other modes mode by mode, sample by sample; then drop the shards."""
        before = read_records(self.records_path)
        seen = {(r["mode"], r["id"]) for r in before}
        new = [r for path in self._shard_files() for r in read_records(path)]
        position = {(m, s.id): ((0, i // self.batch_size, fused.index(m), i) if m in fused else (1, k, 0, i))
                    for k, m in enumerate(ordered) for i, s in enumerate(samples)}
        fresh: dict[tuple[str, str], dict[str, Any]] = {}
        for r in new:
            key = (r["mode"], r["id"])
            if key not in seen:
                fresh.setdefault(key, r)
        order = sorted(fresh, key=lambda key: position.get(key, (2, 0, 0, 0)))
        lines = [json.dumps(r, ensure_ascii=False) for r in before + [fresh[k] for k in order]]
        atomic_write_text(self.records_path, "".join(line + "\n" for line in lines))
        for path in self._shard_files():
            path.unlink()

    def _check_run_config(self, modes: Sequence[str], write: bool = True) -> None:
        """A run directory belongs to one model (its weights), generation setting, judge and, per
        detector mode, one detector; resuming under others is refused, as mixing them would be."""
        config = {"model": self.adapter.fingerprint(), "weights": self.adapter.weights_digest(),
                  "max_new_tokens": self.max_new_tokens, "judges": [j.name for j in self.judges]}
        detectors = {k: v for m in modes for k, v in MODES[m].pins(self.context).items()}
        path = self.out_dir / "run.json"
        before: dict = {}
        if path.is_file():
            try:
                before = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc})") from None
            diffs = [k for k in config if before.get(k, config[k]) != config[k]]
            if "judge" in before:
                diffs.append(f"judge ({before['judge']!r}: a run from before judges were recorded as a list)")
            diffs += [f"detector {name!r}" for name, d in detectors.items()
                      if before.get("detectors", {}).get(name, d) != d]
            if diffs:
                raise ValueError(f"{self.out_dir} holds a run with other settings ({', '.join(diffs)} differ); "
                                 "use a new --out directory")
        merged = {**before, **config, "detectors": {**before.get("detectors", {}), **detectors}}
        if merged != before and write:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, merged)

    @property
    def context(self) -> RunContext:
        """What the modes answer with."""
        return RunContext(self.adapter, self.detectors, self.augment_engine, self.max_new_tokens, REFUSAL,
                          self.adashield, self.ecso)

    def _run_chunk(self, mode: str, chunk: Sequence[Sample], vanilla: dict[str, dict]) -> list[Record]:
        """One batch of one mode: the mode answers, every judge reads the answered ones."""
        return self._records(mode, chunk, MODES[mode].answer(self.context, chunk, vanilla))

    def _records(self, mode: str, chunk: Sequence[Sample], answers: Sequence[Answer]) -> list[Record]:
        """A mode's answers to a batch, judged, as records."""
        answered = [i for i, a in enumerate(answers) if a.decision == "answer"]
        prompts = [chunk[i].prompt for i in answered]
        texts = [answers[i].text for i in answered]
        by_judge = {j.name: dict(zip(answered, j.judge_many(prompts, texts))) for j in self.judges}
        primary = by_judge[self.judge.name]
        records = []
        for i, (s, a) in enumerate(zip(chunk, answers)):
            fields = dict(a.extra)
            unparsed = {name: v[i].reason for name, v in by_judge.items() if i in v and not v[i].parsed}
            if unparsed:  # recorded, and left out of every rate (a judged refusal must be read, not guessed)
                fields["judge_unparsed"] = unparsed
            read = {name: v[i] for name, v in by_judge.items() if i in v and v[i].parsed}
            if len({bool(v.refused) for v in read.values()}) > 1:  # the judges part: what each went by
                fields["judge_reasons"] = {name: v.reason for name, v in read.items()}
            refused = True if i not in primary else (bool(primary[i].refused) if primary[i].parsed else None)
            records.append(Record.from_sample(
                s, mode, a.decision, response=a.text, refused=refused, score=a.score, latency_s=a.latency_s,
                prompt=s.prompt, image_text=s.meta.get("rendered_text"), judge=self.judge.name,
                verdicts={name: bool(v[i].refused) for name, v in by_judge.items() if i in v and v[i].parsed},
                extra=fields))
        return records

    def report(self, records: list[dict[str, Any]], modes: Sequence[str], title: str, n_boot: int = 1000,
               seed: int = 0, extra: dict | None = None, form_prior: dict | None = None) -> dict[str, Any]:
        summary = summarize(records, modes=list(modes), n_boot=n_boot, seed=seed, threshold_rule=">",
                            form_prior=form_prior)
        if extra:
            summary["run"] = extra
        atomic_write_json(self.out_dir / "summary.json", summary)
        paths = write_report(records, self.out_dir, summary, title=title)
        return {"summary": summary, **{k: v for k, v in paths.items()}}
