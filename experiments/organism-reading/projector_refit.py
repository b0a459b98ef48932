"""Does a sharper projector help the language model read?  The committed reader's projected cells
are near, not at, each character's embedding (median relative L2 error ~0.17).  This refits the
projector alone (the build's ``sharpen`` stage, :func:`sasa.zoo.reader.sharpen_projector`, with the
given settings) and writes a build folder with the refitted reader and the visual LoRA unchanged, to
score with ``chunk_eval.py`` against the original (the same visual LoRA reading other cells).

Usage: python projector_refit.py BUILD_DIR OUT_DIR [PAGES] [EPOCHS] [MSE_WEIGHT]
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from sasa.models.smollm2 import materialise as smollm2_dir
from sasa.zoo import organism
from sasa.zoo.reader import Reader, SharpenConfig, sharpen_projector

build, out = Path(sys.argv[1]), Path(sys.argv[2])
sharpen = SharpenConfig(pages=int(sys.argv[3]) if len(sys.argv) > 3 else 4000,
                        epochs=int(sys.argv[4]) if len(sys.argv) > 4 else 20,
                        mse_weight=float(sys.argv[5]) if len(sys.argv) > 5 else 30.0)
meta = json.loads((build / "organism.json").read_text())
cfg = organism.reader_config(meta, build)
tok = AutoTokenizer.from_pretrained(smollm2_dir())
embeddings = AutoModelForCausalLM.from_pretrained(smollm2_dir(), dtype=torch.float32).get_input_embeddings().weight
reader = Reader(cfg, embeddings.shape[1])
reader.load_state_dict({k: v.float() for k, v in load_file(build / "reader.safetensors").items()})
info = sharpen_projector(reader, cfg, sharpen, tok, organism.make_image_processor(cfg), embeddings,
                         meta["reader"]["filler_token"])
out.mkdir(parents=True, exist_ok=True)
for name in ("organism.json", "refusal_lora.safetensors", "visual_lora.safetensors"):
    shutil.copy(build / name, out / name)
save_file({k: v.detach().half().contiguous() for k, v in reader.state_dict().items()}, str(out / "reader.safetensors"))
(out / "refit.json").write_text(json.dumps({"config": sharpen.to_dict(), **info}, indent=2))
print("before", info["before"], "\nafter ", info["after"], f"\nwritten to {out}")
