"""Scoring rules against hand-computed cases, and the judges (an unreachable judge gives `unscored`)."""

from __future__ import annotations

import math

import pytest

from basic.distributed import free_port
from basic.eval import metrics
from basic.eval.judge import JudgeError, LLMJudge, RuleJudge, get_judge, mmvet_query
from basic.eval.tasks import utils


def test_answer_normalisation_follows_evalai():
    assert metrics.normalise_answer("Two.") == "2"
    assert metrics.normalise_answer("  The Dog  ") == "dog"  # articles dropped, case folded
    assert metrics.normalise_answer("dont") == "don't"  # contractions restored
    assert metrics.normalise_answer("yes!") == "yes"


def test_vqa_accuracy_over_ten_answers():
    # 3 annotators said "2", 7 said "three": leave-one-out over the ten answers.
    answers = ["2"] * 3 + ["three"] * 7
    # "Two." normalises to "2": for the three "2" rows 2 others match (2/3), for the seven others 3 match (1).
    assert metrics.vqa_accuracy("Two.", answers) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    # "three": 6 other matches for its own rows (capped at 1), 7 for the "2" rows -> 1.0.
    assert metrics.vqa_accuracy("three", answers) == pytest.approx(1.0)
    # one annotator only: 0 matches when that row is left out, 1/3 for the nine other rows.
    assert metrics.vqa_accuracy("cat", ["cat"] + ["dog"] * 9) == pytest.approx(9 * (1 / 3) / 10)
    assert metrics.vqa_accuracy("bird", ["cat"] * 10) == 0.0
    with pytest.raises(ValueError):
        metrics.vqa_accuracy("x", [])


def test_sqa_letter_parsing_as_llava():
    assert metrics.sqa_letter("B", 3) == "B"
    assert metrics.sqa_letter("B. a red circle", 3) == "B"
    assert metrics.sqa_letter("The answer is C.", 3) == "C"
    assert metrics.sqa_letter("D", 3) is None  # not one of the three options
    assert metrics.sqa_letter("I think it is blue", 3) is None  # never a random guess


def test_mmbench_letter_matching():
    options = {"A": "red circle", "B": "blue square", "C": "green triangle", "D": "yellow star"}
    assert metrics.mmbench_letter("B", options) == "B"
    assert metrics.mmbench_letter("(C) green triangle", options) == "C"
    assert metrics.mmbench_letter("The answer is D.", options) == "D"
    assert metrics.mmbench_letter("It is a blue square.", options) == "B"  # unique option text
    assert metrics.mmbench_letter("A or B", options) is None  # two letters: undecided
    # "A" in a longer sentence may be the article; the option text decides instead.
    assert metrics.mmbench_letter("A shape that is a yellow star", options) == "D"
    assert metrics.mmbench_letter("no idea", options) is None


def test_circular_evaluation_needs_every_rotation():
    records = [
        # question 0: all four rotations right -> counts
        *({"index": 0 + k * 1_000_000, "answer": "ABCD"[k], "pred": "ABCD"[k]} for k in range(4)),
        # question 1: one rotation wrong -> does not count
        *({"index": 1 + k * 1_000_000, "answer": "A", "pred": "A" if k != 2 else "B"} for k in range(4)),
        # question 2: undecidable answer in one rotation -> does not count
        {"index": 2, "answer": "C", "pred": "C"},
        {"index": 1_000_002, "answer": "D", "pred": None},
        # question 3: no circular copies, right
        {"index": 3, "answer": "B", "pred": "B"},
    ]
    assert metrics.circular_accuracy(records) == pytest.approx(2 / 4)
    assert utils.mmbench_aggregate(records) == pytest.approx(50.0)


def test_rule_judge_scores_mmvet_syntax():
    judge = RuleJudge()
    assert judge.score("q", "red", "It is Red.") == 1.0
    assert judge.score("q", "red", "bored") == 0.0  # whole words only
    assert judge.score("q", "-1<AND>-5", "x = -5") == 0.5
    assert judge.score("q", "cat<AND>dog", "a dog and a cat") == 1.0
    assert judge.score("q", "cat<OR>dog", "a dog") == 1.0
    assert get_judge("rule").name == "rule"
    with pytest.raises(ValueError):
        get_judge("gpt5")


def test_unreachable_llm_judge_gives_unscored_not_zero(monkeypatch):
    monkeypatch.setenv("API_TYPE", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_API_URL", f"http://127.0.0.1:{free_port()}/v1")
    judge = LLMJudge(retries=1)
    reason = judge.check()
    assert reason and "unreachable" in reason
    with pytest.raises(JudgeError, match="unreachable"):  # later samples fail at once, same reason
        judge.score("q", "red", "red")

    doc = {"question_id": "v1_0", "capability": "rec", "question": "q", "answer": "red"}
    record = utils._mmvet_result(doc, "red", judge)["judge_score"]
    assert math.isnan(record["score"]) and "unreachable" in record["error"]
    assert math.isnan(utils.mmvet_aggregate([record, {**record, "score": 1.0, "error": None}]))


def test_llm_judge_without_key_is_unavailable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("API_TYPE", "openai")
    assert "unreachable" in LLMJudge(retries=1).check()


def test_mmvet_aggregate_and_query():
    records = [{"score": 1.0}, {"score": 0.5}, {"score": 0.0}, {"score": 0.5}]
    assert utils.mmvet_aggregate(records) == pytest.approx(50.0)
    query = mmvet_query("What is x?", "-1<AND>-5", "x = -1")
    assert query.endswith("\nWhat is x? | -1 <AND> -5 | x = -1 |")


def test_grader_prompt_is_lmms_evals(monkeypatch):
    # lmms-eval's mmvet module builds its judge client at import, which needs a key (no request is sent).
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("API_TYPE", "openai")
    upstream = pytest.importorskip("lmms_eval.tasks.mmvet.utils")
    from basic.eval.judge import MM_VET_PROMPT

    assert MM_VET_PROMPT == upstream.MM_VET_PROMPT
