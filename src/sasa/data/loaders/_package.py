"""Finding data files shipped inside installed PyPI packages (without importing them) or inside sasa."""

from __future__ import annotations

import importlib.util
import json
import os
from importlib import resources
from pathlib import Path
from typing import Iterator

from sasa.data.base import Collector, DataError


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


def resource_lines(path: str | os.PathLike | None, folder: str, name: str) -> tuple[str, Iterator[tuple[int, str]]]:
    """(where, numbered lines) of ``sasa/resources/<folder>/<name>``, or of ``<path>/<name>`` when a
    folder is given (to test an edited copy of a packaged set)."""
    if path is None:
        res = resources.files("sasa").joinpath("resources", folder, name)
        if not res.is_file():
            raise DataError(f"packaged file missing: sasa/resources/{folder}/{name} (broken install?)")
        return f"sasa/resources/{folder}/{name}", enumerate(res.read_text(encoding="utf-8").splitlines(), start=1)
    p = Path(path) / name
    if not p.is_file():
        raise DataError(f"{folder} set file not found: {p}")
    return str(p), enumerate(p.read_text(encoding="utf-8").splitlines(), start=1)


def jsonl_rows(where: str, lines: Iterator[tuple[int, str]], sink: Collector,
               keys: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
    """(location, row) of each non-blank line that is a JSON object with string ``keys``; any other
    line goes to ``sink`` as a bad row named by its file and line."""
    for lineno, line in lines:
        if not line.strip():
            continue
        loc = f"{where}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            sink.bad(loc, f"invalid JSON: {exc.msg}")
            continue
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in keys):
            sink.bad(loc, "expected an object with string " + ", ".join(f"'{k}'" for k in keys))
            continue
        yield loc, row
