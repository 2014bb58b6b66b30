"""`basic.eval.prompts`: LLaVA-1.5's prompts character for character, EvalAI's answer normalisation, and the
submission files of the server-scored benchmarks.

The expected `llava_v15` strings are written here from LLaVA-1.5's evaluation scripts and the question files
of its eval.zip (docs/evaluation.md cites the file and line of each); the `lmms_eval` variant is compared
with lmms-eval's own task functions in tests/test_eval_tasks.py.
"""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import pandas as pd
import pytest

from basic.eval import metrics, prompts, submissions
from basic.eval.tasks import utils

SHORT = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."

# (benchmark, doc, LLaVA-1.5's text after "<image>\n")
LLAVA_CASES = [
    # VQAv2: llava_vqav2_mscoco_test-dev2015.jsonl, question 262144000
    (
        "vqav2",
        {"question": "Is the ball flying towards the batter?"},
        "Is the ball flying towards the batter?\nAnswer the question using a single word or phrase.",
    ),
    # GQA: llava_gqa_testdev_balanced.jsonl, line 1
    ("gqa", {"question": "Is it overcast?", "answer": "no"}, "Is it overcast?" + SHORT),
    # VizWiz: llava_test.jsonl, line 1 (questions capitalised by str.capitalize: no capital after the first letter)
    (
        "vizwiz",
        {"question": "what is this? and what color is it?"},
        (
            "What is this? and what color is it?\nWhen the provided information is insufficient, respond with "
            "'Unanswerable'.\nAnswer the question using a single word or phrase."
        ),
    ),
    (
        "vizwiz",
        {"question": "Can you tell me what THIS is?"},
        "Can you tell me what this is?\nWhen the provided information is insufficient, respond with "
        "'Unanswerable'." + SHORT,
    ),
    # TextVQA: llava_textvqa_val_v051_ocr.jsonl, lines 1 and 37 (no OCR token: the line ends in ": ")
    (
        "textvqa",
        {
            "question": "what is the brand of this camera?",
            "ocr_tokens": ["DAKOTA", "DIGITAL", "Single-Use", "Camera", "Pire", "digitat"],
        },
        "What is the brand of this camera?\nReference OCR token: DAKOTA, DIGITAL, Single-Use, Camera, Pire, digitat"
        + SHORT,
    ),
    (
        "textvqa",
        {"question": "whats the lowest number yard line that you can see?", "ocr_tokens": []},
        "Whats the lowest number yard line that you can see?\nReference OCR token: " + SHORT,
    ),
    # ScienceQA: llava_test_CQM-A.json, ids 46 (a hint) and 11 (none), + model_vqa_science.py's suffix
    (
        "sqa_img",
        {
            "question": "Which property do these three objects have in common?",
            "hint": "Select the best answer.",
            "choices": ["shiny", "slippery", "opaque"],
            "answer": 2,
        },
        "Context: Select the best answer.\nWhich property do these three objects have in common?\nA. shiny\n"
        "B. slippery\nC. opaque" + LETTER,
    ),
    (
        "sqa_img",
        {
            "question": "What is the name of the colony shown?",
            "hint": "",
            "choices": ["Maryland", "New Hampshire", "Rhode Island", "Vermont"],
            "answer": 1,
        },
        "What is the name of the colony shown?\nA. Maryland\nB. New Hampshire\nC. Rhode Island\nD. Vermont"
        + LETTER,
    ),
    # MMBench-EN: LLaVA-1.5's dev answers (mmbench_dev_20230712), indices 295 (a hint, two options) and 221
    # (no hint), + model_vqa_mmbench.py's suffix
    (
        "mmb_en",
        {
            "index": 295,
            "question": "Which property do these two objects have in common?",
            "hint": "Select the better answer.",
            "A": "yellow",
            "B": "salty",
            "C": float("nan"),
            "D": float("nan"),
            "answer": "B",
        },
        "Select the better answer.\nWhich property do these two objects have in common?\nA. yellow\nB. salty"
        + LETTER,
    ),
    (
        "mmb_en",
        {
            "index": 221,
            "question": "What is the capital of North Carolina?",
            "hint": float("nan"),
            "A": "Baton Rouge",
            "B": "Charlotte",
            "C": "Nashville",
            "D": "Raleigh",
            "answer": "D",
        },
        "What is the capital of North Carolina?\nA. Baton Rouge\nB. Charlotte\nC. Nashville\nD. Raleigh"
        + LETTER,
    ),
    # options stop at the first missing one; "nan" / "None" strings and None are missing too
    (
        "mmb_en",
        {"question": "Q?", "hint": "None", "A": "a", "B": "b", "C": None, "D": "d"},
        "Q?\nA. a\nB. b" + LETTER,
    ),
    (
        "mmb_en",
        {"question": "Q?", "hint": "nan", "A": "a", "B": "NaN", "C": "c", "D": "d", "E": "e"},
        "Q?\nA. a" + LETTER,
    ),
    # MMBench-CN: the same layout, model_vqa_mmbench.py's --lang cn suffix
    (
        "mmb_cn",
        {"question": "图中是什么颜色?", "hint": "仔细看。", "A": "红", "B": "蓝", "C": "绿", "D": "黄"},
        "仔细看。\n图中是什么颜色?\nA. 红\nB. 蓝\nC. 绿\nD. 黄\n请直接回答选项字母。",
    ),
    # MM-Vet: llava-mm-vet.jsonl, question 0: the bare question
    (
        "mmvet",
        {"question": "What is x in the equation?", "answer": "-1<AND>-5"},
        "What is x in the equation?",
    ),
]


