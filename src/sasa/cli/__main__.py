"""``python -m sasa.cli`` is the ``sasa`` command too (as ``python -m sasa``)."""

import sys

from sasa.cli import main

sys.exit(main())
