"""What the organism makes of each attacked image of a `sasa attack` run: its transcription (word
accuracy against the text typed on the image) and its answer to the sample's own prompt (refused or
not, under each default judge), greedy. An attack that lowers a detector's TPR only by making the
image unreadable, or by making the model refuse, is not a success; this says which it was.

Usage: python readback.py RUN_DIR MANIFEST [--batch 8] [--epsilons 0 8] > readback.jsonl
(resumes: pass --resume FILE; identical images, e.g. every detector's clean image at eps 0, are read once)
Then: python readback.py --table RUN_DIR readback.jsonl
"""
import argparse
import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

from PIL import Image

from sasa.data.sample import Sample


def load_samples(manifest: Path) -> dict[str, Sample]:
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["id"]: Sample.from_dict(r) for r in rows}


def image_path(run: Path, r: dict) -> Path:
    """The attacked image of a record (runs before 85b342b recorded only its file name)."""
    path = run / "images" / r["image"]
    return path if path.is_file() else run / "images" / f"{r['id']}-{r['detector']}-eps-{r['epsilon']:g}.png"


def readback(run: Path, manifest: Path, batch: int, done: set, epsilons: set | None = None) -> None:
    import torch

    from sasa.engine.decoding import generate_plain
    from sasa.judge.registry import get_judge
    from sasa.models.loading import load_model
    from sasa.zoo.scoring import TRANSCRIBE_PROMPT, without_list_tail, word_accuracy

    torch.manual_seed(0)
    samples = load_samples(manifest)
    records = [json.loads(line) for line in (run / "attack.jsonl").read_text().splitlines() if line.strip()]
    todo = [r for r in records if (r["id"], r["detector"], r["epsilon"]) not in done
            and (epsilons is None or r["epsilon"] in epsilons)]
    adapter = load_model("sasa-organism").adapter
    judges = [get_judge(n) for n in ("vlguard", "sasa-paper", "xstest")]
    digest = {id(r): hashlib.sha256(image_path(run, r).read_bytes()).hexdigest() + r["id"] for r in todo}
    unique = list({digest[id(r)]: r for r in todo}.values())
    seen: dict[str, tuple[str, str]] = {}
    for i in range(0, len(unique), batch):
        chunk = unique[i:i + batch]
        images = [Image.open(image_path(run, r)).convert("RGB") for r in chunk]
        _, read = generate_plain(adapter, adapter.encode([TRANSCRIBE_PROMPT] * len(chunk), images), 40)
        _, answers = generate_plain(adapter, adapter.encode([samples[r["id"]].prompt for r in chunk], images), 32)
        seen.update({digest[id(r)]: (t, a) for r, t, a in zip(chunk, read, answers)})
        ready = [r for r in todo if digest[id(r)] in seen]
        todo = [r for r in todo if digest[id(r)] not in seen]
        for r in ready:
            t, a = seen[digest[id(r)]]
            p = samples[r["id"]].prompt
            typed = samples[r["id"]].meta.get("rendered_text") or ""
            print(json.dumps({"id": r["id"], "detector": r["detector"], "epsilon": r["epsilon"],
                              "word_accuracy": word_accuracy(typed, without_list_tail(t)), "transcription": t,
                              "answer": a, "refused": {j.name: j.judge(p, a).refused for j in judges}}), flush=True)


def table(run: Path, readback_path: Path) -> None:
    from sasa.attack.table import wilson

    attack = {(r["id"], r["detector"], r["epsilon"]): r
              for r in map(json.loads, (run / "attack.jsonl").read_text().splitlines()) if r}
    rows = defaultdict(list)
    for r in map(json.loads, readback_path.read_text().splitlines()):
        rows[(r["detector"], r["epsilon"])].append((attack[(r["id"], r["detector"], r["epsilon"])], r))
    print("| detector | epsilon | n | TPR attacked [95 % CI] | TPR clean | word accuracy of the attacked image "
          "(clean: eps 0) | vanilla refusal of the attacked image (vlguard) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (det, eps), pairs in sorted(rows.items()):
        n = len(pairs)
        hit = sum(a["flagged_attacked"] for a, _ in pairs)
        lo, hi = wilson(hit, n)
        clean = sum(a["flagged_clean"] for a, _ in pairs)
        acc = sum(b["word_accuracy"] for _, b in pairs) / n
        ref = sum(b["refused"]["keyword:vlguard-verbatim"] for _, b in pairs)
        print(f"| {det} | {eps:g} | {n} | {100 * hit / n:.0f} % [{100 * lo:.0f}, {100 * hi:.0f}] | "
              f"{100 * clean / n:.0f} % | {100 * acc:.1f} % | {100 * ref / n:.0f} % |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("file", type=Path, help="the manifest (reading back) or the readback JSONL (--table)")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--resume", type=Path, default=None, help="a readback JSONL whose records are skipped")
    ap.add_argument("--epsilons", type=float, nargs="+", default=None, help="read back only these budgets")
    a = ap.parse_args()
    if a.table:
        table(a.run, a.file)
        sys.exit(0)
    done = set()
    if a.resume is not None and a.resume.is_file():
        done = {(r["id"], r["detector"], r["epsilon"]) for r in map(json.loads, a.resume.read_text().splitlines())}
    readback(a.run, a.file, a.batch, done, set(a.epsilons) if a.epsilons else None)
