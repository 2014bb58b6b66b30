"""Prompt, scoring, aggregation and submission functions of this project's lmms-eval task YAMLs.

The YAMLs reference them by absolute module path (`!function basic.eval.tasks.utils.<name>`), so a YAML
copied anywhere (as `basic evaluate` does when it writes the prompt variant and the data paths in) still finds
them. Every prompt comes from `basic.eval.prompts.render`, with the benchmark and the variant the YAML's
`lmms_eval_specific_kwargs` name; scores come from `basic.eval.metrics`, submission files from
`basic.eval.submissions` (written under lmms-eval's `<output_path>/submissions/`).
"""

from __future__ import annotations

import math
import statistics
from functools import cache

from PIL import Image

from basic.eval import metrics, prompts, submissions
from basic.eval.judge import Judge, JudgeError, get_judge

VQAV2_SUBMISSION = "vqav2_test-dev2015_submission.json"
VIZWIZ_SUBMISSION = "vizwiz_test_submission.json"
MMBENCH_SUBMISSION = "mmbench_{lang}_test_submission.xlsx"


def doc_to_visual(doc: dict) -> list[Image.Image]:
    return [] if doc.get("image") is None else [doc["image"].convert("RGB")]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The prompt of `doc`: `benchmark` and `variant` come from the task's lmms_eval_specific_kwargs."""
    kwargs = lmms_eval_specific_kwargs or {}
    if "benchmark" not in kwargs:
        raise ValueError(f"task YAML: lmms_eval_specific_kwargs names no benchmark ({kwargs})")
    return prompts.render(kwargs["benchmark"], doc, kwargs.get("variant", prompts.DEFAULT_VARIANT))


def _submission_path(file_name: str, args) -> str:
    from lmms_eval.tasks._task_utils.file_utils import generate_submission_file

    return generate_submission_file(file_name, args)


# ---- VQAv2, VizWiz, TextVQA ---------------------------------------------------------------------------


def vqa_process_results(doc: dict, results: list[str]) -> dict:
    """VQA accuracy over the ten answers (VQAv2 stores them as dicts, VizWiz and TextVQA as strings)."""
    answers = [a["answer"] if isinstance(a, dict) else a for a in doc["answers"]]
    return {"vqa_accuracy": metrics.vqa_accuracy(results[0], answers)}


def vqav2_submission_process_results(doc: dict, results: list[str]) -> dict:
    return {"submission": {"question_id": int(doc["question_id"]), "answer": results[0]}}


def vqav2_aggregate_submission(results: list[dict], args) -> None:
    """The EvalAI upload: every test2015 question, test-dev answers normalised, "" for the others."""
    answers = {r["question_id"]: r["answer"] for r in results}
    payload = submissions.vqav2_submission(answers, submissions.test2015_ids_from_env())
    submissions.write_json(_submission_path(VQAV2_SUBMISSION, args), payload)


def vizwiz_submission_process_results(doc: dict, results: list[str]) -> dict:
    return {"submission": {"image": f"{doc['question_id']}.jpg", "answer": results[0]}}


def vizwiz_aggregate_submission(results: list[dict], args) -> None:
    submissions.write_json(_submission_path(VIZWIZ_SUBMISSION, args), submissions.vizwiz_submission(results))


# ---- GQA ------------------------------------------------------------------------------------------------


def gqa_process_results(doc: dict, results: list[str]) -> dict:
    """LLaVA-1.5: trailing periods stripped and lower case, then GQA's exact match."""
    return {"exact_match": float(metrics.gqa_match(results[0], doc["answer"]))}


def gqa_process_results_lmms_eval(doc: dict, results: list[str]) -> dict:
    """lmms-eval: exact match with case and punctuation ignored."""
    return {"exact_match": float(metrics.gqa_match_lmms_eval(results[0], doc["answer"]))}


# ---- ScienceQA-IMG ----------------------------------------------------------------------------------


def sqa_doc_to_target(doc: dict) -> str:
    return chr(ord("A") + int(doc["answer"]))


def sqa_process_results(doc: dict, results: list[str]) -> dict:
    """LLaVA-1.5's eval_science_qa.py parse."""
    return {
        "letter_accuracy": float(
            metrics.sqa_letter(results[0], len(doc["choices"])) == sqa_doc_to_target(doc)
        )
    }


def sqa_process_results_lmms_eval(doc: dict, results: list[str]) -> dict:
    """lmms-eval's scienceqa parse."""
    letter = metrics.sqa_letter_lmms_eval(results[0], len(doc["choices"]))
    return {"letter_accuracy": float(letter == sqa_doc_to_target(doc))}


# ---- MMBench (EN and CN) ----------------------------------------------------------------------------


def _options(doc: dict) -> dict[str, str]:
    return {c: doc[c] for c in "ABCDE" if _present(doc.get(c))}


def _present(value) -> bool:
    return (
        value is not None
        and not (isinstance(value, float) and math.isnan(value))
        and value not in ("", "nan")
    )


def mmbench_process_results(doc: dict, results: list[str]) -> dict:
    pred = metrics.mmbench_letter(results[0], _options(doc))
    return {
        "circular_accuracy": {
            "index": int(doc["index"]),
            "answer": doc["answer"],
            "pred": pred,
            "category": doc.get("category"),
        }
    }


def mmbench_aggregate(records: list[dict]) -> float:
    return 100 * metrics.circular_accuracy(records)


def mmbench_submission_process_results(doc: dict, results: list[str]) -> dict:
    record = {c: doc.get(c) for c in (*submissions.MMBENCH_COLUMNS, "answer", "split")}
    return {"submission": {**record, "index": int(doc["index"]), "prediction": results[0]}}


def _mmbench_aggregate_submission(results: list[dict], args, lang: str) -> None:
    path = _submission_path(MMBENCH_SUBMISSION.format(lang=lang), args)
    submissions.mmbench_submission(results).to_excel(path, index=False, engine="openpyxl")


def mmbench_en_aggregate_submission(results: list[dict], args) -> None:
    _mmbench_aggregate_submission(results, args, "en")


def mmbench_cn_aggregate_submission(results: list[dict], args) -> None:
    _mmbench_aggregate_submission(results, args, "cn")


# ---- MM-Vet ----------------------------------------------------------------------------------------


@cache
def _judge(name: str) -> Judge:
    return get_judge(name)


def _mmvet_result(doc: dict, prediction: str, judge: Judge) -> dict:
    try:
        score, error = judge.score(doc["question"], doc["answer"], prediction), None
    except JudgeError as reason:  # NaN, not None: lmms-eval computes a standard error over the "score" fields
        score, error = float("nan"), str(reason)
    return {
        "judge_score": {
            "question_id": doc["question_id"],
            "capability": doc["capability"],
            "score": score,
            "judge": judge.name,
            "error": error,
        }
    }


def mmvet_process_results_rule(doc: dict, results: list[str]) -> dict:
    return _mmvet_result(doc, results[0], _judge("rule"))


def mmvet_process_results_llm(doc: dict, results: list[str]) -> dict:
    return _mmvet_result(doc, results[0], _judge("llm"))


def mmvet_aggregate(records: list[dict]) -> float:
    """Mean judge score x 100; NaN when any sample went unjudged (the benchmark is then unscored, not 0)."""
    scores = [r["score"] for r in records]
    if any(math.isnan(s) for s in scores):
        return float("nan")
    return 100 * statistics.mean(scores)
