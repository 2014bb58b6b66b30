"""The eight mini benchmarks, one per benchmark of the paper, over held-out scenes.

Each keeps its real counterpart's question style, answer format, split name and columns (those of the
lmms-lab datasets lmms-eval reads, see docs/interfaces.md), and is written with `datasets` as one
parquet file with embedded PNG images plus a dataset card whose `configs:` lets
`datasets.load_dataset(<dir>)` read it offline. Scoring is the evaluation engine's job; here are only
the questions, the reference answers and what the metrics need (ten human answers for the VQA
metric, option letters and circular copies for MMBench, capabilities for MM-Vet).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np

from basic.mini.language import (
    LETTERS,
    NUMBER_WORDS,
    POSITION,
    QA,
    RELATIONS,
    UNANSWERABLE_ANSWER,
    ask,
    colour_word,
    distinct_questions,
    gqa_questions,
    position_phrase,
    ref,
    shape_word,
    unanswerable,
)
from basic.mini.scenes import COLOURS, SHAPES, SIGN_WORDS, Scene, SceneSampler, png_bytes, render, sha256

SPLITS = {
    "vqav2": "testdev",
    "gqa": "testdev",
    "sqa_img": "test",
    "mmb_en": "dev",
    "mmb_cn": "dev",
    "mmvet": "test",
    "vizwiz": "testdev",
    "textvqa": "validation",
}
REAL = {
    "vqav2": "VQAv2 test-dev",
    "gqa": "GQA test-dev balanced",
    "sqa_img": "ScienceQA-IMG test",
    "mmb_en": "MMBench-EN dev",
    "mmb_cn": "MMBench-CN dev",
    "mmvet": "MM-Vet",
    "vizwiz": "VizWiz-VQA test-dev",
    "textvqa": "TextVQA validation",
}
CIRCULAR_OFFSET = 1_000_000
Row = dict


def _image(scene: Scene, size: int) -> dict:
    return {"bytes": png_bytes(render(scene, size)), "path": None}


# ---------------------------------------------------------------- ten human answers (VQAv2, VizWiz, TextVQA)

_SYNONYMS = {
    "top left": "upper left",
    "top right": "upper right",
    "bottom left": "lower left",
    "bottom right": "lower right",
    "center": "middle",
    "large": "big",
    "small": "little",
}


def _variant(qa: QA, rng: np.random.Generator) -> str:
    """What a less careful annotator writes: a synonym, a spelled-out number, a shade, or a slip."""
    a = qa.answer
    if qa.kind == "count":
        return (
            NUMBER_WORDS["en"][int(a)]
            if rng.random() < 0.6
            else str(max(0, int(a) + int(rng.choice([-1, 1]))))
        )
    if a in _SYNONYMS and rng.random() < 0.7:
        return _SYNONYMS[a]
    if qa.kind == "colour":
        return f"{'dark' if rng.random() < 0.5 else 'light'} {a}"
    if qa.kind == "text":
        return a.upper() if rng.random() < 0.6 else a[:-1]
    if a == UNANSWERABLE_ANSWER:
        return "unsuitable image" if rng.random() < 0.5 else "unknown"
    if a in ("yes", "no"):
        return "yes" if a == "no" else "no"
    return a


def human_answers(qa: QA, rng: np.random.Generator, agreement: float = 0.85) -> list[str]:
    """Ten annotators' answers: each the reference with probability `agreement`, else a variant."""
    return [qa.answer if rng.random() < agreement else _variant(qa, rng) for _ in range(10)]


def _majority(answers: list[str]) -> str:
    counts = Counter(answers)
    return max(counts, key=lambda a: (counts[a], -answers.index(a)))


def _answer_type(qa: QA) -> str:
    return "yes/no" if qa.answer in ("yes", "no") else "number" if qa.kind == "count" else "other"


_QUESTION_TYPE = {
    "colour": "what color is the",
    "shape": "what shape is the",
    "count": "how many",
    "exist": "is there a",
    "position": "where is the",
    "relation": "is the",
    "size": "is the",
    "text": "what",
}


def _per_scene(
    sampler: SceneSampler,
    rng: np.random.Generator,
    n: int,
    per_scene: int,
    make: Callable[[Scene, np.random.Generator], list],
    scene_kwargs: dict | None = None,
):
    """(scene, item) pairs: up to `per_scene` items from `make` per fresh scene, until `n` items."""
    out = []
    while len(out) < n:
        scene = sampler.sample(**(scene_kwargs or {}))
        out += [(scene, item) for item in make(scene, rng)[:per_scene]]
    return out[:n]


