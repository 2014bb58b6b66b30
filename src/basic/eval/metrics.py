"""The benchmarks' scoring rules as pure functions: VQA accuracy, option-letter extraction, circular evaluation.

Each follows the rule its real benchmark is scored by, so the mini benchmarks and the full study measure the
same thing:
- `vqa_accuracy`: VQAv2 / VizWiz / TextVQA accuracy over ten human answers, min(1, matches / 3) averaged over
  the ten leave-one-out subsets, after the EvalAI answer normalisation (lmms-eval's `EvalAIAnswerProcessor`,
  the processor the EvalAI servers and LLaVA's submission scripts use).
- `sqa_letter`: ScienceQA's option letter as LLaVA's `eval_science_qa.py` parses it ("B", "B. text",
  "The answer is B."); anything else is wrong (never a random guess).
- `mmbench_letter`: MMBench's rule-based matching (`can_infer`: a single option letter in the answer, else a
  single option whose text appears in it); `None` means the rule cannot decide.
- `circular_accuracy`: MMBench's CircularEval: a question counts only if every rotation of its options
  (rows `index + k * 1_000_000`) is answered correctly.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping

from lmms_eval.tasks._task_utils.vqa_eval_metric import EvalAIAnswerProcessor

CIRCULAR_OFFSET = 1_000_000
_normalise = EvalAIAnswerProcessor()


def normalise_answer(text: str) -> str:
    """EvalAI's VQA answer normalisation: lower case, punctuation, number words, articles, contractions."""
    return _normalise(text)


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA accuracy of `prediction` against the human `answers` (ten for VQAv2/VizWiz/TextVQA), in [0, 1]."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one reference answer")
    pred = normalise_answer(prediction)
    refs = [normalise_answer(a) for a in answers]
    return statistics.mean(
        min(1.0, sum(ref == pred for j, ref in enumerate(refs) if j != i) / 3) for i in range(len(refs)))


def sqa_letter(prediction: str, n_choices: int) -> str | None:
    """The option letter a ScienceQA answer gives, parsed as LLaVA does; None when it gives none."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n_choices]
    text = prediction.strip()
    if text in letters:
        return text
    if len(text) >= 3 and text[0] in letters and text[1:3] == ". ":
        return text[0]
    found = re.findall(r"The answer is ([A-Z])\.", text)
    if len(found) == 1 and found[0] in letters:
        return found[0]
    return None


_LETTER_FORMS = [("", ""), ("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."),
                 (":", ""), (":", ","), (":", "."), (":", ")"), (":", ").")]


def mmbench_letter(prediction: str, options: Mapping[str, str]) -> str | None:
    """MMBench's rule-based answer matching; `options` maps letters to option texts. None: undecided."""
    words = prediction.split()
    letters = "ABCDE"
    for prefix, suffix in _LETTER_FORMS:
        hits = [c for c in letters if prefix + c + suffix in words]
        # A bare "A" in a longer answer may be the article, as MMBench's own rule assumes.
        if len(hits) == 1 and not (prefix == suffix == "" and "A" in words and len(words) > 3):
            return hits[0]
    lowered = prediction.lower()
    hits = [k for k, text in options.items() if str(text).lower() in lowered]
    return hits[0] if len(hits) == 1 else None


def circular_accuracy(records: Iterable[Mapping]) -> float:
    """CircularEval accuracy in [0, 1] over records with `index`, `answer` (letter) and `pred` (letter or None)."""
    groups: dict[int, bool] = {}
    for r in records:
        key = int(r["index"]) % CIRCULAR_OFFSET
        groups[key] = groups.get(key, True) and r["pred"] == r["answer"]
    if not groups:
        raise ValueError("circular accuracy of no records")
    return sum(groups.values()) / len(groups)
