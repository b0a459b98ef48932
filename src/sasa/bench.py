"""Speed benchmark: SASA's costs against plain inference, measured side by side in one run.

Figures (medians over ``repeats`` rounds, each round timing every function once in turn, prefill-sized
ones as the median of 5 calls, so drift hits both sides alike; on a GPU each timing waits for the
device's queue):
  detect / prefill        risk score (pass 1 to f + pass 2) vs one plain prefill; target <= (L+f-s)/L + 0.05
  naive / prefill         the two-full-forward definition vs one plain prefill (what the engine avoids)
  guarded gen / vanilla   detect mode, safe prompt, 64 new tokens vs plain generate; target <= 1.10
  batched throughput      prompts/s of batch-8 vs one by one, for scoring and for guarded generation; target >= 3

``sasa bench --config NAME --random-weights`` measures the same figures, plus the peak memory of a
scoring prefill against a plain one (weights included; target <= 1.05), on random-weight models of
real LVLM shapes (:mod:`sasa.testing.real_configs`), each prompt with one image at the model's own
resolution; guarded generation's target there is 1.05.
"""

from __future__ import annotations

import gc
import logging
import os
import statistics
import threading
import time
from typing import Any, Callable

import torch

from sasa.store.atomic import atomic_write_json
from sasa.engine import SASAEngine
from sasa.guard.generation import Guard
from sasa.engine.layers import LayerSelection, default_layers
from sasa.models.adapters import Adapter, get_adapter
from sasa.models.compat import execution_device
from sasa.detector.probe import LinearProbe
from sasa.engine.reference import naive_projected_logits

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


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for the device's queued work: a GPU call returns before its kernels finish, so a timer
    that does not wait measures only the launches."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _median_time(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _never_flag(adapter: Adapter, engine: SASAEngine) -> LinearProbe:
    dim = engine.prefill(engine.encode(PROMPTS[:1])).features.shape[1]
    probe = LinearProbe(torch.zeros(dim, dtype=torch.float64), 0.0, threshold=float("inf"),
                        metadata={"model": {"fingerprint": adapter.fingerprint()}})
    return probe


def measure(adapter: Adapter, selection: LayerSelection, images: list | None, repeats: int,
            new_tokens: int = 64, batch: int = 8, calls: int = 5) -> dict[str, Any]:
    model = adapter.model
    sync = _synchronizer(execution_device(model.get_input_embeddings()))
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
            t[name].append(_median_time(fn, calls if name in short else 1, sync))
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
        "batch": batch,
        "new_tokens": new_tokens,
    }


def _print(name: str, r: dict[str, Any]) -> None:
    lay = r["layers"]
    print(f"\n== {name}  (L={lay['L']}, s={lay['s']}, f={lay['f']}, prompt {r['prompt_tokens']} tokens)")
    rows = [
        ("detect / vanilla prefill", r["detect_over_prefill"], f"<= {r['detect_target']:.2f}"),
        ("naive two-pass / vanilla prefill", r["naive_over_prefill"], "(reference)"),
        (f"guarded gen ({r.get('new_tokens', 64)} tok, safe) / vanilla gen", r["guarded_over_vanilla_generation"],
         f"<= {r['guarded_target']:.2f}"),
        (f"batch-{r.get('batch', 8)} scoring throughput / one-by-one", r["batched_scoring_speedup"], ">= 3"),
        (f"batch-{r.get('batch', 8)} guarded gen throughput / one-by-one", r["batched_generation_speedup"], ">= 3"),
    ]
    if "memory" in r:
        m = r["memory"]
        rows.append(("peak memory, detect / vanilla prefill", m["detect_over_vanilla"], "<= 1.05"))
    for label, value, target in rows:
        print(f"  {label:46s} {value:6.2f}x   target {target}")


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> tuple[int, int]:
    """(memory before, peak memory during ``fn``): CUDA's allocator counters on a GPU; on CPU the
    process's resident set, sampled every millisecond by a thread (Linux; large buffers are
    returned to the OS when freed, so the resident set follows the live tensors)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return before, torch.cuda.max_memory_allocated(device)
    before = rss_bytes()
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        stop.set()
        thread.join()
    return before, max(peak[0], rss_bytes())


def measure_memory(adapter: Adapter, engine: SASAEngine, inputs: dict, rounds: int = 3) -> dict[str, Any]:
    """Peak memory of a plain prefill and of SASA's scoring prefill on the same batch, weights
    included (what a deployment must provision), interleaved ``rounds`` times; the medians."""
    device = execution_device(adapter.model.get_input_embeddings())

    def prefill() -> None:
        with torch.inference_mode():
            adapter.model(**inputs, logits_to_keep=1)

    def detect() -> None:
        engine.prefill(inputs)

    prefill(), detect()  # first calls allocate caches and workspaces once
    plain, sasa = [], []
    for _ in range(rounds):
        plain.append(peak_bytes(prefill, device)[1])
        sasa.append(peak_bytes(detect, device)[1])
    p, d = statistics.median(plain), statistics.median(sasa)
    return {"device": str(device), "vanilla_peak_bytes": int(p), "detect_peak_bytes": int(d),
            "detect_over_vanilla": d / p, "target": 1.05}


def measure_config(name: str, size: str, dtype: str, device: str, repeats: int, new_tokens: int = 32,
                   batch: int = 4, calls: int = 3) -> dict[str, Any]:
    """The speed and memory figures on a random-weight model of a real configuration
    (:mod:`sasa.testing.real_configs`), prompts with one real-resolution image each."""
    from sasa.models.loading import resolve_device, resolve_dtype
    from sasa.testing.real_configs import build_random, parameter_count
    from sasa.testing.tiny_models import tiny_image

    dev = resolve_device(device)
    model, processor, real = build_random(name, size, dtype=resolve_dtype(dtype, dev), device=dev)
    adapter = get_adapter(model, processor)
    selection = default_layers(adapter.num_layers)
    images = [tiny_image(i, size=real.image_size) for i in range(batch)]
    result = measure(adapter, selection, images, repeats, new_tokens=new_tokens, batch=batch, calls=calls)
    engine = SASAEngine(adapter, selection)
    result["memory"] = measure_memory(adapter, engine, engine.encode(PROMPTS[:1], images[:1]))
    result["guarded_target"] = 1.05
    result["config"] = {"name": real.name, "hub_id": real.hub_id, "size": size, "dtype": str(model.dtype),
                        "device": str(dev), "parameters": parameter_count(model), "image_tokens": real.image_tokens,
                        "attn_implementation": model.config._attn_implementation}
    return result


def main_configs(names: list[str], size: str, dtype: str, device: str, repeats: int, out: str | None = None,
                 new_tokens: int = 32, batch: int = 4) -> int:
    """``sasa bench --config NAME --random-weights``: each named configuration, side by side."""
    torch.manual_seed(0)
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    for name in names:
        results[name] = r = measure_config(name, size, dtype, device, repeats, new_tokens=new_tokens, batch=batch)
        c = r["config"]
        _print(f"{c['name']} ({c['hub_id']} shape, random weights, {c['parameters'] / 1e6:.0f} M parameters, "
               f"{c['dtype']}, {c['device']}, {c['attn_implementation']})", r)
        if out:
            atomic_write_json(out, results)
    return 0


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
        atomic_write_json(out, results)
    return 0
