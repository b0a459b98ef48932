"""One PGD step's cost on the organism: the attack's score and pixel gradient by the engine's passes
(what `sasa attack` runs) against the plain definition (two full forwards), side by side.

Usage: python experiments/attack-cost/step_cost.py FIGSTEP_DIR [ROUNDS]
(one FigStep image, FigStep's prompt, SASA's probe at the organism's recorded (s, f) with random
weights -- a step's cost does not depend on the probe's values; interleaved rounds, medians).
"""
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from sasa.attack import PixelSpace, differentiable_score
from sasa.data.loaders.figstep import FIGSTEP_PROMPT
from sasa.detector.detectors import ProbeDetector
from sasa.detector.probe import LinearProbe
from sasa.engine import SASAEngine
from sasa.models.loading import load_model
from sasa.zoo.organism import recommended_layers

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from test_attack import _plain_definition_score  # noqa: E402  the plain definition the tests check against

figstep, rounds = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3
torch.manual_seed(0)
adapter = load_model("sasa-organism").adapter
selection = recommended_layers()
s, f = selection.resolve(adapter.num_layers)
engine = SASAEngine(adapter, selection)
dim = adapter.model.get_output_embeddings().weight.shape[0]
detector = ProbeDetector(engine, LinearProbe(torch.randn(dim, dtype=torch.float64) / dim ** 0.5, 0.0))
space = PixelSpace(adapter, [FIGSTEP_PROMPT], [Image.open(figstep / "images" / "SafeBench" / "query_ForbidQI_1_1_6.png")])


def step(score_fn):
    raw = space.raw.clone().requires_grad_(True)
    score = score_fn(adapter, detector, space.inputs_for(raw))
    return torch.autograd.grad(score.sum(), raw)[0]


times = {"engine passes": [], "two full forwards": []}
fns = {"engine passes": differentiable_score, "two full forwards": _plain_definition_score}
for fn in fns.values():
    step(fn)  # warm
for _ in range(rounds):
    for name, fn in fns.items():
        start = time.perf_counter()
        step(fn)
        times[name].append(time.perf_counter() - start)
med = {k: statistics.median(v) for k, v in times.items()}
L = adapter.num_layers
print(f"organism, (s, f) = ({s}, {f}), L = {L}, {torch.get_num_threads()} torch thread(s), "
      f"prompt {space.inputs['input_ids'].shape[1]} tokens")
for k, v in med.items():
    print(f"  {k:20s} {v:6.2f} s a step (score + pixel gradient)")
print(f"  ratio {med['engine passes'] / med['two full forwards']:.2f}")
