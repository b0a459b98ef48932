"""``python -m sasa`` is the ``sasa`` command (so launchers can run it: ``accelerate launch -m sasa …``)."""

import sys

from sasa.cli import main

sys.exit(main())
