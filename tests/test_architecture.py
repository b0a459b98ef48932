"""The house rules that keep the data path readable: the core never imports the experiments."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sasa"
EXPERIMENTS = ("sasa.zoo", "sasa.demo", "sasa.bench", "sasa.cli", "sasa.serving")  # the layers above the core
TOP = {"zoo", "demo.py", "bench.py", "cli", "__main__.py", "serving", "testing", "resources"}


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


# the data path, in order: a stage may import the stages before it, never one after it
DATA_PATH = ("data", "models", "engine", "detector", "guard", "judge", "report", "evaluation", "analysis", "attack")
SHARED = {"__init__.py", "store", "metrics.py", "distributed.py", "errors.py"}  # used by every stage


def _module_graph() -> dict[str, set[str]]:
    """Module -> the sasa modules it imports (function-local included), without the package
    facades' edges to their own submodules and without the lazy top-level ``sasa`` exports."""
    mods = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for name, p in mods.items():
        found = {m for _, m in _imports(p.read_text(), _package(p)) if m in mods and m not in (name, "sasa")}
        if p.name == "__init__.py":
            found = {m for m in found if not m.startswith(name + ".")}
        graph[name] = found
    return graph


def test_the_top_level_is_the_data_path_plus_shared_plumbing_and_the_front_ends():
    entries = {p.name for p in PACKAGE.iterdir() if not p.name.startswith((".", "__pycache__"))}
    stages = {s if (PACKAGE / s).is_dir() else f"{s}.py" for s in DATA_PATH}
    assert entries == stages | SHARED | TOP, "a new top-level module: place it along the data path (ARCHITECTURE.md)"


def test_no_stage_imports_a_later_stage():
    rank = {s: i for i, s in enumerate(DATA_PATH)}
    bad = []
    for name, deps in _module_graph().items():
        here = name.split(".")[1] if "." in name else None
        for dep in deps:
            there = dep.split(".")[1]
            if here in rank and there in rank and rank[there] > rank[here]:
                bad.append(f"{name} -> {dep}")
    assert not bad, "the data path runs one way (ARCHITECTURE.md): " + "; ".join(sorted(bad))


def test_no_import_cycles():
    graph = _module_graph()
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(cycles)
