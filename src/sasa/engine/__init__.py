"""The SASA two-pass engine, done in one prefill.

Pass 1 is the model's own prefill, run by ``generate`` itself so inputs, position ids (M-RoPE
included), masks and the KV cache are exactly what plain generation uses. While it runs, a tap
records each decoder block's call arguments and stops computing after the last block that is
needed (the fused layer f when only a risk score is wanted). Pass 2 starts from the projected
state of block s and re-runs blocks s+1..L-1 with the recorded arguments: the vision tower, the
embeddings and blocks 0..s are never run twice. If the prompt is answered, the skipped blocks
f+1..L-1 of pass 1 are run then, completing the plain KV cache, and ``generate`` decodes from it
with no third prefill.

Modules, in the order a call runs through them: ``plan`` (which blocks each pass needs),
``interception`` (the block tap inside ``generate``'s prefill), ``prefill`` (pass 2 and the plain
tail), ``decoding`` (refused rows, sasa's projected decoder), ``core`` (:class:`SASAEngine`).
"""

from sasa.engine.core import SASAEngine, plain_engine
from sasa.engine.decoding import GenerationResult
from sasa.engine.plan import FEATURE_KINDS, FeatureSpec, PassPlan, plan_passes
from sasa.engine.prefill import PrefillResult

__all__ = ["FEATURE_KINDS", "FeatureSpec", "GenerationResult", "PassPlan", "PrefillResult", "SASAEngine",
           "plain_engine", "plan_passes"]
