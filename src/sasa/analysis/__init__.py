"""Layer analysis: where a model perceives safety, understands meaning and words its refusals,
and the (s, f) that SASA should use for it (``sasa analyze``).

* :mod:`~sasa.analysis.activations` - one forward per sample, every block's last-token state,
  cached on disk (safetensors shards + JSON index), resumable;
* :mod:`~sasa.analysis.curves` - per-block metrics on those states (probes, cross-modal
  agreement, logit-lens readability and refusal curves, principal angles);
* :mod:`~sasa.analysis.lens` - the logit lens, readable tokens, refusal tokens;
* :mod:`~sasa.analysis.heads` - attention-head importance by ablation;
* :mod:`~sasa.analysis.select` - the documented, configurable rule choosing (s, f), with reasons;
* :mod:`~sasa.analysis.profile` - the model profile file the other commands read (``--profile``);
* :mod:`~sasa.analysis.report` - curves JSON, PNG and SVG charts, ``analysis.html``;
* :mod:`~sasa.analysis.run` - all of it in one call (:func:`run_analysis`).
"""

from sasa.analysis.profile import ModelProfile, ProfileError, ProfileMismatchError
from sasa.analysis.run import AnalysisConfig, run_analysis
from sasa.analysis.select import Selection, SelectionRule, select_layers

__all__ = [
    "AnalysisConfig",
    "ModelProfile",
    "ProfileError",
    "ProfileMismatchError",
    "Selection",
    "SelectionRule",
    "run_analysis",
    "select_layers",
]