# ---------------------------------------------------------------- VQAv2


def vqav2(sampler: SceneSampler, rng: np.random.Generator, n: int, size: int) -> list[Row]:
    kinds = ("colour", "shape", "count", "exist", "position", "relation", "size", "text")
    rows = []
    for i, (scene, qa) in enumerate(
        _per_scene(sampler, rng, n, 3, lambda s, r: distinct_questions(s, r, 3, kinds))
    ):
        answers = human_answers(qa, rng)
        rows.append(
            {
                "question_id": i,
                "image": _image(scene, size),
                "question": qa.question,
                "answers": [
                    {
                        "answer": a,
                        "answer_confidence": "yes" if a == qa.answer else "maybe",
                        "answer_id": j + 1,
                    }
                    for j, a in enumerate(answers)
                ],
                "multiple_choice_answer": _majority(answers),
                "answer_type": _answer_type(qa),
                "question_type": _QUESTION_TYPE[qa.kind],
            }
        )
    return rows


VQAV2_FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("int64"),
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answers": datasets.List(
            {
                "answer": datasets.Value("string"),
                "answer_confidence": datasets.Value("string"),
                "answer_id": datasets.Value("int64"),
            }
        ),
        "multiple_choice_answer": datasets.Value("string"),
        "answer_type": datasets.Value("string"),
        "question_type": datasets.Value("string"),
    }
)


# ---------------------------------------------------------------- GQA: compositional and relational


def gqa(sampler: SceneSampler, rng: np.random.Generator, n: int, size: int) -> list[Row]:
    rows = []
    for i, (scene, qa) in enumerate(_per_scene(sampler, rng, n, 3, gqa_questions)):
        rows.append(
            {
                "id": f"{20000000 + i}",
                "imageId": scene.id,
                "image": _image(scene, size),
                "question": qa.question,
                "answer": qa.answer,
                "fullAnswer": qa.full,
                "structural": qa.meta["structural"],
                "semantic": qa.meta["semantic"],
            }
        )
    return rows


GQA_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "imageId": datasets.Value("string"),
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "fullAnswer": datasets.Value("string"),
        "structural": datasets.Value("string"),
        "semantic": datasets.Value("string"),
    }
)


# ---------------------------------------------------------------- ScienceQA-IMG: multiple choice with a context

WARM = ("red", "orange", "yellow")
CORNERS = {"circle": "0", "triangle": "3", "square": "4", "star": "10"}


def _sqa_question(scene: Scene, rng: np.random.Generator) -> list[dict]:
    kind = ["warm", "corners", "more", "reading", "rows"][int(rng.integers(5))]
    objs = list(scene.objects)
    if kind == "warm":
        o = objs[int(rng.integers(len(objs)))]
        x = ref(o, scene, "en", omit="colour")
        if x is None:
            return []
        choices = ["a warm color", "a cool color"]
        return [
            {
                "hint": "Red, orange and yellow are warm colors. Green, blue and purple are cool colors.",
                "q": f"Is the {x} a warm color or a cool color?",
                "choices": choices,
                "answer": 0 if o.colour in WARM else 1,
                "subject": "natural science",
                "category": "Colors",
                "grade": "grade2",
            }
        ]
    if kind == "corners":
        o = objs[int(rng.integers(len(objs)))]
        x = ref(o, scene, "en", omit="shape")
        if x is None:
            return []
        choices = ["0", "3", "4", "10"]
        return [
            {
                "hint": "A triangle has three corners. A square has four corners. A star has ten corners. "
                "A circle has no corners.",
                "q": f"How many corners does the {x} have?",
                "choices": choices,
                "answer": choices.index(CORNERS[o.shape]),
                "subject": "natural science",
                "category": "Geometry",
                "grade": "grade1",
            }
        ]
    if kind == "more":
        counts = Counter(o.shape for o in objs)
        a, b = (SHAPES[int(i)] for i in rng.choice(len(SHAPES), size=2, replace=False))
        if counts[a] == counts[b]:
            return []
        return [
            {
                "hint": "",
                "q": f"Are there more {a}s or more {b}s in the picture?",
                "choices": [f"{a}s", f"{b}s"],
                "answer": 0 if counts[a] > counts[b] else 1,
                "subject": "natural science",
                "category": "Comparing quantities",
                "grade": "grade1",
            }
        ]
    if kind == "reading":
        if not scene.text:
            return []
        others = [w for w in SIGN_WORDS if w != scene.text]
        choices = [scene.text] + [others[int(i)] for i in rng.choice(len(others), size=2, replace=False)]
        choices = [choices[int(i)] for i in rng.permutation(3)]
        return [
            {
                "hint": "Look at the sign in the picture.",
                "q": "Which word is written on the sign?",
                "choices": choices,
                "answer": choices.index(scene.text),
                "subject": "language science",
                "category": "Reading",
                "grade": "grade1",
            }
        ]
    o = objs[int(rng.integers(len(objs)))]
    x = ref(o, scene, "en")
    if x is None:
        return []
    choices = ["the top", "the middle", "the bottom"]
    return [
        {
            "hint": "The picture has a top row, a middle row and a bottom row.",
            "q": f"In which row of the picture is the {x}?",
            "choices": choices,
            "answer": o.row,
            "subject": "social science",
            "category": "Geography",
            "grade": "grade2",
        }
    ]


