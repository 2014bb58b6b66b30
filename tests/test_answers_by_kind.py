"""benchmarks/answers_by_kind.py: per-question-kind scores with the image and blind, from lmms-eval's sample logs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("answers_by_kind", ROOT / "benchmarks" / "answers_by_kind.py")
answers_by_kind = importlib.util.module_from_spec(spec)
sys.modules["answers_by_kind"] = answers_by_kind
spec.loader.exec_module(answers_by_kind)


def _record(doc_id: int, question: str, answer: str, metric: dict) -> dict:
    return {
        "doc_id": doc_id,
        "doc_hash": "h",
        "target": "t",
        "filtered_resps": answer,
        "token_counts": [None],
        "input": question,
        **metric,
    }


def test_each_benchmark_metric_is_read():
    assert answers_by_kind.score(_record(0, "q", "a", {"exact_match": 1.0})) == 1.0
    assert answers_by_kind.score(_record(0, "q", "a", {"vqa_accuracy": 0.3})) == 0.3
    assert (
        answers_by_kind.score(_record(0, "q", "a", {"judge_score": {"score": 0.5, "judge": "rule"}})) == 0.5
    )
    mmb = {"circular_accuracy": {"index": 0, "answer": "A", "pred": "B"}}
    assert answers_by_kind.score(_record(0, "q", "B", mmb)) == 0.0


def test_kinds_are_the_question_lines_first_words():
    assert (
        answers_by_kind.kind("What color is the circle?\nAnswer the question using a single word.")
        == "What color"
    )
    assert (
        answers_by_kind.kind("The image is divided into a 3 by 3 grid.\nWhere is the star?\nA. top")
        == "Where is"
    )
    assert answers_by_kind.kind("正方形在哪里？\nA. 上") == "在哪里？"


def test_scores_by_kind_with_and_without_the_image(tmp_path):
    seen = [
        _record(i, f"{q}\nAnswer.", a, {"exact_match": m})
        for i, (q, a, m) in enumerate(
            [
                ("What color is it?", "red", 1.0),
                ("What color is it?", "blue", 0.0),
                ("Is there a star?", "no", 1.0),
            ]
        )
    ]
    blind = [_record(i, r["input"], "no", {"exact_match": 0.0 if i < 2 else 1.0}) for i, r in enumerate(seen)]
    for name, rows in (("lmms_eval", seen), ("lmms_eval_blind", blind)):
        folder = tmp_path / "evaluate" / name / "run"
        folder.mkdir(parents=True)
        (folder / "20260101_000000_samples_mini_gqa.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows)
        )
    logs = answers_by_kind.samples(tmp_path / "evaluate" / "lmms_eval")
    blind_logs = answers_by_kind.samples(tmp_path / "evaluate" / "lmms_eval_blind")
    kinds = answers_by_kind.by_kind(logs["mini_gqa"], blind_logs["mini_gqa"])
    assert list(kinds) == ["What color", "Is there"]  # the larger group first
    assert kinds["What color"]["score"] == 50.0 and kinds["What color"]["blind_score"] == 0.0
    assert kinds["Is there"] == {"n": 1, "score": 100.0, "blind_score": 100.0, "top_answers": [("no", 1)]}
