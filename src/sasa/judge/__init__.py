"""Judges: decide whether a response refused (keyword lists) and whether it is unsafe (guard model).

torch/transformers load only when a guard model is actually built.
"""

from sasa.judge.base import Judge, Verdict, short_name
from sasa.judge.guard_model import LLAMA_GUARD_3_CATEGORIES, GuardModelJudge, build_guard_prompt, parse_guard_output
from sasa.judge.keywords import REFUSAL_LISTS, KeywordJudge, RefusalList
from sasa.judge.registry import available_judges, get_judge, register_judge

__all__ = [
    "Judge",
    "Verdict",
    "short_name",
    "KeywordJudge",
    "RefusalList",
    "REFUSAL_LISTS",
    "GuardModelJudge",
    "LLAMA_GUARD_3_CATEGORIES",
    "parse_guard_output",
    "build_guard_prompt",
    "get_judge",
    "register_judge",
    "available_judges",
]