def sqa_img(sampler: SceneSampler, rng: np.random.Generator, n: int, size: int) -> list[Row]:
    return [
        {
            "image": _image(scene, size),
            "question": q["q"],
            "choices": q["choices"],
            "answer": q["answer"],
            "hint": q["hint"],
            "subject": q["subject"],
            "grade": q["grade"],
            "category": q["category"],
        }
        for scene, q in _per_scene(sampler, rng, n, 1, _sqa_question, {"text": None})
    ]


SQA_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "choices": datasets.List(datasets.Value("string")),
        "answer": datasets.Value("int8"),
        "hint": datasets.Value("string"),
        "subject": datasets.Value("string"),
        "grade": datasets.Value("string"),
        "category": datasets.Value("string"),
    }
)


# ---------------------------------------------------------------- MMBench EN / CN with circular copies

_L2 = {
    "attribute_recognition": "finegrained_perception (instance-level)",
    "object_localization": "finegrained_perception (instance-level)",
    "ocr": "finegrained_perception (instance-level)",
    "spatial_relationship": "finegrained_perception (cross-instance)",
}
_MMB_HINTS = {
    "object_localization": ("The image is divided into a 3 by 3 grid.", "图像被划分为3×3的网格。"),
    "spatial_relationship": (
        "Directions are given from the viewer's point of view.",
        "方向以观看者的视角为准。",
    ),
}


def _mmb_item(scene: Scene, rng: np.random.Generator) -> list[dict]:
    """One question in both languages: (category, en question, zh question, en options, zh options, answer idx)."""
    category = ["attribute_recognition", "object_localization", "spatial_relationship", "ocr"][
        int(rng.integers(4))
    ]
    if category == "attribute_recognition":
        attr = ("colour", "shape")[int(rng.integers(2))]
        named = [o for o in scene.objects if ref(o, scene, "en", omit=attr)]
        if not named:
            return []
        o = named[int(rng.integers(len(named)))]
        x_en, x_zh = ref(o, scene, "en", omit=attr), ref(o, scene, "zh", omit=attr)
        space, truth = (list(COLOURS), o.colour) if attr == "colour" else (list(SHAPES), o.shape)
        others = [w for w in space if w != truth]
        opts = [truth] + [others[int(i)] for i in rng.choice(len(others), size=3, replace=False)]
        opts = [opts[int(i)] for i in rng.permutation(4)]
        word = colour_word if attr == "colour" else shape_word
        return [
            {
                "category": category,
                "en": f"What {'color' if attr == 'colour' else 'shape'} is the {x_en}?",
                "zh": f"{x_zh}是什么{'颜色' if attr == 'colour' else '形状'}？",
                "opts_en": opts,
                "opts_zh": [word(w, "zh") for w in opts],
                "answer": opts.index(truth),
            }
        ]
    if category == "object_localization":
        named = [o for o in scene.objects if ref(o, scene, "en")]
        if not named:
            return []
        o = named[int(rng.integers(len(named)))]
        cells = [c for c in POSITION["en"] if c != (o.row, o.col)]
        picked = [cells[int(i)] for i in rng.choice(len(cells), size=3, replace=False)] + [(o.row, o.col)]
        picked = [picked[int(i)] for i in rng.permutation(4)]
        return [
            {
                "category": category,
                "en": f"Where is the {ref(o, scene, 'en')}?",
                "zh": f"{ref(o, scene, 'zh')}在哪里？",
                "opts_en": [POSITION["en"][c] for c in picked],
                "opts_zh": [POSITION["zh"][c] for c in picked],
                "answer": picked.index((o.row, o.col)),
            }
        ]
    if category == "spatial_relationship":
        named = [o for o in scene.objects if ref(o, scene, "en")]
        pairs = [(a, b) for a in named for b in named if a is not b and (a.row == b.row) != (a.col == b.col)]
        if not pairs:
            return []
        a, b = pairs[int(rng.integers(len(pairs)))]
        rel = next(r for r, (_, _, holds) in RELATIONS.items() if holds(a, b))
        order = [list(RELATIONS)[int(i)] for i in rng.permutation(4)]
        return [
            {
                "category": category,
                "en": f"Where is the {ref(a, scene, 'en')} relative to the {ref(b, scene, 'en')}?",
                "zh": f"{ref(a, scene, 'zh')}在{ref(b, scene, 'zh')}的什么位置？",
                "opts_en": [
                    {"left": "left", "right": "right", "above": "above", "below": "below"}[r] for r in order
                ],
                "opts_zh": [RELATIONS[r][1] for r in order],
                "answer": order.index(rel),
            }
        ]
    if not scene.text:
        return []
    others = [w for w in SIGN_WORDS if w != scene.text]
    opts = [scene.text] + [others[int(i)] for i in rng.choice(len(others), size=3, replace=False)]
    opts = [opts[int(i)] for i in rng.permutation(4)]
    return [
        {
            "category": category,
            "en": "What word is written on the sign?",
            "zh": "牌子上写的是哪个词？",
            "opts_en": opts,
            "opts_zh": opts,
            "answer": opts.index(scene.text),
        }
    ]


