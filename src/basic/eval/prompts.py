"""Every prompt of the study's benchmarks, built in one place, in two variants.

`render(benchmark, doc, variant)` returns the user-turn text the model gets after the image placeholder
(the chat template puts `<image>\\n` first, as LLaVA does), for a `doc` in the schema of the lmms-lab dataset
lmms-eval reads for that benchmark (the mini benchmarks share those columns). `protocol(benchmark, variant)`
gives the rest of what the variant decides: the generation settings and, where the variants differ, the
function that scores the answers. The task functions of `basic/eval/tasks/` call both, so a variant is one
switch (`basic evaluate --prompt_variant`, `evaluate.prompt_variant` in params.yaml).

- `llava_v15` (the default): LLaVA-1.5's own evaluation, as its scripts and question files build it
  (scripts/v1_5/eval/*.sh, llava/eval/model_vqa_loader.py, model_vqa_mmbench.py, model_vqa_science.py,
  the question files of its eval.zip); docs/evaluation.md cites the file and line behind every string.
- `lmms_eval`: lmms-eval 0.7.3's defaults for the same benchmarks, character for character (a test
  compares them with lmms-eval's own task functions).

Decoding is greedy in both (the `basic_llava` model ignores sampling settings); only the token budget and
stop strings differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

BENCHMARKS = ("vqav2", "gqa", "sqa_img", "mmb_en", "mmb_cn", "mmvet", "vizwiz", "textvqa")
VARIANTS = ("llava_v15", "lmms_eval")
DEFAULT_VARIANT = "llava_v15"

SHORT_ANSWER = "Answer the question using a single word or phrase."
OPTION_LETTER = "Answer with the option's letter from the given choices directly."
OPTION_LETTER_CN = "请直接回答选项字母。"  # LLaVA's --lang cn suffix
UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."
OCR_REFERENCE = "Reference OCR token: "
# lmms-eval's wording where it differs from LLaVA's.
LMMS_OPTION_LETTER_CN = "请直接使用所提供的选项字母作为答案回答。"
LMMS_OPTIONS_HEADER = "There are several options:"  # lmms-eval's mmbench.yaml `sys_prompt`
LMMS_MMVET_PRE_PROMPT = (
    "First please perform reasoning, and think step by step to provide best answer to the "
    "following question: \n\n"
)

# LLaVA's MMBench script offers four options at most and stops at the first missing one.
LLAVA_MMBENCH_OPTIONS = "ABCD"
LMMS_MMBENCH_OPTIONS = "ABCDE"


def _check(benchmark: str, variant: str) -> None:
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown prompt variant {variant!r}; known: {', '.join(VARIANTS)}")


def _letters(choices: list[str]) -> str:
    return "\n".join(f"{chr(ord('A') + i)}. {choice}" for i, choice in enumerate(choices))


# ---- LLaVA-1.5 ----------------------------------------------------------------------------------------


def _llava_missing(value: Any) -> bool:
    """model_vqa_mmbench.py's `is_none`: None, NaN, or the strings 'nan' / 'none' in any case."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.lower() in ("nan", "none")


def _llava_mmbench(doc: dict, suffix: str) -> str:
    text = doc["question"]
    if not _llava_missing(doc.get("hint")):
        text = f"{doc['hint']}\n{text}"
    for letter in LLAVA_MMBENCH_OPTIONS:
        if _llava_missing(doc.get(letter)):
            break
        text += f"\n{letter}. {doc[letter]}"
    return f"{text}\n{suffix}"


def _llava_sqa(doc: dict) -> str:
    # The question file (llava_test_CQM-A.json) holds "Context: {hint}\n" only when there is a hint, then the
    # question and the lettered choices; model_vqa_science.py strips that text and appends the suffix.
    context = f"Context: {doc['hint']}\n" if doc.get("hint") else ""
    return f"{context}{doc['question']}\n{_letters(doc['choices'])}".strip() + f"\n{OPTION_LETTER}"


def _render_llava(benchmark: str, doc: dict) -> str:
    question = doc["question"]
    if benchmark in ("vqav2", "gqa"):
        return f"{question}\n{SHORT_ANSWER}"
    if benchmark == "vizwiz":
        return f"{question.capitalize()}\n{UNANSWERABLE}\n{SHORT_ANSWER}"
    if benchmark == "textvqa":
        return f"{question.capitalize()}\n{OCR_REFERENCE}{', '.join(doc['ocr_tokens'])}\n{SHORT_ANSWER}"
    if benchmark == "sqa_img":
        return _llava_sqa(doc)
    if benchmark == "mmb_en":
        return _llava_mmbench(doc, OPTION_LETTER)
    if benchmark == "mmb_cn":
        return _llava_mmbench(doc, OPTION_LETTER_CN)
    return question  # mmvet: the bare question


# ---- lmms-eval 0.7.3 ----------------------------------------------------------------------------------


def _notna(value: Any) -> bool:
    import pandas as pd  # lmms-eval tests its MMBench fields with pandas.notna

    return bool(pd.notna(value))


