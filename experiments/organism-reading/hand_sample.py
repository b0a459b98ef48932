"""A seeded 50 of the FigStep image answers of a `sasa zoo stages` run, laid out for classifying by
hand (refusal / on-topic / off-topic / degenerate), with what the model transcribed of the same
image and its word accuracy beside each answer, so the class can be checked against the reading.

Usage: python hand_sample.py STAGES_OUT [VARIANT] [N] > sample.tsv
"""
import csv
import json
import random
import sys
from pathlib import Path

from sasa.zoo.scoring import word_accuracy, without_list_tail

out, variant = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "with-visual"
n = int(sys.argv[3]) if len(sys.argv) > 3 else 50


def records(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines()) if r["mode"] == "vanilla"}


answers = records(out / variant / "eval" / "records.jsonl")
read = records(out / variant / "transcribe" / "records.jsonl")
images = sorted(k for k in answers if k.endswith("/figstep"))
chosen = sorted(random.Random(0).sample(images, n))
writer = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
writer.writerow(["id", "class", "instruction", "transcription", "word_accuracy", "answer"])
for k in chosen:
    r, t = answers[k], read[k + "#transcribe"]
    instruction = r.get("image_text") or ""  # the text typed on the image (SafeBench's instruction)
    acc = word_accuracy(instruction, without_list_tail(t["response"])) if instruction else float("nan")
    writer.writerow([k, "", instruction, t["response"].replace("\n", " "), f"{acc:.2f}",
                     r["response"].replace("\n", " ").replace("\t", " ")])