def mmbench_pair(
    sampler: SceneSampler, rng: np.random.Generator, n: int, size: int
) -> tuple[list[Row], list[Row]]:
    """MMBench-EN and its Chinese translation (same images, options and indices, as MMBench-CN is), each
    with circular copies: index + k * 1e6 holds the options rotated k places."""
    en_rows, zh_rows = [], []
    for i, (scene, item) in enumerate(_per_scene(sampler, rng, n, 1, _mmb_item, {"text": None})):
        image = _image(scene, size)
        hint = _MMB_HINTS.get(item["category"]) if rng.random() < 0.5 else None
        for k in range(4):
            rot = [(j + k) % 4 for j in range(4)]  # option j of copy k is option rot[j] of the original
            answer = LETTERS[rot.index(item["answer"])]
            for lang, rows in (("en", en_rows), ("zh", zh_rows)):
                opts = item[f"opts_{lang}"]
                rows.append(
                    {
                        "index": i + k * CIRCULAR_OFFSET,
                        "image": image,
                        "question": item[lang],
                        "hint": None if hint is None else hint[0 if lang == "en" else 1],
                        **{LETTERS[j]: opts[rot[j]] for j in range(4)},
                        "answer": answer,
                        "category": item["category"],
                        "L2-category": _L2[item["category"]],
                        "source": "mini",
                        "split": "dev",
                    }
                )
    key = lambda r: (r["index"] % CIRCULAR_OFFSET, r["index"])
    return sorted(en_rows, key=key), sorted(zh_rows, key=key)


MMB_FEATURES = datasets.Features(
    {
        "index": datasets.Value("int64"),
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "hint": datasets.Value("string"),
        **{c: datasets.Value("string") for c in "ABCD"},
        "answer": datasets.Value("string"),
        "category": datasets.Value("string"),
        "L2-category": datasets.Value("string"),
        "source": datasets.Value("string"),
        "split": datasets.Value("string"),
    }
)


# ---------------------------------------------------------------- MM-Vet: open-ended, judged against a reference