@pytest.mark.parametrize(
    "benchmark, doc, expected", LLAVA_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(LLAVA_CASES)]
)
def test_llava_v15_prompts_are_llavas(benchmark, doc, expected):
    assert prompts.render(benchmark, doc) == expected
    assert prompts.render(benchmark, doc, "llava_v15") == expected
    # the task function the YAMLs name builds the same text
    assert utils.doc_to_text(doc, {"benchmark": benchmark, "variant": "llava_v15"}) == expected


def test_every_benchmark_has_both_variants_and_they_differ_where_lmms_eval_differs():
    docs = {b: d for b, d, _ in LLAVA_CASES}
    same = {
        b for b in prompts.BENCHMARKS if prompts.render(b, docs[b]) == prompts.render(b, docs[b], "lmms_eval")
    }
    # These differ in token budget (and VQAv2 in split, GQA and ScienceQA in answer parsing) only; ScienceQA's
    # texts differ only at their ends, which LLaVA strips, and for a missing (None) hint.
    assert same == {"vqav2", "gqa", "vizwiz", "sqa_img"}
    odd = {"question": " Which? ", "hint": None, "choices": ["x", "y"], "answer": 0}
    assert prompts.render("sqa_img", odd) == "Which? \nA. x\nB. y" + LETTER
    assert prompts.render("sqa_img", odd, "lmms_eval") == "None Which? \nA. x\nB. y" + LETTER
    assert set(docs) == set(prompts.BENCHMARKS)
    with pytest.raises(ValueError, match="prompt variant 'llava'"):
        prompts.render("gqa", docs["gqa"], "llava")
    with pytest.raises(ValueError, match="benchmark 'pope'"):
        prompts.protocol("pope")


def test_image_placeholder_comes_first_in_llavas_conversation():
    """The plugin's chat turn is LLaVA's conv_vicuna_v1 prompt: "<image>\\n" + the rendered text."""
    from basic.data.templates import TEMPLATES
    from basic.eval.plugin import BasicLlava
    from basic.testing.backbones import tiny_tokenizer

    tokenizer = tiny_tokenizer("llama")
    tokenizer.chat_template = TEMPLATES["v1"].jinja
    text = prompts.render("gqa", {"question": "Is it overcast?"})
    turn = BasicLlava._prompt(SimpleNamespace(processor=tokenizer), text, 1)
    assert turn.endswith(
        " USER: <image>\nIs it overcast?\nAnswer the question using a single word or phrase. ASSISTANT:"
    )


