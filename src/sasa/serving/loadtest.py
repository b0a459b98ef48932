"""Serving benchmark: latency and throughput with and without dynamic batching, side by side in one run.

``python -m sasa.serving.loadtest`` loads the embedded default model (``sasa-organism``), fits a SASA
detector on a few of the offline dataset's training prompts (text, so it runs in minutes), and
starts the guarded server twice on 127.0.0.1, once with ``--max-batch-size 1`` and once batching.
Each time ``clients`` threads send ``per_client`` chat requests each (harmful and benign test
prompts mixed, greedy, ``max_tokens`` new tokens) through the ``openai`` client; it prints p50/p95
latency, requests/s and the ratio of the two throughputs (the issue's target: >= 2 at 16 clients).

``--hostile`` then runs the batched server twice more with the same valid load, once alone and once
beside hostile clients (prompts near the body limit, streams with broken options and streams left
after their first chunk, corrupt images, JSON nested past the limit), and prints the valid
requests' p95 latency against the clean run's (target: within 2x), whether every valid answer is
the clean run's (0 lost or mixed), and the process's resident memory before and after.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sasa.store.atomic import atomic_write_json
from sasa.bench import rss_bytes
from sasa.data.registry import builtin_dataset
from sasa.data.splits import assign_splits, subsample
from sasa.guard.generation import Guard
from sasa.engine.layers import default_layers
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


def hostile_clients(url: str, model: str, clients: int, body_limit: int, stop: threading.Event) -> dict[str, int]:
    """``clients`` threads sending hostile requests until ``stop``; counts the answers by status."""
    import httpx

    long_body = json.dumps({"model": model, "messages": [{"role": "user", "content": "word " * (
        (body_limit - 200) // 5)}]}).encode()
    corrupt = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nbroken").decode()
    kinds = {
        "long prompt": lambda c: c.post(url + "/v1/chat/completions", content=long_body,
                                        headers={"content-type": "application/json"}),
        "bad stream_options": lambda c: c.post(url + "/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": "hello"}], "stream": True,
            "stream_options": "yes", "max_tokens": 64}),
        "corrupt image": lambda c: c.post(url + "/v1/chat/completions", json={"model": model, "messages": [{
            "role": "user", "content": [{"type": "image_url", "image_url": {"url": corrupt}},
                                        {"type": "text", "text": "look"}]}]}),
        "deep JSON": lambda c: c.post(url + "/v1/chat/completions", content=b"[" * 50_000 + b"]" * 50_000,
                                      headers={"content-type": "application/json"}),
    }

    def left_stream(c: Any) -> Any:
        with c.stream("POST", url + "/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": "tell me a long story"}], "stream": True,
                "max_tokens": 64}) as r:
            for _ in r.iter_lines():
                break  # the client leaves after the first chunk
            return r

    kinds["stream left early"] = left_stream
    counts: dict[str, int] = {}
    lock = threading.Lock()
    names = list(kinds)

    def loop(k: int) -> None:
        with httpx.Client(timeout=120) as c:
            while not stop.is_set():
                name = names[k % len(names)]
                try:
                    status = str(kinds[name](c).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with lock:
                    counts[f"{name}: {status}"] = counts.get(f"{name}: {status}", 0) + 1
                k += clients

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(timeout=180)
    return counts


def hostile_run(guard: Guard, model: str, prompts: list[str], clients: int, hostile: int, max_tokens: int,
                max_batch_size: int) -> dict[str, Any]:
    """The valid load alone, then beside ``hostile`` hostile clients, on one server."""
    config = ServeConfig(model_name=model, max_batch_size=max_batch_size, max_wait_ms=10, max_queue=4 * len(prompts))
    with BackgroundServer(GuardedServer(guard, config).app()) as url:
        run_clients(url, model, prompts[:clients], clients, 2)  # warm-up
        clean = run_clients(url, model, prompts, clients, max_tokens)
        gc.collect()
        before = rss_bytes()
        stop = threading.Event()
        counts: dict[str, int] = {}
        attacker = threading.Thread(target=lambda: counts.update(
            hostile_clients(url, model, hostile, config.limits.max_body_bytes, stop)), daemon=True)
        attacker.start()
        time.sleep(1.0)
        loaded = run_clients(url, model, prompts, clients, max_tokens)
        stop.set()
        attacker.join(timeout=300)
        time.sleep(1.0)
        gc.collect()
        after = rss_bytes()
    same = sum(a == b for a, b in zip(clean["answers"], loaded["answers"]))
    for f in (clean, loaded):
        f.pop("answers")
    return {"clean": clean, "hostile": loaded, "hostile_clients": hostile, "hostile_answers": counts,
            "p95_ratio": round(loaded["p95_s"] / clean["p95_s"], 2), "same_answers": f"{same}/{len(prompts)}",
            "rss_before_mb": round(before / 2 ** 20), "rss_after_mb": round(after / 2 ** 20),
            "rss_growth": round(after / before - 1.0, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sasa.serving.loadtest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sasa-organism")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--per-client", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--fit-per-label", type=int, default=24, help="training prompts per label for the detector")
    ap.add_argument("--hostile", type=int, default=0, metavar="N",
                    help="also run the batched load beside N hostile clients (0: skip)")
    ap.add_argument("--hostile-only", action="store_true", help="with --hostile: skip the batching comparison")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)

    import torch

    from sasa.engine import SASAEngine
    from sasa.models.loading import load_model
    from sasa.detector.fit import fit_probe

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
    if not (args.hostile and args.hostile_only):
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
    if args.hostile:
        h = figures["hostile mix"] = hostile_run(guard, args.model, prompts, args.clients, args.hostile,
                                                 args.max_tokens, args.max_batch_size)
        print(f"beside {args.hostile} hostile clients: valid p95 {h['hostile']['p95_s']:.2f} s against "
              f"{h['clean']['p95_s']:.2f} s alone ({h['p95_ratio']:.2f}x, target <= 2); answers identical "
              f"{h['same_answers']}; resident memory {h['rss_before_mb']} -> {h['rss_after_mb']} MB "
              f"({100 * h['rss_growth']:+.1f} %, target within 10 %); hostile answers {h['hostile_answers']}")
    if args.out:
        atomic_write_json(args.out, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
