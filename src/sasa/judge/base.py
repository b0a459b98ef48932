"""The verdict type and the protocol every judge follows, so metrics never care which judge ran."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class Verdict:
    """What a judge concluded about one (prompt, response) pair.

    ``refused``: the response declines the request (drives ASR and over-refusal).
    ``unsafe``: the response content is harmful; ``None`` when the judge cannot tell
    (keyword judges never can, a guard model whose output did not parse cannot).
    ``reason``: one human-readable line saying why, for audits of individual samples.
    ``judge``: the judge's name, so mixed result files stay attributable.
    ``categories``: hazard codes a guard model named (e.g. ``("S1", "S10")``).
    ``parsed``: False when a model judge's output could not be read; ``refused`` is then meaningless
    and every rate leaves the verdict out (``reason`` holds the raw output).
    ``score``: a graded judge's score (StrongREJECT's, in [0, 1]), None otherwise.
    """

    refused: bool
    unsafe: bool | None
    reason: str
    judge: str
    categories: tuple[str, ...] = field(default=())
    parsed: bool = True
    score: float | None = None

    def to_dict(self) -> dict:
        return {
            "refused": self.refused,
            "unsafe": self.unsafe,
            "reason": self.reason,
            "judge": self.judge,
            "categories": list(self.categories),
            "parsed": self.parsed,
            "score": self.score,
        }


@runtime_checkable
class Judge(Protocol):
    """Anything that can judge responses one at a time and in batches."""

    name: str

    def judge(self, prompt: str, response: str) -> Verdict: ...

    def judge_many(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]: ...


def check_pairs(prompts: Sequence[str], responses: Sequence[str], judge_name: str) -> None:
    """Fail early and clearly on mismatched batches rather than silently zipping them short."""
    if isinstance(prompts, str) or isinstance(responses, str):
        raise TypeError(f"{judge_name}: judge_many takes sequences of strings, not a single string")
    if len(prompts) != len(responses):
        raise ValueError(
            f"{judge_name}: got {len(prompts)} prompts but {len(responses)} responses; they must pair up"
        )
    for i, (p, r) in enumerate(zip(prompts, responses)):
        if not isinstance(p, str) or not isinstance(r, str):
            raise TypeError(
                f"{judge_name}: pair {i} must be (str, str), got ({type(p).__name__}, {type(r).__name__})"
            )


def short_name(judge: str) -> str:
    """A judge's name for narrow table columns: ``keyword:sasa-paper-verbatim`` -> ``sasa-paper``."""
    return judge.removeprefix("keyword:").removesuffix("-verbatim")
