"""Speed benchmark: SASA's costs against plain inference, measured side by side in one run.

Figures (medians over ``repeats`` rounds, each round timing every function once in turn, prefill-sized
ones as the median of 5 calls, so drift hits both sides alike):
  detect / prefill        risk score (pass 1 to f + pass 2) vs one plain prefill; target <= (L+f-s)/L + 0.05
  naive / prefill         the two-full-forward definition vs one plain prefill (what the engine avoids)
  guarded gen / vanilla   detect mode, safe prompt, 64 new tokens vs plain generate; target <= 1.10
  batched throughput      prompts/s of batch-8 vs one by one, for scoring and for guarded generation; target >= 3
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from sasa.engine import SASAEngine
from sasa.guard import Guard
from sasa.layers import LayerSelection, default_layers
from sasa.models.adapters import Adapter, get_adapter
from sasa.probe import LinearProbe
from sasa.reference import naive_projected_logits

logger = logging.getLogger(__name__)

PROMPTS = [
    "Write a short paragraph about the history of bread making in Europe.",
    "Explain in simple words how vaccines train the immune system.",
    "What are three practical tips for keeping a small vegetable garden healthy?",
    "Summarise the plot of a detective story set in a lighthouse.",
    "How should I prepare for a job interview at a bank?",
    "Describe the water cycle to a ten year old.",
    "Give me a packing list for a weekend hiking trip in the mountains.",
    "Why do cats purr, and what does it usually mean?",
]


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _never_flag(adapter: Adapter, engine: SASAEngine) -> LinearProbe:
    dim = engine.prefill(engine.encode(PROMPTS[:1])).features.shape[1]
    probe = LinearProbe(torch.zeros(dim, dtype=torch.float64), 0.0, threshold=float("inf"),
                        metadata={"model": {"fingerprint": adapter.fingerprint()}})
    return probe


def measure(adapter: Adapter, selection: LayerSelection, images: list | None, repeats: int,
            new_tokens: int = 64, batch: int = 8) -> dict[str, Any]:
    model = adapter.model
    engine = SASAEngine(adapter, selection)
    L, (s, f) = adapter.num_layers, selection.resolve(adapter.num_layers)
    one = engine.encode(PROMPTS[:1], images[:1] if images else None)
    many = engine.encode(PROMPTS[:batch], images[:batch] if images else None)
    singles = [engine.encode([p], [images[i]] if images else None) for i, p in enumerate(PROMPTS[:batch])]
    guard = Guard(adapter, "detect", _never_flag(adapter, engine), engine=engine)

    def prefill() -> None:
        with torch.inference_mode():
            model(**one, logits_to_keep=1)

    def detect() -> None:
        engine.prefill(one)

    def naive() -> None:
        naive_projected_logits(adapter, one, s, f)

    gen_kw = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}

    def vanilla_gen() -> None:
        with torch.inference_mode():
            model.generate(**one, do_sample=False, **gen_kw)

    def guarded_gen() -> None:
        guard.generate_inputs(one, **gen_kw)

    short_kw = {"max_new_tokens": 16, "min_new_tokens": 16}

    def score_batched() -> None:
        engine.prefill(many)

    def score_single() -> None:
        for x in singles:
            engine.prefill(x)

    def gen_batched() -> None:
        guard.generate_inputs(many, **short_kw)

    def gen_single() -> None:
        for x in singles:
            guard.generate_inputs(x, **short_kw)

    for warm in (prefill, detect, vanilla_gen, guarded_gen):
        warm()
    t: dict[str, list[float]] = {k: [] for k in ("prefill", "detect", "naive", "vanilla_gen", "guarded_gen",
                                                 "score_batched", "score_single", "gen_batched", "gen_single")}
    fns = {"prefill": prefill, "detect": detect, "naive": naive, "vanilla_gen": vanilla_gen,
           "guarded_gen": guarded_gen, "score_batched": score_batched, "score_single": score_single,
           "gen_batched": gen_batched, "gen_single": gen_single}
    short = {"prefill", "detect", "naive", "score_batched", "score_single"}
    for _ in range(repeats):
        for name, fn in fns.items():
            t[name].append(_median_time(fn, 5 if name in short else 1))
    med = {k: statistics.median(v) for k, v in t.items()}
    return {
        "layers": {"L": L, "s": s, "f": f},
        "prompt_tokens": int(one["input_ids"].shape[1]),
        "seconds": med,
        "detect_over_prefill": med["detect"] / med["prefill"],
        "detect_target": (L + f - s) / L + 0.05,
        "naive_over_prefill": med["naive"] / med["prefill"],
        "guarded_over_vanilla_generation": med["guarded_gen"] / med["vanilla_gen"],
        "guarded_target": 1.10,
        "batched_scoring_speedup": med["score_single"] / med["score_batched"],
        "batched_generation_speedup": med["gen_single"] / med["gen_batched"],
        "batch_target": 3.0,
    }


def _print(name: str, r: dict[str, Any]) -> None:
    lay = r["layers"]
    print(f"\n== {name}  (L={lay['L']}, s={lay['s']}, f={lay['f']}, prompt {r['prompt_tokens']} tokens)")
    rows = [
        ("detect / vanilla prefill", r["detect_over_prefill"], f"<= {r['detect_target']:.2f}"),
        ("naive two-pass / vanilla prefill", r["naive_over_prefill"], "(reference)"),
        ("guarded gen (64 tok, safe) / vanilla gen", r["guarded_over_vanilla_generation"], "<= 1.10"),
        ("batch-8 scoring throughput / one-by-one", r["batched_scoring_speedup"], ">= 3"),
        ("batch-8 guarded gen throughput / one-by-one", r["batched_generation_speedup"], ">= 3"),
    ]
    for label, value, target in rows:
        print(f"  {label:46s} {value:6.2f}x   target {target}")


def main(quick: bool = False, repeats: int = 3, out: str | None = None) -> int:
    from sasa.models.loading import load_model
    from sasa.testing.tiny_models import build_tiny, tiny_image

    torch.manual_seed(0)
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "device": "cpu"}
    smol = load_model("smollm2-135m", device="cpu")
    adapter = smol.adapter
    results["smollm2-135m"] = measure(adapter, LayerSelection(12, 16), None, repeats,
                                      new_tokens=16 if quick else 64)
    _print("SmolLM2-135M-Instruct (real weights)", results["smollm2-135m"])
    model, processor = build_tiny("llava")
    tiny = get_adapter(model, processor)
    images = [tiny_image(i) for i in range(8)]
    results["tiny-llava"] = measure(tiny, default_layers(tiny.num_layers), images, repeats,
                                    new_tokens=16 if quick else 64)
    _print("tiny random LLaVA (6 blocks, with image)", results["tiny-llava"])
    if out:
        Path(out).write_text(json.dumps(results, indent=2))
    return 0
