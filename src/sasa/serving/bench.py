"""Serving benchmark: latency and throughput with and without dynamic batching, side by side in one run.

``python -m sasa.serving.bench`` loads the embedded default model (``sasa-organism``), fits a SASA
detector on a few of the offline dataset's training prompts (text, so it runs in minutes), and
starts the guarded server twice on 127.0.0.1, once with ``--max-batch-size 1`` and once batching.
Each time ``clients`` threads send ``per_client`` chat requests each (harmful and benign test
prompts mixed, greedy, ``max_tokens`` new tokens) through the ``openai`` client; it prints p50/p95
latency, requests/s and the ratio of the two throughputs (the issue's target: >= 2 at 16 clients).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sasa.atomic import atomic_write_json
from sasa.data.registry import builtin_dataset
from sasa.data.splits import assign_splits, subsample
from sasa.guard import Guard
from sasa.layers import default_layers
from sasa.serving.app import BackgroundServer, GuardedServer, ServeConfig


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_clients(url: str, model: str, prompts: list[str], clients: int, max_tokens: int) -> dict[str, Any]:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)

    def one(prompt: str) -> tuple[float, str, str]:
        start = time.perf_counter()
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                           max_tokens=max_tokens)
        return time.perf_counter() - start, r.choices[0].message.content, r.model_extra["sasa"]["decision"]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, prompts))
    wall = time.perf_counter() - start
    latency = [r[0] for r in results]
    return {"requests": len(prompts), "wall_s": round(wall, 2), "requests_per_s": round(len(prompts) / wall, 3),
            "p50_s": round(_percentile(latency, 0.5), 3), "p95_s": round(_percentile(latency, 0.95), 3),
            "refused": sum(r[2] == "refuse" for r in results), "answers": [r[1] for r in results]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sasa.serving.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sasa-organism")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--per-client", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--fit-per-label", type=int, default=24, help="training prompts per label for the detector")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)

    import torch

    from sasa.engine import SASAEngine
    from sasa.models.loading import load_model
    from sasa.training import fit_probe

    torch.manual_seed(0)
    loaded = load_model(args.model, device="auto")
    adapter = loaded.adapter
    data = assign_splits(builtin_dataset(), "builtin")
    train = subsample([s for s in data if s.split == "train"], per_label=args.fit_per_label, seed=0)
    test = subsample([s for s in data if s.split == "test"], per_label=args.clients * args.per_client, seed=0)
    probe, _ = fit_probe(SASAEngine(adapter, default_layers(adapter.num_layers)), train, model_name=args.model,
                         progress=False)
    guard = Guard(adapter, "detect", probe)
    n = args.clients * args.per_client
    prompts = [s.prompt for s in test][:n]
    prompts = (prompts * (n // max(len(prompts), 1) + 1))[:n]
    figures: dict[str, Any] = {"model": args.model, "clients": args.clients, "requests": n,
                               "max_tokens": args.max_tokens, "torch_threads": torch.get_num_threads()}
    for name, batch in (("one at a time", 1), (f"batched (max {args.max_batch_size})", args.max_batch_size)):
        config = ServeConfig(model_name=args.model, max_batch_size=batch, max_wait_ms=10, max_queue=4 * n)
        with BackgroundServer(GuardedServer(guard, config).app()) as url:
            run_clients(url, args.model, prompts[:args.clients], args.clients, 2)  # warm-up
            figures[name] = run_clients(url, args.model, prompts, args.clients, args.max_tokens)
        f = figures[name]
        print(f"{name:>22}: {f['requests_per_s']:.2f} req/s, p50 {f['p50_s']:.2f} s, p95 {f['p95_s']:.2f} s, "
              f"{f['refused']}/{f['requests']} refused, {f['wall_s']:.1f} s wall")
    one, many = figures["one at a time"], figures[f"batched (max {args.max_batch_size})"]
    figures["throughput_ratio"] = round(many["requests_per_s"] / one["requests_per_s"], 2)
    same = sum(a == b for a, b in zip(one["answers"], many["answers"]))
    figures["same_answers"] = f"{same}/{n}"
    print(f"batched / one at a time throughput: {figures['throughput_ratio']:.2f}x (target >= 2); "
          f"answers identical in both runs: {same}/{n}")
    for f in (one, many):
        f.pop("answers")
    if args.out:
        atomic_write_json(args.out, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
