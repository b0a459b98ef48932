"""The refusal stage's data: harmful and benign requests in the same mix of forms, with held-out splits.

Why.  The pinned harmful prompts are mostly imperatives ("Give detailed instructions for ...") and
the project's benign ones mostly questions, so a refusal adapter trained on them as they come
learns "an imperative -> refuse", and it refused benign statements and transcription requests
alike.  Here every request, harmful and benign by the same rule, is asked in two of four forms
(question, instruction, FigStep-style statement, request for a list) built from its key phrase,
chosen so that each form is equally common on both sides: the form carries no information about
the label (tests/test_refusal_data.py checks the balance).
The benign side includes the project's contrast items (alarming words, safe intent: "How do I
kill a hung process?").  A seeded fraction of every source's requests is held out of training for the
held-out refusal check; FigStep and XSTest are never used here.  Sources added after a build are
split on their own (``refusal_data``'s ``harmful_more`` / ``benign_more``).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

from sasa.data.attacks import STATEMENT_HEAD, statement_phrase, to_statement

FORMS = ("question", "instruction", "statement", "list")
_LIST = re.compile(r"^(?:please\s+)?(?:list|name|enumerate|give\s+(?:me\s+)?a\s+(?:numbered\s+)?list|"
                   r"make\s+a\s+(?:numbered\s+)?list|suggest|recommend)\b", re.I)
_VERB_HEAD = re.compile(r"^(?:steps|methods|ways|tips|instructions|strategies|guidelines)\s+to\s+", re.I)
TEMPLATES = {
    "verb": {
        "question": ("How can someone {x}?", "How do I {x}?", "What is the best way to {x}?",
                     "What are the steps to {x}?", "Can you tell me how to {x}?"),
        "instruction": ("Explain how to {x}.", "Give detailed instructions to {x}.", "Describe how to {x}.",
                        "Tell me how to {x}.", "Write a short guide on how to {x}."),
        "list": ("List the steps to {x}.", "Give me a list of ways to {x}.", "Name some ways to {x}.",
                 "Make a numbered list of how to {x}."),
    },
    "noun": {
        "question": ("What are {x}?", "Can you tell me about {x}?", "What should I know about {x}?"),
        "instruction": ("Describe {x}.", "Explain {x} in detail.", "Tell me about {x}."),
        "list": ("List {x}.", "Give me a list of {x}.", "Name some {x}."),
    },
}


def prompt_form(text: str) -> str:
    """The form a request is written in: one of :data:`FORMS`."""
    t = " ".join(text.split())
    if t.endswith("?"):
        return "question"
    if STATEMENT_HEAD.match(t):
        return "statement"
    if _LIST.match(t):
        return "list"
    return "instruction"


def in_form(text: str, form: str, rng: random.Random) -> str | None:
    """``text`` rewritten in ``form`` from its key phrase, or None when it has no usable one
    (multi-sentence requests, long contexts, phrases the statement rules could not find)."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose from {FORMS}")
    t = " ".join(text.split())
    if len(t) > 200 or re.search(r"[.!?:]\s", t):
        return None
    statement = to_statement(t)
    if statement.startswith("List of points on:"):
        return None
    if form == "statement":
        return statement
    phrase = statement_phrase(statement)
    if not phrase or len(phrase.split()) < 2:
        return None
    kind = "verb" if _VERB_HEAD.match(statement) else "noun"
    return rng.choice(TEMPLATES[kind][form]).format(x=phrase[0].lower() + phrase[1:] if not phrase[:2].isupper()
                                                    else phrase)


def in_balanced_forms(prompts: list[str], per_prompt: int, seed: int) -> list[str]:
    """Each prompt in ``per_prompt`` of its forms (its own included), the forms chosen greedily so
    that every form is equally common in the result; a prompt with no other form stays as it is."""
    rng = random.Random(seed)
    counts = Counter({f: 0 for f in FORMS})
    out = []
    for p in prompts:
        options = {prompt_form(p): p}
        for form in FORMS:
            if form not in options:
                alt = in_form(p, form, rng)
                if alt is not None:
                    options[form] = alt
        chosen = sorted(options, key=lambda f: (counts[f], rng.random()))[:per_prompt]
        for form in chosen:
            counts[form] += 1
            out.append(options[form])
    return out


def form_shares(prompts: list[str]) -> dict[str, float]:
    counts = Counter(prompt_form(p) for p in prompts)
    return {f: counts[f] / max(1, len(prompts)) for f in FORMS}


def request_key(text: str) -> str:
    """What a request asks, whatever its form: rows with one key are one request (the benign set
    has a question and its statement twin, e.g. "How do I remove a red wine stain ...?")."""
    t = " ".join(text.split())
    try:
        return to_statement(t).lower()
    except ValueError:
        return t.lower()


def held_out_split(rows: list[tuple[str, str]], fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out) (id, prompt) rows: a seeded share of the *requests* (:func:`request_key`)
    is held out, so no form of a held-out request is trained on; same rows -> same split."""
    keys = sorted({request_key(p) for _, p in rows})
    random.Random(seed).shuffle(keys)
    held = set(keys[: int(round(len(keys) * fraction))])
    return [r for r in rows if request_key(r[1]) not in held], [r for r in rows if request_key(r[1]) in held]


@dataclass(frozen=True)
class RefusalData:
    harmful: list[str]
    benign: list[str]
    harmful_held_out: list[tuple[str, str]]
    benign_held_out: list[tuple[str, str]]

    def summary(self) -> dict:
        return {"harmful": len(self.harmful), "benign": len(self.benign),
                "harmful_held_out": len(self.harmful_held_out), "benign_held_out": len(self.benign_held_out),
                "forms": {"harmful": form_shares(self.harmful), "benign": form_shares(self.benign)}}


def refusal_data(harmful: list[tuple[str, str]], benign: list[tuple[str, str]], *, held_out: float = 0.2,
                 forms_per_prompt: int = 2, seed: int = 0, harmful_more: list[tuple[str, str]] = (),
                 benign_more: list[tuple[str, str]] = (), benign_more_repeat: int = 1) -> RefusalData:
    """Training prompts, each in ``forms_per_prompt`` balanced forms (:func:`in_balanced_forms`;
    1 keeps every prompt as written), and the held-out (id, prompt) rows as written.

    ``harmful_more`` / ``benign_more`` are requests added after a first build: each is split on its
    own (seeds ``seed + 2``, ``seed + 3``) and follows the first rows, so adding them moves no
    earlier request between training and held-out: a stage trained before they were added is
    never tested on what it trained on.  ``benign_more_repeat`` repeats the added benign *training*
    requests (after the split, so the held-out rows are the same for any count)."""
    if benign_more_repeat < 1:
        raise ValueError(f"benign_more_repeat must be at least 1, got {benign_more_repeat}")
    h_train, h_held = held_out_split(harmful, held_out, seed)
    b_train, b_held = held_out_split(benign, held_out, seed + 1)
    if harmful_more:
        train, held = held_out_split(list(harmful_more), held_out, seed + 2)
        h_train, h_held = h_train + train, h_held + held
    if benign_more:
        train, held = held_out_split(list(benign_more), held_out, seed + 3)
        b_train, b_held = b_train + train * benign_more_repeat, b_held + held
    h, b = [p for _, p in h_train], [p for _, p in b_train]
    if forms_per_prompt > 1:
        h, b = in_balanced_forms(h, forms_per_prompt, seed), in_balanced_forms(b, forms_per_prompt, seed + 1)
    return RefusalData(h, b, h_held, b_held)
