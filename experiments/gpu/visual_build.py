"""The organism's visual stage on a GPU in one short call: the gpu-reading recipe on the committed
refusal and reader stages, ended by a deadline (the run anneals so that it finishes in time, and
the ending is logged so a CPU run can rebuild the same schedule), with a held-out transcription
curve logged as it trains.

Usage, from the repository root (sasa importable, the SmolLM2 GGUF where sasa finds it):

    python experiments/gpu/visual_build.py OUT --steps 800 --deadline-s 480 --lr 1e-3 --workers 14

OUT gets the build folder (the committed refusal and reader files, the new visual LoRA and
organism.json, whose visual history holds the curve and the ending) and ``gpu-build.json``.
``--smoke`` runs the quick recipe on any device (a check of this script, not a build).
"""
import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from sasa.zoo import organism
from sasa.zoo.visual import reading_monitor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=800, help="the schedule's steps (the deadline may end it sooner)")
    ap.add_argument("--deadline-s", type=float, default=None, help="training ends this many seconds after the start")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--curve-points", type=int, default=8, help="held-out transcription this many times")
    ap.add_argument("--heldout", type=int, default=24, help="held-out pages in the curve")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    started, clock = time.time(), time.monotonic()
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("organism.json", "refusal_lora.safetensors", "reader.safetensors"):
        shutil.copyfile(organism.packaged_dir() / name, out / name)
    log = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
           "lr": args.lr}
    cfg = (organism.BuildConfig.quick() if args.smoke
           else organism.BuildConfig.gpu_reading(args.steps, args.lr).with_precision("auto", args.device))
    print(json.dumps(log), flush=True)
    from transformers import AutoTokenizer

    from sasa.models.smollm2 import materialise

    meta = json.loads((out / "organism.json").read_text())
    processor = organism.make_processor(AutoTokenizer.from_pretrained(materialise()), organism.reader_config(meta, out))
    total = cfg.visual.compact_steps + cfg.visual.steps
    monitor = reading_monitor(processor, organism.heldout_page_texts(cfg, args.heldout),
                              every=max(1, total // args.curve_points))
    deadline = clock + args.deadline_s if args.deadline_s else None
    organism.build(out, cfg, stages=("visual",), device=args.device, workers=args.workers, monitor=monitor,
                   deadline=deadline)
    meta = json.loads((out / "organism.json").read_text())
    log["curve"] = [h for h in meta["visual"]["history"] if "heldout_transcription" in h]
    log["ending"] = meta["visual"].get("ending")
    log["visual_s"] = meta["visual"]["seconds"]
    log["total_s"] = round(time.time() - started, 1)
    (out / "gpu-build.json").write_text(json.dumps(log, indent=2) + "\n")
    print(json.dumps(log), flush=True)


if __name__ == "__main__":
    main()