def _mmvet_question(scene: Scene, rng: np.random.Generator) -> list[dict]:
    kind = ["rec", "ocr", "spat", "math", "know", "relq"][int(rng.integers(6))]
    objs = list(scene.objects)
    counts = Counter(o.shape for o in objs)
    if kind == "rec":
        qa = ask(scene, rng, "en", ("colour", "shape", "count"))
        if qa is None:
            return []
        alts = [qa.answer] + list(qa.alternatives)
        return [{"q": qa.question, "a": "<OR>".join(alts), "cap": "rec"}]
    if kind == "ocr":
        return [{"q": "What is written on the sign?", "a": scene.text, "cap": "ocr"}] if scene.text else []
    if kind == "spat":
        named = [o for o in objs if ref(o, scene, "en")]
        if not named:
            return []
        o = named[int(rng.integers(len(named)))]
        where = POSITION["en"][(o.row, o.col)]
        return [
            {
                "q": f"Where is the {ref(o, scene, 'en')} in the image?",
                "a": "<OR>".join(dict.fromkeys([where, position_phrase(o, "en")])),
                "cap": "rec,spat",
            }
        ]
    if kind == "math":
        a, b = (SHAPES[int(i)] for i in rng.choice(len(SHAPES), size=2, replace=False))
        if counts[a] <= counts[b]:
            a, b = b, a
        if counts[a] == counts[b]:
            return []
        d = counts[a] - counts[b]
        return [
            {
                "q": f"How many more {a}s than {b}s are there in the image?",
                "a": f"{d}<OR>{NUMBER_WORDS['en'][d]}",
                "cap": "rec,math",
            }
        ]
    if kind == "know":
        s = ("triangle", "square")[int(rng.integers(2))]
        total = int(CORNERS[s]) * counts[s]
        return [
            {
                "q": f"How many corners do all the {s}s in the image have together?",
                "a": str(total),
                "cap": "rec,know,math",
            }
        ]
    named = [o for o in objs if ref(o, scene, "en")]
    for b in named:
        rel = list(RELATIONS)[int(rng.integers(4))]
        words, _, holds = RELATIONS[rel]
        hits = [o for o in objs if o is not b and holds(o, b)]
        if len(hits) == 1:
            return [
                {
                    "q": f"What is the color of the object {words} the {ref(b, scene, 'en')}?",
                    "a": hits[0].colour,
                    "cap": "rec,spat",
                }
            ]
    return []


def mmvet(sampler: SceneSampler, rng: np.random.Generator, n: int, size: int) -> list[Row]:
    return [
        {
            "question_id": f"v1_{i}",
            "image": _image(scene, size),
            "question": q["q"],
            "answer": q["a"],
            "capability": q["cap"],
        }
        for i, (scene, q) in enumerate(_per_scene(sampler, rng, n, 1, _mmvet_question, {"text": None}))
    ]


MMVET_FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("string"),
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "capability": datasets.Value("string"),
    }
)


# ---------------------------------------------------------------- VizWiz: some questions cannot be answered


# VizWiz-VQA's annotators found about 28% of its visual questions unanswerable (Gurari et al., CVPR 2018),
# mostly for blur, darkness or framing. The share is drawn per question, not left to the scene sampler:
# held-out scenes equal in content to a training scene are redrawn, which rejects most clear one-object
# scenes and would otherwise make most questions unanswerable (a blind "unanswerable" would then score high).
VIZWIZ_UNANSWERABLE = 0.28
VIZWIZ_REASONS = {"dark": 0.4, "blurry": 0.3, "absent": 0.3}  # of the unanswerable questions


def _vizwiz_item(sampler: SceneSampler, rng: np.random.Generator) -> tuple[Scene, QA]:
    """One VizWiz question: unanswerable (a dark or blurry photo, or a question about an absent shape) with
    probability VIZWIZ_UNANSWERABLE, else a question the clear photo answers."""
    if rng.random() < VIZWIZ_UNANSWERABLE:
        reasons = list(VIZWIZ_REASONS)
        reason = reasons[int(rng.choice(len(reasons), p=list(VIZWIZ_REASONS.values())))]
        while True:
            scene = sampler.sample(quality="clear" if reason == "absent" else reason)
            qa = unanswerable(scene, rng)
            if qa is not None:
                return scene, qa
    while True:
        scene = sampler.sample(quality="clear")
        qa = ask(scene, rng, "en", ("colour", "shape", "count", "exist", "position", "text"))
        if qa is not None:
            return scene, qa


def vizwiz(sampler: SceneSampler, rng: np.random.Generator, n: int, size: int) -> list[Row]:
    rows = []
    for i in range(n):
        scene, qa = _vizwiz_item(sampler, rng)
        unanswerable_ = qa.answer == UNANSWERABLE_ANSWER
        rows.append(
            {
                "question_id": f"VizWiz_testdev_{i:08d}",
                "image": _image(scene, size),
                "question": qa.question,
                "answers": human_answers(qa, rng),
                "category": "unanswerable" if unanswerable_ else _answer_type(qa),
                "answerable": int(not unanswerable_),
            }
        )
    return rows


