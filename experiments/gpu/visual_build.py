"""The organism's visual stage on a GPU in one short call: time a training step of the gpu-reading
recipe's shape, fit the number of steps to the seconds at hand, build the stage on the committed
refusal and reader stages, and log a held-out transcription curve while it trains.

Usage, from the repository root (sasa importable, the SmolLM2 GGUF where sasa finds it):

    python experiments/gpu/visual_build.py OUT --train-s 240 --lr 1e-3 --workers 7

OUT gets the build folder (the committed refusal and reader files, the new visual LoRA and
organism.json, whose visual history holds the curve) and ``gpu-build.json`` (the step time, the
steps chosen, the phases' seconds).  ``--steps N`` skips the timing; ``--smoke`` runs the quick
recipe on any device (a check of this script, not a build).
"""
import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from sasa.zoo import organism
from sasa.zoo.visual import reading_monitor


def step_seconds(device: torch.device, bf16: bool, rank: int, alpha: float, rows=(64, 16, 16)) -> float:
    """Mean seconds of a gpu-reading step (7 compact steps of 64 pages, 1 full one of 16, each with
    16 text replay rows: ``rows``), timed on synthetic inputs of the recipe's lengths."""
    from transformers import AutoModelForCausalLM

    from sasa.models.smollm2 import materialise
    from sasa.zoo.refusal import add_lora

    lm = AutoModelForCausalLM.from_pretrained(materialise(), dtype=torch.float32).to(device)
    wrapped = add_lora(lm, rank, alpha)
    opt = torch.optim.AdamW([p for lora in wrapped.values() for p in (lora.lora_a, lora.lora_b)], lr=0.0)
    width = lm.config.hidden_size

    def step(pages: int, tokens: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = 0
        for n, length in ((pages, tokens), (rows[2], 110)):
            x = torch.randn(n, length, width, device=device)
            labels = torch.randint(0, 1000, (n, length), device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss + lm(inputs_embeds=x, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step(rows[0], 230)  # warm-up
    compact = statistics.median(step(rows[0], 230) for _ in range(4))
    full = statistics.median(step(rows[1], 340) for _ in range(2))
    return (7 * compact + full) / 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--train-s", type=float, default=240.0, help="seconds of training to fit the steps to")
    ap.add_argument("--steps", type=int, default=None, help="this many steps (no timing)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--curve-points", type=int, default=10, help="held-out transcription this many times")
    ap.add_argument("--heldout", type=int, default=40, help="held-out pages in the curve")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    started = time.time()
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("organism.json", "refusal_lora.safetensors", "reader.safetensors"):
        shutil.copyfile(organism.packaged_dir() / name, out / name)
    log = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
           "lr": args.lr}
    if args.smoke:
        cfg, steps = organism.BuildConfig.quick(), None
    else:
        steps = args.steps
        if steps is None:
            log["step_s"] = round(step_seconds(device, organism.native_bf16(args.device), 16, 32.0), 4)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            steps = max(16, min(3000, int(args.train_s / (1.15 * log["step_s"]))))
        cfg = organism.BuildConfig.gpu_reading(steps, args.lr).with_precision("auto", args.device)
        log["steps"] = steps
    log["timing_s"] = round(time.time() - started, 1)
    print(json.dumps(log), flush=True)
    from transformers import AutoTokenizer

    from sasa.models.smollm2 import materialise

    meta = json.loads((out / "organism.json").read_text())
    processor = organism.make_processor(AutoTokenizer.from_pretrained(materialise()), organism.reader_config(meta, out))
    total = cfg.visual.compact_steps + cfg.visual.steps
    monitor = reading_monitor(processor, organism.heldout_page_texts(cfg, args.heldout),
                              every=max(1, total // args.curve_points))
    organism.build(out, cfg, stages=("visual",), device=args.device, workers=args.workers, monitor=monitor)
    meta = json.loads((out / "organism.json").read_text())
    log["curve"] = [h for h in meta["visual"]["history"] if "heldout_transcription" in h]
    log["visual_s"] = meta["visual"]["seconds"]
    log["total_s"] = round(time.time() - started, 1)
    (out / "gpu-build.json").write_text(json.dumps(log, indent=2) + "\n")
    print(json.dumps(log), flush=True)


if __name__ == "__main__":
    main()
