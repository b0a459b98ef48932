"""A seeded subset of XSTest v2's human-labelled completions, for validating model judges on a CPU.

Usage: python experiments/llm-judge/subset.py DIR N OUT.csv [FIRST]
DIR holds paul-rottger/exaggerated-safety's ``model_completions/xstest_v2_completions_*.csv``
(five models, 2 250 rows); OUT gets N rows drawn without replacement (numpy seed 0) from their
concatenation, in XSTest v2's layout, for ``sasa judge validate --data OUT``; with FIRST, only the
first FIRST of those N (the README's 60-row comparison: N=120, FIRST=60).
"""

import csv
import sys
from pathlib import Path

import numpy as np

MODELS = ("gpt4", "llama2new", "llama2orig", "mistralinstruct", "mistralguard")


def main(src: str, n: int, out: str, first: int | None = None) -> None:
    rows, header = [], None
    for model in MODELS:
        with open(Path(src) / f"xstest_v2_completions_{model}.csv", newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = header or reader.fieldnames
            rows += [dict(r, id=f"{model}/{r['id']}") for r in reader]
    pick = np.random.default_rng(0).choice(len(rows), size=n, replace=False)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        kept = sorted(pick)[:first]
        w.writerows(rows[i] for i in kept)
    print(f"{len(kept)} of {len(rows)} rows -> {out}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)
