"""Submission files of the server-scored benchmarks, in the formats LLaVA-1.5 uploads.

- VQAv2 (EvalAI VQA Challenge, test-dev phase): LLaVA-1.5 answers the test-dev questions only and uploads
  one JSON list over *every* test2015 question, `{"question_id", "answer"}`, the answer normalised by EvalAI's
  answer processor and "" for the test2015 questions outside test-dev
  (scripts/convert_vqav2_for_submission.py). The test2015 question ids come from LLaVA's question file
  `llava_vqav2_mscoco_test2015.jsonl` (its eval.zip) or the official `v2_OpenEnded_mscoco_test2015_questions.json`,
  under `<data>/eval/vqav2/` (`basic evaluate` passes the path to lmms-eval as `$BASIC_VQAV2_TEST2015`).
- VizWiz (EvalAI VizWiz VQA): a JSON list `{"image", "answer"}` in question order, answers normalised
  (scripts/convert_vizwiz_for_submission.py).
- MMBench test (OpenCompass server): an .xlsx of the question sheet without hint, category, source, image,
  comment and l2-category, with the raw answer in a `prediction` column after the options
  (scripts/convert_mmbench_for_submission.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from basic.eval.metrics import normalise_answer

VQAV2_TEST2015_ENV = "BASIC_VQAV2_TEST2015"
VQAV2_DIR = Path("eval/vqav2")  # under the data root, LLaVA's playground/data/eval layout
VQAV2_TEST2015_FILES = ("llava_vqav2_mscoco_test2015.jsonl", "v2_OpenEnded_mscoco_test2015_questions.json")
VQAV2_TEST2015_QUESTIONS = 447_793
MMBENCH_COLUMNS = (
    "index",
    "question",
    "A",
    "B",
    "C",
    "D",
)  # then prediction, then answer and split if present


class SubmissionError(RuntimeError):
    """A submission cannot be written as its server expects; the message names the file or question."""


def vqav2_test2015_file(data_root: Path) -> Path:
    """The test2015 question file under `data_root` (the first of VQAV2_TEST2015_FILES that exists)."""
    for name in VQAV2_TEST2015_FILES:
        if (data_root / VQAV2_DIR / name).is_file():
            return data_root / VQAV2_DIR / name
    return data_root / VQAV2_DIR / VQAV2_TEST2015_FILES[0]


def read_question_ids(path: str | Path) -> list[int]:
    """Question ids of a VQAv2 question file: LLaVA's JSON lines or the official `{"questions": [...]}`."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(
            f"{path}: VQAv2 test2015 question file missing; EvalAI wants an answer for every test2015 question. "
            f"Put LLaVA's {VQAV2_TEST2015_FILES[0]} (LLaVA's eval.zip, docs/Evaluation.md) or the official "
            f"{VQAV2_TEST2015_FILES[1]} (visualqa.org, v2_Questions_Test_mscoco.zip) there"
        )
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [int(json.loads(line)["question_id"]) for line in text.splitlines() if line.strip()]
        return [int(q["question_id"]) for q in json.loads(text)["questions"]]
    except (KeyError, TypeError, ValueError) as e:
        raise SubmissionError(f"{path}: not a VQAv2 question file ({type(e).__name__}: {e})") from None


def vqav2_submission(answers: Mapping[int, str], test2015_ids: Iterable[int]) -> list[dict]:
    """One `{"question_id", "answer"}` per test2015 question, in the question file's order: the normalised
    answer where there is one (test-dev), else ""."""
    ids = [int(i) for i in test2015_ids]
    unknown = set(answers) - set(ids)
    if unknown:
        raise SubmissionError(
            f"{len(unknown)} answered questions are not test2015 questions (e.g. "
            f"{sorted(unknown)[:3]}): wrong question file or split"
        )
    return [{"question_id": i, "answer": normalise_answer(answers[i]) if i in answers else ""} for i in ids]


def vizwiz_submission(records: Iterable[Mapping]) -> list[dict]:
    """`{"image", "answer"}` per question, the answer normalised; `records` hold `image` and the raw `answer`."""
    return [{"image": r["image"], "answer": normalise_answer(r["answer"])} for r in records]


def mmbench_submission(records: Iterable[Mapping]):
    """The MMBench upload sheet (a pandas DataFrame): index, question, A-D, prediction (raw), then answer and
    split where the questions carry them."""
    import pandas as pd

    rows = list(records)
    columns = list(MMBENCH_COLUMNS) + ["prediction"]
    columns += [c for c in ("answer", "split") if any(r.get(c) not in (None, "") for r in rows)]
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)


def write_json(path: str | Path, payload) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def test2015_ids_from_env() -> list[int]:
    """The test2015 ids of the file `$BASIC_VQAV2_TEST2015` names (default: under data/full)."""
    default = vqav2_test2015_file(Path("data/full"))
    return read_question_ids(os.environ.get(VQAV2_TEST2015_ENV) or default)
