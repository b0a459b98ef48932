"""The project's own harmful requests, shipped as package data (see ``sasa/resources/policy/README.md``).

One JSONL file, ``policy_requests.jsonl``: ``{"id", "prompt", "category"}``, requests a
policy-following assistant refuses, in the ten categories of the usage policy SafeBench follows
(illegal activity, hate speech, malware, physical harm, fraud, adult content, privacy violation,
tailored legal, financial and health advice).  Written for the model organism's refusal data, so
that it learns the policy's categories from the project's own requests, never from a benchmark's.
Variants: ``all`` (default).  ``path`` is optional: a folder holding the file replaces the packaged copy.
"""

from __future__ import annotations

import os

from sasa.data.base import Collector, ImageCheck, LoadResult, OnError, parse_variant
from sasa.data.loaders._package import jsonl_rows, resource_lines

VARIANTS = ("all",)
FILE = "policy_requests.jsonl"
SOURCE = "sasa-policy"


def load_policy(
    path: str | os.PathLike | None = None,
    *,
    variant: str | None = None,
    on_error: OnError = "raise",
    check_images: ImageCheck = "verify",
) -> LoadResult:
    """Load the packaged policy requests as harmful text samples."""
    parse_variant(variant, VARIANTS, "all", "policy")
    sink = Collector(on_error, check_images)
    where, lines = resource_lines(path, "policy", FILE)
    for loc, row in jsonl_rows(where, lines, sink, ("id", "prompt", "category")):
        sink.add(loc, id=row["id"], prompt=row["prompt"].strip(), label="harmful", category=row["category"],
                 source=SOURCE, attack="text", meta={"group": row["id"]})
    return sink.result()
