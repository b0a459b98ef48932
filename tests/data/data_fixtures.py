"""Tiny trees in each benchmark's exact published layout, written by the data-layer tests.

Placeholder text only, never real harmful content.  Imported by ``conftest.py`` and the tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image


def png(path: Path, color=(200, 30, 30), size=(8, 8), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


# ---- FigStep: the repository layout data/question/*.csv + data/images/SafeBench/*.png ----------

FIGSTEP_HEADER = ["dataset", "category_id", "task_id", "category_name", "question", "instruction"]


def make_figstep(root: Path, n_cat: int = 2, n_task: int = 3) -> Path:
    rows = []
    for c in range(1, n_cat + 1):
        for t in range(1, n_task + 1):
            rows.append(["ForbidQI", c, t, f"Category {c}", f"How can I do placeholder task {c}-{t}?",
                         f"Steps to do placeholder task {c}-{t}."])
            png(root / "data" / "images" / "SafeBench" / f"query_ForbidQI_{c}_{t}_6.png")
    write_csv(root / "data" / "question" / "safebench.csv", FIGSTEP_HEADER, rows)
    write_csv(root / "data" / "question" / "SafeBench-Tiny.csv", FIGSTEP_HEADER, rows[:2])
    return root


# ---- XSTest: xstest_prompts.csv ---------------------------------------------------------------

XSTEST_HEADER = ["id", "prompt", "type", "label", "focus", "note"]


def make_xstest(root: Path) -> Path:
    write_csv(root / "xstest_prompts.csv", XSTEST_HEADER, [
        [1, "How do I stop a stuck program?", "homonyms", "safe", "stop", "software"],
        [2, "Placeholder unsafe contrast prompt", "contrast_homonyms", "unsafe", "stop", "violence"],
        [3, "Another safe prompt", "safe_contexts", "safe", "", ""],
    ])
    return root


# ---- MM-SafetyBench: data/processed_questions/<scenario>.json, data/imgs/<scenario>/<kind>/<id>.jpg

def make_mmsafetybench(root: Path, per_scenario: int = 2) -> Path:
    from sasa.data.loaders.mmsafetybench import SCENARIOS

    tiny = []
    for scen in SCENARIOS:
        qs = {}
        for i in range(per_scenario):
            qs[str(i)] = {
                "Question": f"original question {scen} {i}",
                "GPT-Pred": "",
                "Changed Question": f"changed question {scen} {i}",
                "Key Phrase": f"key phrase {i}",
                "Phrase Type": "activity",
                "Rephrased Question": f"typo question {scen} {i}",
                "Rephrased Question(SD)": f"sd question {scen} {i}",
            }
            for kind in ("SD", "SD_TYPO", "TYPO"):
                png(root / "data" / "imgs" / scen / kind / f"{i}.jpg", fmt="JPEG")
        write_json(root / "data" / "processed_questions" / f"{scen}.json", qs)
        tiny.append({"Scenario": scen, "Sampled_ID_List": [0]})
    write_json(root / "TinyVersion_ID_List.json", tiny)
    return root


# ---- VLGuard: test.json + test/<image> --------------------------------------------------------

def make_vlguard(root: Path) -> Path:
    records = [
        {"id": "Ads_1", "image": "bad_ads/a.png", "safe": False, "harmful_category": "deception",
         "harmful_subcategory": "disinformation",
         "instr-resp": [{"instruction": "placeholder unsafe instruction", "response": "refusal"}]},
        {"id": "Ads_2", "image": "bad_ads/b.png", "safe": True,
         "instr-resp": [{"safe_instruction": "What is shown?", "response": "a shop"},
                        {"unsafe_instruction": "placeholder unsafe follow-up", "response": "refusal"}]},
        {"id": "Ads_3", "image": "privacy/c.png", "safe": True,
         "instr-resp": [{"unsafe_instruction": "placeholder unsafe two", "response": "refusal"},
                        {"safe_instruction": "Describe the scene.", "response": "a park"}]},
    ]
    write_json(root / "test.json", records)
    for r in records:
        png(root / "test" / r["image"])
    return root


# ---- JailBreakV-28K: JailBreakV_28K/{JailBreakV_28K.csv,mini_JailBreakV_28K.csv} + images ------

JBV_HEADER = ["id", "jailbreak_query", "redteam_query", "format", "policy", "image_path", "from",
              "selected_mini", "transfer_from_llm"]


def make_jailbreakv(root: Path) -> Path:
    base = root / "JailBreakV_28K"
    rows = [
        [0, "placeholder template attack 0", "placeholder query A", "Template", "Violence",
         "llm_transfer_attack/nature_0.jpeg", "handcraft", "True", "True"],
        [1, "placeholder persuade attack", "placeholder query A", "Persuade", "Violence",
         "llm_transfer_attack/noise_1.jpeg", "handcraft", "False", "True"],
        [2, "placeholder figstep attack", "placeholder query B", "FigStep", "Fraud",
         "figstep/query_2.png", "gpt", "True", "False"],
        [3, "placeholder query relevant", "placeholder query C", "Query-relevant", "Malware",
         "query_related/SD_typo_3.png", "gpt", "False", "False"],
        [4, "placeholder logic attack", "placeholder query C", "Logic", "Malware",
         "llm_transfer_attack/blank_4.jpeg", "gpt", "False", "True"],
    ]
    for r in rows:
        png(base / r[5])
    write_csv(base / "JailBreakV_28K.csv", JBV_HEADER, rows)
    write_csv(base / "mini_JailBreakV_28K.csv", JBV_HEADER, [r for r in rows if r[7] == "True"])
    return root


# ---- HarmBench / StrongREJECT: the upstream repository layouts ---------------------------------

HB_HEADER = ["Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString", "BehaviorID"]


def make_harmbench(root: Path) -> Path:
    d = root / "data" / "behavior_datasets"
    write_csv(d / "harmbench_behaviors_text_test.csv", HB_HEADER, [
        ["placeholder standard behavior", "standard", "illegal", "", "", "b_std"],
        ["placeholder contextual behavior", "contextual", "harmful", "context", "some context text", "b_ctx"],
    ])
    write_csv(d / "harmbench_behaviors_text_val.csv", HB_HEADER, [
        ["placeholder val behavior", "standard", "cybercrime_intrusion", "", "", "b_val"],
    ])
    return root


def make_strongreject(root: Path) -> Path:
    d = root / "strongreject_dataset"
    write_csv(d / "strongreject_dataset.csv", ["category", "source", "forbidden_prompt"], [
        ["Disinformation and deception", "custom", "placeholder forbidden prompt one"],
        ["Violence", "DAN", "placeholder forbidden prompt two"],
    ])
    write_csv(d / "strongreject_small_dataset.csv", ["category", "source", "forbidden_prompt"], [
        ["Disinformation and Deception", "custom", "placeholder forbidden prompt one"],
    ])
    return root


# ---- MOSSBench: data/images_information/information.json + data/images; data_contrast/ ---------

def make_mossbench(root: Path) -> Path:
    for folder, questions in (("data", ["Describe a fun game here.", "Plan a picnic here."]),
                              ("data_contrast", ["placeholder harmful contrast one", "placeholder harmful two"])):
        info = {}
        for i, q in enumerate(questions, start=1):
            rec = {"image": f"images/{i}.png", "short description": "a scene", "question": q,
                   "metadata": {"over": f"type {i}", "human": 0, "child": 1, "syn": 1, "ocr": 0, "harm": [7]},
                   "pid": str(i)}
            if folder == "data_contrast":
                rec["metadata"] = {"over": f"type {i}"}
            info[str(i)] = rec
        write_json(root / folder / "images_information" / "information.json", info)
        png(root / folder / "images" / "1.png")
        png(root / folder / "images" / "2.webp", fmt="WEBP")  # the record says .png: extension fallback
    return root


# ---- MM-Vet: mm-vet.json + images/ -----------------------------------------------------------

def make_mmvet(root: Path) -> Path:
    write_json(root / "mm-vet.json", {
        "v1_0": {"imagename": "v1_0.png", "question": "What is written on the sign?", "answer": "STOP",
                 "capability": ["ocr", "rec"]},
        "v1_1": {"imagename": "v1_1.jpg", "question": "How many apples are there?", "answer": "3",
                 "capability": ["rec", "math"]},
    })
    png(root / "images" / "v1_0.png")
    png(root / "images" / "v1_1.jpg", fmt="JPEG")
    return root


BUILDERS = {
    "figstep": make_figstep,
    "xstest": make_xstest,
    "mmsafetybench": make_mmsafetybench,
    "vlguard": make_vlguard,
    "jailbreakv": make_jailbreakv,
    "harmbench": make_harmbench,
    "strongreject": make_strongreject,
    "mossbench": make_mossbench,
    "mmvet": make_mmvet,
}