def _lmms_mmbench(doc: dict, suffix: str, nan_string_is_missing: bool) -> str:
    # mmbench_evals.create_options_prompt: every present option of A-E (gaps skipped), under a header line.
    options = [LMMS_OPTIONS_HEADER]
    for letter in LMMS_MMBENCH_OPTIONS:
        value = doc.get(letter)
        if value and _notna(value) and value != "nan":
            options.append(f"{letter}. {value}")
    hint = doc.get("hint")
    # The EN task also treats the string "nan" as no hint; the CN task only tests pandas.notna.
    has_hint = _notna(hint) and not (nan_string_is_missing and hint == "nan")
    query = f"{hint} {doc['question']} " if has_hint else f"{doc['question']} "
    return query + "\n".join(options) + f"\n\n{suffix}"


def _render_lmms(benchmark: str, doc: dict) -> str:
    question = doc["question"]
    if benchmark in ("vqav2", "gqa"):
        return f"{question}\n{SHORT_ANSWER}"
    if benchmark == "vizwiz":
        return f"{question.capitalize()}\n{UNANSWERABLE}\n{SHORT_ANSWER}"
    if benchmark == "textvqa":
        return f"{question.capitalize()}\n{SHORT_ANSWER}"  # lmms-eval's default `ocr: false`
    if benchmark == "sqa_img":
        hint = doc["hint"]
        context = f"Context: {hint}\n" if hint else hint  # an empty hint adds nothing
        return f"{context}{question}\n{_letters(doc['choices'])}\n{OPTION_LETTER}"
    if benchmark == "mmb_en":
        return _lmms_mmbench(doc, OPTION_LETTER, nan_string_is_missing=True)
    if benchmark == "mmb_cn":
        return _lmms_mmbench(doc, LMMS_OPTION_LETTER_CN, nan_string_is_missing=False)
    return f"{LMMS_MMVET_PRE_PROMPT}{question}"


def render(benchmark: str, doc: dict, variant: str = DEFAULT_VARIANT) -> str:
    """The user-turn text of `doc` of `benchmark` (after the image placeholder) in `variant`."""
    _check(benchmark, variant)
    return _render_llava(benchmark, doc) if variant == "llava_v15" else _render_lmms(benchmark, doc)


# ---- decoding and scoring -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """What a variant sets besides the prompt, as the task YAML keys `basic evaluate` writes."""

    generation_kwargs: dict = field(default_factory=dict)
    process_results: str | None = None
    """Function of basic.eval.tasks.utils that scores the answers, where the variants score differently."""


def _greedy(max_new_tokens: int) -> dict:
    return {"max_new_tokens": max_new_tokens, "temperature": 0, "num_beams": 1, "do_sample": False}


_LMMS_GREEDY = {"temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False}
_PROTOCOLS: dict[tuple[str, str], Protocol] = {
    # model_vqa_loader.py's default --max_new_tokens is 128; model_vqa_science.py, model_vqa_mmbench.py and
    # model_vqa.py (MM-Vet) generate up to 1024 tokens. Every script runs with --temperature 0 (greedy).
    ("vqav2", "llava_v15"): Protocol(_greedy(128)),
    ("gqa", "llava_v15"): Protocol(_greedy(128), "gqa_process_results"),
    ("sqa_img", "llava_v15"): Protocol(_greedy(1024), "sqa_process_results"),
    ("mmb_en", "llava_v15"): Protocol(_greedy(1024)),
    ("mmb_cn", "llava_v15"): Protocol(_greedy(1024)),
    ("mmvet", "llava_v15"): Protocol(_greedy(1024)),
    ("vizwiz", "llava_v15"): Protocol(_greedy(128)),
    ("textvqa", "llava_v15"): Protocol(_greedy(128)),
    # lmms-eval 0.7.3's task YAMLs, as they are.
    ("vqav2", "lmms_eval"): Protocol({"max_new_tokens": 16}),
    ("gqa", "lmms_eval"): Protocol({"max_new_tokens": 16, **_LMMS_GREEDY}, "gqa_process_results_lmms_eval"),
    ("sqa_img", "lmms_eval"): Protocol(
        {"max_new_tokens": 16, "temperature": 0, "do_sample": False}, "sqa_process_results_lmms_eval"
    ),
    ("mmb_en", "lmms_eval"): Protocol({"until": ["ASSISTANT:"], "max_new_tokens": 1024, **_LMMS_GREEDY}),
    ("mmb_cn", "lmms_eval"): Protocol({"max_new_tokens": 256, **_LMMS_GREEDY}),
    ("mmvet", "lmms_eval"): Protocol({"max_new_tokens": 1024, **_LMMS_GREEDY, "temperature": 0.2}),
    ("vizwiz", "lmms_eval"): Protocol({"until": ["ASSISTANT:"]}),
    ("textvqa", "lmms_eval"): Protocol({"until": ["ASSISTANT:"]}),
}


def protocol(benchmark: str, variant: str = DEFAULT_VARIANT) -> Protocol:
    """Generation settings (and the scoring function, where it differs) of `benchmark` in `variant`."""
    _check(benchmark, variant)
    return _PROTOCOLS[(benchmark, variant)]
