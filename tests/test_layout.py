"""The package's layers and the pipeline's dependencies, read statically from the source.

Every stage of dvc.yaml must list every project file its process tree imports or reads (otherwise a change
there leaves results `dvc status` calls up to date); the shipped code must not import the test fixtures;
the subpackages' imports must point one way. Imports inside functions count: they run in the stage too.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

# What each stage's process tree runs: its command's modules, and the ones it starts in other ways
# (the child command of `basic stage`, lmms-eval's plugin entry point and the task YAMLs' !function hooks).
STAGE_ENTRIES = {
    "prepare": ["basic.cli", "basic.pipeline.prepare"],
    "backbones": ["basic.cli", "basic.pipeline.stage", "basic.mini.cli", "basic.full.checkpoints"],
    "pretrain": ["basic.cli", "basic.pipeline.stage", "basic.train"],
    "finetune": ["basic.cli", "basic.pipeline.stage", "basic.train"],
    "evaluate": [
        "basic.cli",
        "basic.pipeline.stage",
        "basic.eval.evaluate",
        "basic.eval.plugin",
        "basic.eval.tasks.utils",
    ],
    "analyze": ["basic.cli", "basic.pipeline.stage", "basic.eval.analysis"],
    "report": ["basic.cli", "basic.pipeline.report"],
}
# Files other than modules that a module reads (package data, notebooks); every such file of src/basic must
# be claimed here, so that a new one cannot be forgotten.
DATA_READ_BY = {
    "basic.eval.benchmarks": ["src/basic/eval/benchmarks.yaml"],
    "basic.eval.evaluate": ["src/basic/eval/tasks"],
    "basic.eval.analysis": ["src/basic/eval/stop_words.txt"],
    "basic.full.download": ["src/basic/full/manifests"],
    "basic.full.checkpoints": ["src/basic/full/manifests/checkpoints/backbones.yaml"],
    "basic.pipeline.report": ["src/basic/pipeline/reference_numbers.yaml", "notebooks"],
}


def module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def imports_of(name: str) -> frozenset[str]:
    """The project modules `name` imports anywhere in its source (and the packages above them)."""
    path = module_file(name)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == "basic" and module_file(target):
                parts = target.split(".")
                found.update(
                    ".".join(parts[:i]) for i in range(1, len(parts) + 1) if module_file(".".join(parts[:i]))
                )
    found.discard(name)
    return frozenset(found)


def closure(entries: list[str]) -> set[str]:
    seen, todo = set(), list(entries)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imports_of(name))
    return seen


def all_modules() -> list[str]:
    return [
        ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        for p in sorted((SRC / "basic").rglob("*.py"))
    ]


def stage_deps() -> dict[str, list[str]]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: (stage.get("do", stage)).get("deps", []) for name, stage in stages.items()}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(STAGE_ENTRIES))
def test_every_stage_depends_on_every_file_its_processes_read(stage):
    deps = stage_deps()[stage]
    modules = closure(STAGE_ENTRIES[stage])
    needed = {str(module_file(m).relative_to(REPO)) for m in modules}
    needed |= {f for m in modules for f in DATA_READ_BY.get(m, [])}
    missing = sorted(f for f in needed if not covered(f, deps))
    assert not missing, f"dvc.yaml: stage {stage} does not list {', '.join(missing)}"


def test_every_stage_of_dvc_yaml_is_checked():
    assert set(stage_deps()) == set(STAGE_ENTRIES)


def test_package_data_is_claimed():
    claimed = [f for files in DATA_READ_BY.values() for f in files]
    data = [
        str(p.relative_to(REPO))
        for p in (SRC / "basic").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert [f for f in data if not covered(f, claimed)] == []


def test_shipped_code_never_imports_the_fixtures():
    offenders = [
        m
        for m in all_modules()
        if not m.startswith("basic.testing") and any(i.startswith("basic.testing") for i in imports_of(m))
    ]
    assert offenders == []


def test_subpackages_import_one_way():
    """The graph of basic's top-level parts (library modules, data, method, eval, mini, full, pipeline...)
    has no cycle, so each layer can be read, tested and reused without the ones above it."""

    def part(m: str) -> str:
        return ".".join(m.split(".")[:2])

    edges = {
        (part(m), part(i))
        for m in all_modules()
        for i in imports_of(m)
        if part(m) != part(i) and i != "basic"
    }
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)

    def cycle_from(node, path):
        for nxt in graph.get(node, ()):
            if nxt in path:
                return path[path.index(nxt) :] + [nxt]
            found = cycle_from(nxt, path + [nxt])
            if found:
                return found
        return None

    cycles = [c for n in graph if (c := cycle_from(n, [n]))]
    assert not cycles, f"import cycle between parts: {' -> '.join(cycles[0])}"