VIZWIZ_FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("string"),
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answers": datasets.List(datasets.Value("string")),
        "category": datasets.Value("string"),
        "answerable": datasets.Value("int32"),
    }
)


# ---------------------------------------------------------------- TextVQA: reading the sign


def _textvqa_question(scene: Scene, rng: np.random.Generator) -> list[QA]:
    qa = ask(scene, rng, "en", ("text",))
    named = [o for o in scene.objects if ref(o, scene, "en")]
    if named and rng.random() < 0.4:
        o = named[int(rng.integers(len(named)))]
        where = "above" if scene.sign_row < o.row else "below"
        qa = QA("text", "en", f"What word is on the sign {where} the {ref(o, scene, 'en')}?", scene.text)
    return [qa]


def textvqa(sampler: SceneSampler, rng: np.random.Generator, n: int, size: int) -> list[Row]:
    rows = []
    for i, (scene, qa) in enumerate(_per_scene(sampler, rng, n, 1, _textvqa_question, {"text": True})):
        shown = scene.text.upper() if scene.text_upper else scene.text
        rows.append(
            {
                "question_id": i,
                "image": _image(scene, size),
                "image_id": scene.id,
                "question": qa.question,
                "answers": human_answers(qa, rng),
                "ocr_tokens": [shown],
            }
        )
    return rows


TEXTVQA_FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("int64"),
        "image": datasets.Image(),
        "image_id": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": datasets.List(datasets.Value("string")),
        "ocr_tokens": datasets.List(datasets.Value("string")),
    }
)


# ---------------------------------------------------------------- building and writing


def build(
    name: str, sampler: SceneSampler, rng: np.random.Generator, n: int, size: int
) -> dict[str, list[Row]]:
    """Rows of benchmark `name` (`mmb` builds both MMBench languages), keyed by benchmark name."""
    if name == "mmb":
        en, zh = mmbench_pair(sampler, rng, n, size)
        return {"mmb_en": en, "mmb_cn": zh}
    builders = {
        "vqav2": vqav2,
        "gqa": gqa,
        "sqa_img": sqa_img,
        "mmvet": mmvet,
        "vizwiz": vizwiz,
        "textvqa": textvqa,
    }
    return {name: builders[name](sampler, rng, n, size)}


FEATURES = {
    "vqav2": VQAV2_FEATURES,
    "gqa": GQA_FEATURES,
    "sqa_img": SQA_FEATURES,
    "mmb_en": MMB_FEATURES,
    "mmb_cn": MMB_FEATURES,
    "mmvet": MMVET_FEATURES,
    "vizwiz": VIZWIZ_FEATURES,
    "textvqa": TEXTVQA_FEATURES,
}

# `dataset_info.download_checksums` is real metadata, and it also makes the card's hash follow the data:
# datasets (5.2) caches a local dataset folder under its name and card, so without it a rebuilt world
# (another seed or size) would be read back from the stale cache.
_CARD = """---
configs:
- config_name: default
  data_files:
  - split: {split}
    path: {split}.parquet
dataset_info:
  download_checksums:
    {split}.parquet:
      num_bytes: {num_bytes}
      checksum: {sha256}
license: apache-2.0
language:
- {lang}
pretty_name: mini {name}
---

# mini {name}

The embedded world's stand-in for {real}: {n} rows over generated scenes that never appear in
training, written by `basic mini data`. Columns mirror the lmms-lab dataset lmms-eval reads for the
real benchmark; see the data card in docs/mini_world.md for what carries over and what does not.
"""


def write(out_dir: Path, name: str, rows: list[Row]) -> list[Path]:
    """`<out_dir>/<split>.parquet` and a dataset card; returns the written files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    split = SPLITS[name]
    path = out_dir / f"{split}.parquet"
    datasets.Dataset.from_list(rows, features=FEATURES[name]).to_parquet(str(path))
    data = path.read_bytes()
    card = out_dir / "README.md"
    card.write_text(
        _CARD.format(
            split=split,
            lang="zh" if name == "mmb_cn" else "en",
            name=name,
            real=REAL[name],
            n=len(rows),
            num_bytes=len(data),
            sha256=sha256(data),
        )
    )
    return [path, card]
