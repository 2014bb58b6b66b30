"""The shipped task YAMLs: prompts identical to lmms-eval's own tasks, data paths rendered, the benchmark map."""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path

import pytest
import yaml
from PIL import Image

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
    if not module.startswith("basic."):
        module = f"lmms_eval.tasks.{path.parent.name}.{module}"
    return getattr(importlib.import_module(module), name)


def _prompt(path: Path, doc: dict) -> str:
    config = _load(path)
    return _function(path, config["doc_to_text"])(dict(doc), config["lmms_eval_specific_kwargs"]["default"])


IMAGE = Image.new("RGB", (4, 4))
MMB_DOC = {"index": 3, "question": "Which shape is red?", "hint": "Look closely.", "A": "circle", "B": "square",
           "C": "triangle", "D": "star", "answer": "A", "category": "attr", "L2-category": "perception",
           "l2-category": "perception", "source": "mini", "split": "dev", "image": IMAGE}
CASES = [
    ("mini_vqav2.yaml", "vqav2/vqav2_test.yaml", {"question": "what colour is it?"}),
    ("mini_gqa.yaml", "gqa/gqa.yaml", {"question": "Is the circle red?"}),
    ("mini_sqa_img.yaml", "scienceqa/scienceqa_img.yaml",
     {"question": "Which is a mammal?", "choices": ["cat", "fish", "frog"], "hint": "Animals differ.", "answer": 0}),
    ("mini_sqa_img.yaml", "scienceqa/scienceqa_img.yaml",
     {"question": "Which is a mammal?", "choices": ["cat", "fish"], "hint": "", "answer": 1}),
    ("mini_mmb_en.yaml", "mmbench/mmbench_en_dev.yaml", MMB_DOC),
    ("mini_mmb_en.yaml", "mmbench/mmbench_en_dev.yaml", {**MMB_DOC, "hint": None}),
    ("mini_mmb_cn.yaml", "mmbench/mmbench_cn_dev.yaml", MMB_DOC),
    ("basic_mmbench_en_dev.yaml", "mmbench/mmbench_en_dev.yaml", MMB_DOC),
    ("mini_mmvet.yaml", "mmvet/mmvet.yaml", {"question": "What is written?", "answer": "stop"}),
    ("basic_mmvet.yaml", "mmvet/mmvet.yaml", {"question": "What is written?", "answer": "stop"}),
    ("mini_vizwiz.yaml", "vizwiz_vqa/vizwiz_vqa_test.yaml", {"question": "what is this?"}),
    ("mini_textvqa.yaml", "textvqa/textvqa_val.yaml", {"question": "what does the sign say?", "ocr_tokens": ["STOP"]}),
]


@pytest.mark.parametrize("ours, upstream, doc", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_prompts_match_lmms_eval_tasks(ours, upstream, doc, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # lmms-eval's mmvet module builds a client at import
    assert _prompt(OURS / ours, doc) == _prompt(UPSTREAM / upstream, doc)
    ours_gen, upstream_gen = _load(OURS / ours)["generation_kwargs"], _load(UPSTREAM / upstream).get("generation_kwargs")
    assert ours_gen == upstream_gen


def test_render_points_data_files_at_the_data_root(tmp_path):
    tasks = render_tasks(tmp_path / "data", tmp_path / "tasks")
    files = task_data_files(tasks, "mini_mmb_cn")
    assert files == [(tmp_path / "data" / "benchmarks" / "mmb_cn" / "dev.parquet").resolve()]
    assert task_data_files(tasks, "basic_mmvet") == []  # hub dataset
    rendered = yaml.load((tasks / "mini_vqav2.yaml").read_text(encoding="utf-8"), Loader=_Loader)
    assert rendered == {**_load(OURS / "mini_vqav2.yaml"), "dataset_kwargs": rendered["dataset_kwargs"]}
    assert type(rendered["process_results"]).__name__ == "_Function"  # still a !function tag
    assert {p.name for p in tasks.glob("*.yaml")} == {p.name for p in OURS.glob("*.yaml")}


def test_benchmark_map_covers_the_paper_and_is_consistent():
    for profile in ("mini", "full"):
        entries = benchmark_map(profile)
        assert set(PAPER_BENCHMARKS) <= set(entries)
    full = benchmark_map("full")
    assert {n for n, b in full.items() if b.scored_by == "server"} == {"vqav2", "vizwiz", "mmb_en_test", "mmb_cn_test"}
    assert full["mmvet"].judge == "llm" and benchmark_map("mini")["mmvet"].judge == "rule"
    assert {"pope", "mme"} <= set(full)
    # every task of the map that is ours exists as a shipped YAML
    ours = {yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader).get("task") for p in OURS.glob("*.yaml")}
    for profile in ("mini", "full"):
        for b in benchmark_map(profile).values():
            if b.task.startswith(("mini_", "basic_")):
                assert b.task in ours, b.task
            else:  # lmms-eval's own task: its YAML must exist in the installed lmms-eval
                assert any(f"task: {b.task}" in p.read_text(encoding="utf-8").replace('"', "")
                           for p in UPSTREAM.rglob("*.yaml")), b.task


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
