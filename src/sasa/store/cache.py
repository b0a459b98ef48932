"""Where sasa keeps what it derives once and reuses: ``$SASA_CACHE`` or ``~/.cache/sasa``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("SASA_CACHE", Path.home() / ".cache" / "sasa"))
