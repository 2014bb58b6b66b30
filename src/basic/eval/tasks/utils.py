"""Prompt, scoring and aggregation functions of this project's lmms-eval task YAMLs.

The YAMLs reference them by absolute module path (`!function basic.eval.tasks.utils.<name>`), so a YAML
copied anywhere (as `basic evaluate` does when it points the mini tasks at a data directory) still finds
them. Prompts reproduce lmms-eval's default prompts of the real tasks character for character
(tests/test_eval_tasks.py compares them with lmms-eval's own functions); scores come from `basic.eval.metrics`.
"""

from __future__ import annotations

import math
import statistics
from functools import cache

from PIL import Image

from basic.eval import metrics
from basic.eval.judge import Judge, JudgeError, get_judge

MMBENCH_OPTIONS_HEADER = "There are several options:"  # lmms-eval's mmbench.yaml `sys_prompt`


def _kwargs(lmms_eval_specific_kwargs: dict | None) -> tuple[str, str]:
    kwargs = lmms_eval_specific_kwargs or {}
    return kwargs.get("pre_prompt", ""), kwargs.get("post_prompt", "")


def doc_to_visual(doc: dict) -> list[Image.Image]:
    return [] if doc.get("image") is None else [doc["image"].convert("RGB")]


# ---- VQAv2, GQA, VizWiz, TextVQA ---------------------------------------------------------------------

def question_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """VQAv2 and GQA: pre + question + post."""
    pre, post = _kwargs(lmms_eval_specific_kwargs)
    return f"{pre}{doc['question']}{post}"


def capitalised_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """VizWiz and TextVQA capitalise the question; TextVQA may append the OCR tokens (`ocr: true`)."""
    pre, post = _kwargs(lmms_eval_specific_kwargs)
    ocr = ""
    if (lmms_eval_specific_kwargs or {}).get("ocr"):
        ocr = f"\nReference OCR token: {', '.join(doc['ocr_tokens'])}"
    return f"{pre}{doc['question'].capitalize()}{ocr}{post}"


def vqa_process_results(doc: dict, results: list[str]) -> dict:
    """VQA accuracy over the ten answers (VQAv2 stores them as dicts, VizWiz and TextVQA as strings)."""
    answers = [a["answer"] if isinstance(a, dict) else a for a in doc["answers"]]
    return {"vqa_accuracy": metrics.vqa_accuracy(results[0], answers)}


# ---- ScienceQA-IMG ----------------------------------------------------------------------------------

def sqa_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    pre, post = _kwargs(lmms_eval_specific_kwargs)
    context = f"Context: {doc['hint']}\n" if doc["hint"] else ""
    choices = "\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(doc["choices"]))
    return f"{pre}{context}{doc['question']}\n{choices}{post}"


def sqa_doc_to_target(doc: dict) -> str:
    return chr(ord("A") + int(doc["answer"]))


def sqa_process_results(doc: dict, results: list[str]) -> dict:
    return {"letter_accuracy": float(metrics.sqa_letter(results[0], len(doc["choices"])) == sqa_doc_to_target(doc))}


# ---- MMBench (EN and CN) ----------------------------------------------------------------------------

def _options(doc: dict) -> dict[str, str]:
    return {c: doc[c] for c in "ABCDE" if _present(doc.get(c))}


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value not in ("", "nan")


def mmbench_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """`{hint} {question} {options}` + "\\n" + post prompt, as lmms-eval's MMBench tasks build it."""
    options = "\n".join([MMBENCH_OPTIONS_HEADER] + [f"{k}. {v}" for k, v in _options(doc).items()])
    query = f"{doc['hint']} {doc['question']} {options}" if _present(doc.get("hint")) else f"{doc['question']} {options}"
    if lmms_eval_specific_kwargs:
        query = f"{query}\n{lmms_eval_specific_kwargs['post_prompt']}"
    return query


def mmbench_process_results(doc: dict, results: list[str]) -> dict:
    pred = metrics.mmbench_letter(results[0], _options(doc))
    return {"circular_accuracy": {"index": int(doc["index"]), "answer": doc["answer"], "pred": pred,
                                  "category": doc.get("category")}}


def mmbench_aggregate(records: list[dict]) -> float:
    return 100 * metrics.circular_accuracy(records)


# ---- MM-Vet ----------------------------------------------------------------------------------------

@cache
def _judge(name: str) -> Judge:
    return get_judge(name)


def _mmvet_result(doc: dict, prediction: str, judge: Judge) -> dict:
    try:
        score, error = judge.score(doc["question"], doc["answer"], prediction), None
    except JudgeError as reason:  # NaN, not None: lmms-eval computes a standard error over the "score" fields
        score, error = float("nan"), str(reason)
    return {"judge_score": {"question_id": doc["question_id"], "capability": doc["capability"], "score": score,
                            "judge": judge.name, "error": error}}


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
