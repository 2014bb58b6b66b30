"""The shipped task YAMLs: both prompt variants rendered into them, the `lmms_eval` variant identical to
lmms-eval's own tasks, data paths rendered, the benchmark map."""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path

import pytest
import yaml
from PIL import Image

from basic.eval import prompts
from basic.eval.benchmarks import PAPER_BENCHMARKS, Benchmark, benchmark_map, select
from basic.eval.evaluate import _Loader, render_tasks, task_data_files

UPSTREAM = Path(importlib.import_module("lmms_eval").__file__).parent / "tasks"
OURS = Path(str(resources.files("basic.eval.tasks")))


def _load(path: Path) -> dict:
    """A task YAML with its `include` chain merged (lmms-eval's rule: the including file wins)."""
    config = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    merged: dict = {}
    for include in reversed([config.pop("include")] if "include" in config else []):
        merged.update(_load(path.parent / include))
    merged.update(config)
    return merged


def _function(path: Path, ref: str):
    module, name = str(ref).rsplit(".", 1)
    if not module.startswith(("basic.", "lmms_eval.")):
        module = f"lmms_eval.tasks.{path.parent.name}.{module}"
    return getattr(importlib.import_module(module), name)


def _prompt(path: Path, doc: dict) -> str:
    config = _load(path)
    return _function(path, config["doc_to_text"])(dict(doc), config["lmms_eval_specific_kwargs"]["default"])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rendered")
    return {v: render_tasks(root / "data", root / v, v) for v in prompts.VARIANTS}


IMAGE = Image.new("RGB", (4, 4))
MMB_DOC = {
    "index": 3,
    "question": "Which shape is red?",
    "hint": "Look closely.",
    "A": "circle",
    "B": "square",
    "C": "triangle",
    "D": "star",
    "answer": "A",
    "category": "attr",
    "L2-category": "perception",
    "l2-category": "perception",
    "source": "mini",
    "split": "dev",
    "image": IMAGE,
}
SQA_DOC = {
    "question": "Which is a mammal?",
    "choices": ["cat", "fish", "frog"],
    "hint": "Animals differ.",
    "answer": 0,
}
CASES = [
    ("mini_vqav2", "vqav2/vqav2_test.yaml", {"question": "what colour is it?"}),
    ("basic_vqav2_testdev", "vqav2/vqav2_test.yaml", {"question": "Is the ball flying towards the batter?"}),
    ("mini_gqa", "gqa/gqa.yaml", {"question": "Is the circle red?"}),
    ("basic_gqa", "gqa/gqa.yaml", {"question": "Is the circle red?"}),
    ("mini_sqa_img", "scienceqa/scienceqa_img.yaml", SQA_DOC),
    ("basic_sqa_img", "scienceqa/scienceqa_img.yaml", {**SQA_DOC, "hint": "", "choices": ["cat", "fish"]}),
    ("mini_mmb_en", "mmbench/mmbench_en_dev.yaml", MMB_DOC),
    ("mini_mmb_en", "mmbench/mmbench_en_dev.yaml", {**MMB_DOC, "hint": None, "C": None}),
    ("basic_mmbench_en_dev", "mmbench/mmbench_en_dev.yaml", {**MMB_DOC, "hint": "nan"}),
    ("basic_mmbench_en_test", "mmbench/mmbench_en_test.yaml", {**MMB_DOC, "E": "moon"}),
    ("mini_mmb_cn", "mmbench/mmbench_cn_dev.yaml", MMB_DOC),
    ("basic_mmbench_cn_dev", "mmbench/mmbench_cn_dev.yaml", {**MMB_DOC, "hint": float("nan")}),
    ("basic_mmbench_cn_test", "mmbench/mmbench_cn_test.yaml", {**MMB_DOC, "hint": "nan", "B": float("nan")}),
    ("mini_mmvet", "mmvet/mmvet.yaml", {"question": "What is written?", "answer": "stop"}),
    ("basic_mmvet", "mmvet/mmvet.yaml", {"question": "What is written?", "answer": "stop"}),
    ("mini_vizwiz", "vizwiz_vqa/vizwiz_vqa_test.yaml", {"question": "what is THIS?"}),
    ("basic_vizwiz_test", "vizwiz_vqa/vizwiz_vqa_test.yaml", {"question": "what is this?"}),
    (
        "mini_textvqa",
        "textvqa/textvqa_val.yaml",
        {"question": "what does the sign say?", "ocr_tokens": ["STOP"]},
    ),
    (
        "basic_textvqa_val",
        "textvqa/textvqa_val.yaml",
        {"question": "what brand?", "ocr_tokens": ["ACME", "co"]},
    ),
]


def _task_file(directory: Path, task: str) -> Path:
    return next(
        p
        for p in directory.glob("*.yaml")
        if yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader).get("task") == task
    )


