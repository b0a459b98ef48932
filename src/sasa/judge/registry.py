"""Name-to-judge registry, so configs and the CLI can pick a judge by a short string."""

from __future__ import annotations

from typing import Any, Callable

from sasa.judge.base import Judge
from sasa.judge.keywords import LIST_ALIASES, MATCH_MODES, REFUSAL_LISTS, KeywordJudge

_FACTORIES: dict[str, Callable[..., Judge]] = {}


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register_judge(name: str, factory: Callable[..., Judge], *, overwrite: bool = False) -> None:
    """Add a judge factory under ``name``; refuses to shadow an existing name unless asked."""
    key = _norm(name)
    if key in _FACTORIES and not overwrite:
        raise ValueError(f"a judge named {key!r} is already registered (pass overwrite=True to replace it)")
    _FACTORIES[key] = factory


def available_judges() -> list[str]:
    return sorted(_FACTORIES)


def get_judge(name: str, **kwargs: Any) -> Judge:
    """Build a judge by name: ``sasa-paper`` (published check), ``adashield-smart``, ``jbb-strict``,
    ``guard`` (needs model_or_path=), ``llm:MODEL`` / ``llm-xstest:MODEL`` / ``llm-strongreject:MODEL``
    (a local causal LM with a published judge prompt; keyword arguments go to :class:`LLMJudge`)…

    A bare list name is its published (verbatim) check; ``-verbatim`` says so explicitly. An
    optional ``keyword:`` prefix is accepted (it is how keyword judges name themselves).
    """
    llm = _llm_judge(name, kwargs)
    if llm is not None:
        return llm
    key = _norm(name)
    if key.startswith("keyword:"):
        key = key[len("keyword:"):]
    if key not in _FACTORIES:
        raise ValueError(f"unknown judge {name!r}; available: {', '.join(available_judges())}")
    return _FACTORIES[key](**kwargs)


LLM_PREFIXES = ("llm:", "llm-xstest:", "llm-strongreject:")
# an evaluation's judges when none are named: VLGuard's list first (the primary: best agreement with
# people, docs/baselines-and-judges.md), the SASA paper's and XSTest's beside it
DEFAULT_JUDGES = ("vlguard", "sasa-paper", "xstest")


def _llm_judge(name: str, kwargs: dict[str, Any]) -> Judge | None:
    """``llm[-TEMPLATE]:MODEL``; the model part keeps its case (hub ids and paths do)."""
    head, sep, model = name.strip().partition(":")
    if not sep or _norm(head) + ":" not in LLM_PREFIXES:
        return None
    if not model:
        raise ValueError(f"judge {name!r}: name a model after the colon, e.g. llm:qwen2.5-coder-1.5b-instruct")
    from sasa.judge.llm import LLMJudge

    template = _norm(head).removeprefix("llm").removeprefix("-") or "xstest"
    return LLMJudge(model, template, **kwargs)


def _keyword_factory(list_name: str, mode: str) -> Callable[..., Judge]:
    def make(**kwargs: Any) -> Judge:
        if kwargs:
            raise TypeError(f"keyword judge {list_name!r} takes no options, got {sorted(kwargs)}")
        return KeywordJudge(list_name, mode)

    return make


def _guard_factory(**kwargs: Any) -> Judge:
    from sasa.judge.guard_model import GuardModelJudge

    if "model_or_path" not in kwargs:
        raise TypeError("the guard judge needs model_or_path= (a hub id, a local folder or a loaded model)")
    return GuardModelJudge(**kwargs)


for _list in list(REFUSAL_LISTS) + list(LIST_ALIASES):
    register_judge(_list, _keyword_factory(_list, "verbatim"))
    for _mode in MATCH_MODES:
        register_judge(f"{_list}-{_mode}", _keyword_factory(_list, _mode))
register_judge("guard", _guard_factory)
register_judge("llama-guard", _guard_factory)
