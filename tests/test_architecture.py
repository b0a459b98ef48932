"""The house rules that keep the data path readable: the core never imports the experiments."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sasa"
EXPERIMENTS = ("sasa.zoo", "sasa.demo", "sasa.bench", "sasa.cli", "sasa.serving")  # the layers above the core
TOP = {"zoo", "demo.py", "bench.py", "cli.py", "__main__.py", "serving", "testing", "resources"}


def _core_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in TOP)


def _package(path: Path) -> str:
    return ".".join(("sasa",) + path.relative_to(PACKAGE).with_suffix("").parts[:-1])


def _imports(source: str, package: str) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (function-local imports included)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return found


def test_the_core_never_imports_the_organism_demo_benchmark_or_cli():
    modules = _core_modules()
    assert len(modules) > 40 and any(p.parts[-2:] == ("engine", "core.py") for p in modules)
    upward = [f"{p.relative_to(PACKAGE)}:{line} imports {name}" for p in modules
              for line, name in _imports(p.read_text(encoding="utf-8"), _package(p))
              if any(name == e or name.startswith(e + ".") for e in EXPERIMENTS)]
    assert not upward, "core modules import experiments:\n" + "\n".join(upward)


def test_the_testing_helpers_import_only_the_core():
    """``sasa.testing`` (tiny models, real model shapes) serves the core's tests: it must not pull in
    the organism, the demo, the benchmarks, the server or the command line either."""
    modules = sorted((PACKAGE / "testing").rglob("*.py"))
    assert any(p.name == "tiny_models.py" for p in modules)
    upward = [f"{p.relative_to(PACKAGE)}:{line} imports {name}" for p in modules
              for line, name in _imports(p.read_text(encoding="utf-8"), _package(p))
              if any(name == e or name.startswith(e + ".") for e in EXPERIMENTS)]
    assert not upward, "sasa.testing imports experiments:\n" + "\n".join(upward)


def test_the_import_check_sees_local_and_relative_imports():
    source = "def f():\n    from sasa.zoo import organism\n    from ..demo import run_demo\n    import sasa.bench\n"
    names = {n for _, n in _imports(source, "sasa.models")}
    assert {"sasa.zoo", "sasa.zoo.organism", "sasa.demo", "sasa.bench"} <= names


@pytest.mark.parametrize("name", ["smollm2-135m", "sasa-organism"])
def test_named_sources_are_lazy_module_function_entries(name):
    from sasa.models import sources

    assert name in sources.source_names()
    entry = sources._SOURCES[name]
    assert isinstance(entry, str) and ":" in entry
    with pytest.raises(ValueError, match="module:function"):
        sources.register_source("x", "sasa.zoo.organism.materialise")


def test_a_loaded_models_adapter_is_built_once():
    from conftest import tiny
    from sasa.models.loading import LoadedModel

    loaded = LoadedModel(*tiny("llama"), name="tiny-llama")
    assert loaded.adapter is loaded.adapter


def test_one_subsampler_balanced_or_capped_keeps_order():
    from sasa.data.sample import Sample
    from sasa.data.splits import subsample

    samples = [Sample(f"s{i}", "x", label="harmful" if i % 3 else "benign") for i in range(30)]
    both = subsample(samples, per_label=4, seed=1)
    assert [s.label for s in both].count("harmful") == 4 and [s.label for s in both].count("benign") == 4
    assert [s.id for s in both] == [s.id for s in samples if s in both]  # input order kept
    assert subsample(samples, per_label=4, seed=1) == both and subsample(samples, per_label=4, seed=2) != both
    capped = subsample(samples, limit=7, seed=0)
    assert len(capped) == 7 and subsample(samples) == samples
    with pytest.raises(ValueError, match="not both"):
        subsample(samples, per_label=1, limit=1)