@pytest.mark.parametrize("ours, upstream, doc", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_lmms_eval_variant_is_lmms_evals_own_task(ours, upstream, doc, rendered, monkeypatch):
    """Prompt and generation settings of our task with --prompt_variant lmms_eval = lmms-eval's task's."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # lmms-eval's mmvet module builds a client at import
    path = _task_file(rendered["lmms_eval"], ours)
    assert _prompt(path, doc) == _prompt(UPSTREAM / upstream, doc)
    assert _load(path)["generation_kwargs"] == _load(UPSTREAM / upstream).get("generation_kwargs")


@pytest.mark.parametrize("ours, upstream, doc", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_llava_variant_is_the_shipped_default(ours, upstream, doc, rendered):
    """The shipped YAMLs already hold llava_v15 (so plain `lmms_eval --include_path` gets LLaVA's protocol),
    and rendering that variant changes nothing but the data paths."""
    shipped, path = _load(_task_file(OURS, ours)), _load(_task_file(rendered["llava_v15"], ours))
    benchmark = shipped["lmms_eval_specific_kwargs"]["default"]["benchmark"]
    assert {k: v for k, v in path.items() if k != "dataset_kwargs"} == {
        k: v for k, v in shipped.items() if k != "dataset_kwargs"
    }
    assert shipped["generation_kwargs"] == prompts.protocol(benchmark).generation_kwargs
    assert _prompt(_task_file(OURS, ours), doc) == prompts.render(benchmark, doc)
    scorer = prompts.protocol(benchmark).process_results
    assert scorer is None or str(shipped["process_results"]).endswith(f".{scorer}")


def test_variants_switch_the_scoring_where_they_differ(rendered):
    for task, llava, lmms in [
        ("basic_gqa", "gqa_process_results", "gqa_process_results_lmms_eval"),
        ("mini_sqa_img", "sqa_process_results", "sqa_process_results_lmms_eval"),
    ]:
        assert str(_load(_task_file(rendered["llava_v15"], task))["process_results"]).endswith("." + llava)
        assert str(_load(_task_file(rendered["lmms_eval"], task))["process_results"]).endswith("." + lmms)
    # a task whose template leaves process_results to it keeps its own (MM-Vet: the judge)
    assert str(_load(_task_file(rendered["lmms_eval"], "mini_mmvet"))["process_results"]).endswith("_rule")


def test_render_points_data_files_at_the_data_root(tmp_path):
    tasks = render_tasks(tmp_path / "data", tmp_path / "tasks")
    files = task_data_files(tasks, "mini_mmb_cn")
    assert files == [(tmp_path / "data" / "benchmarks" / "mmb_cn" / "dev.parquet").resolve()]
    assert task_data_files(tasks, "basic_mmvet") == []  # hub dataset
    rendered = yaml.load((tasks / "mini_vqav2.yaml").read_text(encoding="utf-8"), Loader=_Loader)
    shipped = yaml.load((OURS / "mini_vqav2.yaml").read_text(encoding="utf-8"), Loader=_Loader)
    assert rendered == {**shipped, "dataset_kwargs": rendered["dataset_kwargs"]}
    assert type(rendered["process_results"]).__name__ == "_Function"  # still a !function tag
    assert {p.name for p in tasks.glob("*.yaml")} == {p.name for p in OURS.glob("*.yaml")}


def test_benchmark_map_covers_the_paper_and_is_consistent():
    for profile in ("mini", "full"):
        entries = benchmark_map(profile)
        assert set(PAPER_BENCHMARKS) <= set(entries)
    full = benchmark_map("full")
    assert {n for n, b in full.items() if b.scored_by == "server"} == {
        "vqav2",
        "vizwiz",
        "mmb_en_test",
        "mmb_cn_test",
    }
    assert full["mmvet"].judge == "llm" and benchmark_map("mini")["mmvet"].judge == "rule"
    # every paper benchmark runs one of our tasks (so its prompt comes from basic.eval.prompts)
    assert all(full[b].task.startswith("basic_") for b in PAPER_BENCHMARKS)
    assert full["vqav2"].task == "basic_vqav2_testdev" and full["vqav2"].paper_split == "test-dev"
    assert {"pope", "mme"} <= set(full)
    # every task of the map that is ours exists as a shipped YAML
    ours = {yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader).get("task") for p in OURS.glob("*.yaml")}
    for profile in ("mini", "full"):
        for b in benchmark_map(profile).values():
            if b.task.startswith(("mini_", "basic_")):
                assert b.task in ours, b.task
                assert b.name not in PAPER_BENCHMARKS or b.task.startswith(("mini_", "basic_"))
            else:  # lmms-eval's own task: its YAML must exist in the installed lmms-eval
                assert any(
                    f"task: {b.task}" in p.read_text(encoding="utf-8").replace('"', "")
                    for p in UPSTREAM.rglob("*.yaml")
                ), b.task


def test_benchmark_selection_errors():
    assert [b.name for b in select("mini", ["gqa", "vqav2"])] == ["gqa", "vqav2"]
    with pytest.raises(ValueError, match="pope"):
        select("mini", ["pope"])
    with pytest.raises(ValueError, match="profile"):
        benchmark_map("huge")
    with pytest.raises(ValueError, match="submission"):
        Benchmark(name="x", task="t", split="s", scored_by="server")


def test_the_documented_map_matches_the_shipped_one():
    doc = (Path(__file__).parents[1] / "docs" / "evaluation.md").read_text(encoding="utf-8")
    rows = [line for line in doc.splitlines() if line.startswith("| ") and "`" in line]
    for profile in ("mini", "full"):
        for b in benchmark_map(profile).values():
            row = next((r for r in rows if f"`{b.task}`" in r), None)
            assert row is not None, f"docs/evaluation.md has no row for {b.task}"
            if profile == "full":
                assert b.split in row and b.scored_by in row, row
