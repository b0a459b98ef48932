"""The (s, f) map of the committed organism: SASA's probe validation AUROC per pair on a grid over
all 30 blocks, with the no-projection probe and the analysis' pick, on the typed pages and text
twins `sasa zoo record organism` analyses (a smaller draw: PER_LABEL pages per label).

Usage: python pair_map.py OUT [STEP] [PER_LABEL]     (writes OUT/analysis/analysis.html with the heat map)
"""
import json
import sys
from pathlib import Path

from sasa.models.loading import load_model
from sasa.zoo.measure import MeasureConfig, organism_analysis

out = Path(sys.argv[1])
step = int(sys.argv[2]) if len(sys.argv) > 2 else 5
per_label = int(sys.argv[3]) if len(sys.argv) > 3 else 24
adapter = load_model("sasa-organism", device="cpu").adapter
result, _, _ = organism_analysis(adapter, out, MeasureConfig(analysis_per_label=per_label), "sasa-organism", True,
                                 pair_map_step=step)
pm = result["pair_map"]
summary = {"analysis_pick": [result["selection"]["safety"], result["selection"]["fused"]],
           "map_maximum": pm["best"], "smoothed_maximum": pm["smoothed_best"], "noproj_auroc": pm["noproj_auroc"],
           "depths": pm["depths"], "grid": pm["grid"], "n_train": pm["n_train"], "n_val": pm["n_val"]}
(out / "pair_map_summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({k: v for k, v in summary.items() if k not in ("grid",)}, indent=1))
