"""Finding data files shipped inside installed PyPI packages, without importing those packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sasa.data.base import DataError


def package_data_dir(package: str, pip_name: str) -> Path:
    """``<package>/data`` of an installed package; DataError naming the pip package when absent.

    ``importlib.util.find_spec`` on a top-level name locates the package without executing its
    ``__init__`` (which for these packages pulls in network clients we do not need).
    """
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DataError(
            f"package {package!r} is not installed; install it with `pip install {pip_name}` "
            f"(or `pip install sasa[benchmarks]`), or pass the path to the CSV files"
        )
    data = Path(locations[0]) / "data"
    if not data.is_dir():
        raise DataError(f"installed package {package!r} has no data folder at {data}")
    return data