def test_llava_decoding_is_greedy_with_its_scripts_token_budgets():
    budgets = {b: prompts.protocol(b).generation_kwargs["max_new_tokens"] for b in prompts.BENCHMARKS}
    assert budgets == {
        "vqav2": 128,
        "gqa": 128,
        "vizwiz": 128,
        "textvqa": 128,
        "sqa_img": 1024,
        "mmb_en": 1024,
        "mmb_cn": 1024,
        "mmvet": 1024,
    }
    for b in prompts.BENCHMARKS:
        kwargs = prompts.protocol(b).generation_kwargs
        assert kwargs["temperature"] == 0 and kwargs["do_sample"] is False and kwargs["num_beams"] == 1
        assert "until" not in kwargs  # LLaVA stops at the end of the turn only


# ---- answer post-processing -----------------------------------------------------------------------------

NORMALISED = [
    ("Two.", "2"),
    ("  The Dog  ", "dog"),
    ("yes!", "yes"),
    ("YES", "yes"),
    ("an apple", "apple"),
    ("A man and the dog", "man and dog"),  # articles
    ("ten", "10"),
    ("none", "0"),
    ("zero people", "0 people"),
    ("eleven", "eleven"),  # number words to ten
    ("dont", "don't"),
    ("isnt it", "isn't it"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),  # contractions
    ("somebody'd", "somebodyd"),  # the reference table's one entry that maps backwards
    ("its", "its"),
    ("shed", "shed"),  # forms that are words stay
    ("man's hat", "man 's hat"),  # "'s" split off
    ("t-shirt", "t shirt"),
    ("x - y", "x y"),
    ("a/b", "b"),
    ("left/right", "left right"),  # punctuation
    ("1,000", "1000"),
    ("red, white", "red white"),
    ("what?", "what"),  # commas and question marks
    ("3.5", "3.5"),
    ("3.", "3"),
    ("e.g. this", "eg this"),  # periods: kept before a digit only
    ("(a) red", "red"),
    ("line\nbreak\tand tab", "line break and tab"),
    ("." * 40, "." * 8),  # at most 32 periods go (the reference passes re.UNICODE as the count)
]


@pytest.mark.parametrize("text, expected", NORMALISED)
def test_answer_normalisation_follows_evalai(text, expected):
    assert metrics.normalise_answer(text) == expected


def test_answer_normalisation_agrees_with_lmms_evals_copy_of_the_processor():
    """lmms-eval ships EvalAI's processor (via MMF); ours, written from its documented behaviour, agrees."""
    from lmms_eval.tasks._task_utils.vqa_eval_metric import EvalAIAnswerProcessor

    reference = EvalAIAnswerProcessor()
    rng = random.Random(0)
    alphabet = "ab .,;:/[]\"{}()=+\\_-><@`?!'s0123456789\n\tAtheTHEnone"
    texts = list(reference.CONTRACTIONS) + list(reference.NUMBER_MAP) + [t for t, _ in NORMALISED]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(5000)]
    assert [metrics.normalise_answer(t) for t in texts] == [reference(t) for t in texts]


def test_gqa_and_scienceqa_post_processing_per_variant():
    assert metrics.gqa_match("Yes.", "yes") and metrics.gqa_match("yes", "yes")
    assert not metrics.gqa_match("t-shirt.", "t shirt")  # LLaVA: only trailing periods and case
    assert metrics.gqa_match_lmms_eval("T-Shirt!", "tshirt")  # lmms-eval: all punctuation and case
    doc = {"choices": ["red", "blue", "green"], "answer": 1}
    for answer, llava, lmms in [
        ("B", 1, 1),
        ("b", 0, 1),
        ("B. blue", 1, 1),
        ("B.", 0, 1),
        ("The answer is B.", 1, 0),
        ("The answer is B,", 1, 0),
        ("D", 0, 0),
        ("blue", 0, 0),
    ]:
        assert utils.sqa_process_results(doc, [answer])["letter_accuracy"] == llava, answer
        assert utils.sqa_process_results_lmms_eval(doc, [answer])["letter_accuracy"] == lmms, answer
    assert utils.gqa_process_results({"answer": "red"}, ["Red."]) == {"exact_match": 1.0}
    assert utils.gqa_process_results_lmms_eval({"answer": "red"}, ["red!"]) == {"exact_match": 1.0}


