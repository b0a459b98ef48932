"""One loader per benchmark, each reading the benchmark's own published file layout.

Every loader has the signature ``load_x(path, *, variant=None, on_error="raise",
check_images="verify") -> LoadResult``; :mod:`sasa.data.registry` maps names to them.
"""

from sasa.data.loaders.benign import load_benign
from sasa.data.loaders.figstep import load_figstep
from sasa.data.loaders.harmbench import load_harmbench
from sasa.data.loaders.jailbreakv import load_jailbreakv
from sasa.data.loaders.manifest import load_manifest
from sasa.data.loaders.mmsafetybench import load_mmsafetybench
from sasa.data.loaders.mmvet import load_mmvet
from sasa.data.loaders.mossbench import load_mossbench
from sasa.data.loaders.policy import load_policy
from sasa.data.loaders.strongreject import load_strongreject
from sasa.data.loaders.vlguard import load_vlguard
from sasa.data.loaders.xstest import load_xstest

__all__ = [
    "load_benign",
    "load_figstep",
    "load_harmbench",
    "load_jailbreakv",
    "load_manifest",
    "load_mmsafetybench",
    "load_mmvet",
    "load_mossbench",
    "load_policy",
    "load_strongreject",
    "load_vlguard",
    "load_xstest",
]
