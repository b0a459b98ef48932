"""How stable is the organism's (s, f) pick across sample draws?  The analysis (with the map) on
SEEDS draws of MAX_SAMPLES per label from the 64-per-label pool `sasa zoo record organism` analyses
(typed pages and their text twins); counts how often the analysis' pick, the map's maximum and its
smoothed maximum agree (`sasa.analysis.run.pick_stability`).

Usage: python stability.py OUT [MAX_SAMPLES] [STEP] [SEEDS...]
"""
import json
import sys
from pathlib import Path

from sasa.analysis import AnalysisConfig
from sasa.analysis.run import pick_stability
from sasa.data.splits import subsample
from sasa.models.loading import load_model
from sasa.zoo.measure import MeasureConfig, detector_pool

out = Path(sys.argv[1])
max_samples = int(sys.argv[2]) if len(sys.argv) > 2 else 16
step = int(sys.argv[3]) if len(sys.argv) > 3 else 10
seeds = [int(x) for x in sys.argv[4:]] or [0, 1, 2]
cfg = MeasureConfig()
adapter = load_model("sasa-organism", device="cpu").adapter
train, _, text = detector_pool(out, cfg.seed, True)
chosen = subsample(subsample(train, per_label=cfg.train_per_label, seed=cfg.seed), per_label=cfg.analysis_per_label,
                   seed=cfg.seed)
twins = {s.id: s for s in text}
pool = chosen + [twins[p.meta["group"]] for p in chosen]
acfg = AnalysisConfig(batch_size=cfg.batch_size, heads=False, max_samples=max_samples, pairs=0,
                      pair_map_step=step)
result = pick_stability(adapter, pool, out, seeds, acfg, model_name="sasa-organism")
(out / "stability.json").write_text(json.dumps(result, indent=1))
print(json.dumps(result["agreement"], indent=1))
for run in result["runs"]:
    print(run)