# ---- submissions ----------------------------------------------------------------------------------------


def test_vqav2_submission_covers_every_test2015_question(tmp_path):
    llava_file = tmp_path / "llava_vqav2_mscoco_test2015.jsonl"
    llava_file.write_text(
        "".join(
            json.dumps({"question_id": q, "image": "x.jpg", "text": "?"}) + "\n"
            for q in (262144000, 262144001, 262144002)
        )
    )
    official = tmp_path / "v2_OpenEnded_mscoco_test2015_questions.json"
    official.write_text(
        json.dumps(
            {
                "questions": [
                    {"question_id": 262144000},
                    {"question_id": 262144001},
                    {"question_id": 262144002},
                ]
            }
        )
    )
    ids = submissions.read_question_ids(llava_file)
    assert ids == submissions.read_question_ids(official) == [262144000, 262144001, 262144002]
    upload = submissions.vqav2_submission({262144002: "Two.", 262144000: "Yes"}, ids)
    assert upload == [
        {"question_id": 262144000, "answer": "yes"},
        {"question_id": 262144001, "answer": ""},
        {"question_id": 262144002, "answer": "2"},
    ]
    with pytest.raises(submissions.SubmissionError, match="not test2015 questions"):
        submissions.vqav2_submission({1: "yes"}, ids)
    with pytest.raises(submissions.SubmissionError, match="test2015 question file missing"):
        submissions.read_question_ids(tmp_path / "nowhere.jsonl")
    assert (
        submissions.vqav2_test2015_file(tmp_path.parent) == tmp_path.parent / "eval/vqav2" / llava_file.name
    )


def test_task_aggregations_write_the_servers_formats(tmp_path, monkeypatch):
    args = SimpleNamespace(output_path=str(tmp_path / "out"))
    questions = tmp_path / "test2015.jsonl"
    questions.write_text("".join(json.dumps({"question_id": q}) + "\n" for q in (7, 8, 9)))
    monkeypatch.setenv(submissions.VQAV2_TEST2015_ENV, str(questions))
    results = [
        utils.vqav2_submission_process_results({"question_id": q}, [a])["submission"]
        for q, a in ((8, "The Dog."), (9, "three"))
    ]
    utils.vqav2_aggregate_submission(results, args)
    upload = json.loads((tmp_path / "out/submissions" / utils.VQAV2_SUBMISSION).read_text())
    assert upload == [
        {"question_id": 7, "answer": ""},
        {"question_id": 8, "answer": "dog"},
        {"question_id": 9, "answer": "3"},
    ]

    records = [
        utils.vizwiz_submission_process_results({"question_id": "VizWiz_test_00000000"}, ["Black."])[
            "submission"
        ]
    ]
    utils.vizwiz_aggregate_submission(records, args)
    assert json.loads((tmp_path / "out/submissions" / utils.VIZWIZ_SUBMISSION).read_text()) == [
        {"image": "VizWiz_test_00000000.jpg", "answer": "black"}
    ]

    doc = {
        "index": 5,
        "question": "Q?",
        "hint": "h",
        "A": "a",
        "B": "b",
        "C": float("nan"),
        "D": float("nan"),
        "category": "c",
        "l2-category": "l",
        "source": "s",
        "comment": None,
        "split": "test",
        "answer": None,
    }
    utils.mmbench_en_aggregate_submission(
        [utils.mmbench_submission_process_results(doc, ["A"])["submission"]], args
    )
    sheet = pd.read_excel(tmp_path / "out/submissions/mmbench_en_test_submission.xlsx")
    assert list(sheet.columns) == ["index", "question", "A", "B", "C", "D", "prediction", "split"]
    row = sheet.iloc[0]
    assert (row["index"], row["question"], row["A"], row["prediction"], row["split"]) == (
        5,
        "Q?",
        "a",
        "A",
        "test",
    )
    assert math.isnan(row["C"])
