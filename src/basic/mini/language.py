"""Words for the embedded world: scene captions, descriptions, questions and answers in English and Chinese.

Every question kind is a function `(scene, rng, lang) -> QA | None` (None when the scene cannot ask
it unambiguously), registered in `KINDS`. The corpora, the LLM pretraining text and the mini benchmarks
all draw from these, so a concept is phrased the same way wherever it appears. Prompt suffixes are the
ones LLaVA-1.5 and lmms-eval use (`SHORT`, `MC`, `UNANSWERABLE`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from basic.mini.scenes import COLOURS, GRID, SHAPES, SIGN_WORDS, SIZES, Obj, Scene

LANGS = ("en", "zh")
COLOUR_ZH = {
    "red": "红色",
    "orange": "橙色",
    "yellow": "黄色",
    "green": "绿色",
    "blue": "蓝色",
    "purple": "紫色",
}
SHAPE_ZH = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形"}
SIZE_ZH = {"small": "小", "large": "大"}
POSITION = {"en": {}, "zh": {}}
_ROWS = {"en": ("top", "", "bottom"), "zh": ("上", "", "下")}
_COLS = {"en": ("left", "", "right"), "zh": ("左", "", "右")}
for _r in range(GRID):
    for _c in range(GRID):
        _en = " ".join(w for w in (_ROWS["en"][_r], _COLS["en"][_c]) if w) or "center"
        _zh = (
            (_COLS["zh"][_c] + _ROWS["zh"][_r] + "方")
            if (_r != 1 and _c != 1)
            else ({(0, 1): "上方", (2, 1): "下方", (1, 0): "左侧", (1, 2): "右侧", (1, 1): "中间"}[(_r, _c)])
        )
        POSITION["en"][(_r, _c)], POSITION["zh"][(_r, _c)] = _en, _zh
NUMBER_WORDS = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "zh": ("零", "一", "两", "三", "四", "五", "六", "七", "八", "九"),
}
YES = {"en": "yes", "zh": "是"}
NO = {"en": "no", "zh": "否"}
UNANSWERABLE_ANSWER = "unanswerable"

# Prompt suffixes: LLaVA-1.5's short-answer and multiple-choice instructions (its MMBench-CN suffix, the
# `--lang cn` one that basic.eval.prompts' llava_v15 variant asks with), lmms-eval's VizWiz one; the
# Chinese short-answer line is this world's own (LLaVA has none).
SHORT = {"en": "Answer the question using a single word or phrase.", "zh": "请用一个单词或短语回答这个问题。"}
MC = {"en": "Answer with the option's letter from the given choices directly.", "zh": "请直接回答选项字母。"}
UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."
LETTERS = "ABCDE"


def colour_word(c: str, lang: str) -> str:
    return c if lang == "en" else COLOUR_ZH[c]


def shape_word(s: str, lang: str) -> str:
    return s if lang == "en" else SHAPE_ZH[s]


def size_word(s: str, lang: str) -> str:
    return s if lang == "en" else SIZE_ZH[s]


def number_word(n: int, lang: str) -> str:
    return NUMBER_WORDS[lang][n]


@dataclass(frozen=True)
class QA:
    """One question about a scene. `answer` is the short canonical answer; `choices` (answer included) is
    the answer space a multiple-choice version draws distractors from; `full` is a sentence answer (en)."""

    kind: str
    lang: str
    question: str
    answer: str
    full: str = ""
    choices: tuple[str, ...] = ()
    alternatives: tuple[str, ...] = ()  # other correct spellings ("two" for "2")
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.lang != "en":  # sentence answers exist in English only (the instruction mix is English)
            object.__setattr__(self, "full", "")


# ---------------------------------------------------------------- noun phrases and descriptions


def noun(o: Obj, lang: str, attrs: tuple[str, ...] = ("size", "colour", "shape")) -> str:
    """`o` named by `attrs`: 'large red circle', 'red object'; '大的红色圆形', '红色物体'."""
    if lang == "en":
        words = [o.size] if "size" in attrs else []
        words += [o.colour] if "colour" in attrs else []
        words.append(o.shape if "shape" in attrs else "object")
        return " ".join(words)
    text = (SIZE_ZH[o.size] + "的") if "size" in attrs else ""
    text += COLOUR_ZH[o.colour] if "colour" in attrs else ""
    return text + (SHAPE_ZH[o.shape] if "shape" in attrs else "物体")


_REFS_WITH_SHAPE = (("shape",), ("colour", "shape"), ("size", "shape"), ("size", "colour", "shape"))
_REFS_WITHOUT_SHAPE = (("colour",), ("size",), ("size", "colour"))


def ref(o: Obj, scene: Scene, lang: str, omit: str | None = None) -> str | None:
    """The shortest name that picks out `o` alone in `scene`, not using attribute `omit`; None if none does."""
    candidates = _REFS_WITHOUT_SHAPE if omit == "shape" else _REFS_WITH_SHAPE
    for attrs in candidates:
        if omit in attrs:
            continue
        matches = [p for p in scene.objects if all(getattr(p, a) == getattr(o, a) for a in attrs)]
        if matches == [o]:
            return noun(o, lang, attrs)
    return None


def _count_phrase(n: int, lang: str) -> str:
    if lang == "en":
        return (
            f"There is {number_word(n, 'en')} object"
            if n == 1
            else f"There are {number_word(n, 'en')} objects"
        )
    return f"图中有{number_word(n, 'zh')}个物体"


def position_phrase(o: Obj, lang: str) -> str:
    p = POSITION[lang][(o.row, o.col)]
    if lang == "zh":
        return p
    return "in the center" if p == "center" else (f"on the {p}" if p in ("left", "right") else f"at the {p}")


def describe(scene: Scene, lang: str, rng: np.random.Generator | None = None) -> str:
    """A complete description in words: every object with size, colour, shape and place, sign, quality."""
    if scene.quality != "clear":
        return {
            ("en", "dark"): "The picture is too dark to see what it shows.",
            ("en", "blurry"): "The picture is too blurry to see what it shows.",
            ("zh", "dark"): "这张图片太暗了，看不清内容。",
            ("zh", "blurry"): "这张图片太模糊了，看不清内容。",
        }[(lang, scene.quality)]
    objs = list(scene.objects)
    if rng is not None:
        objs = [objs[i] for i in rng.permutation(len(objs))]
    if lang == "en":
        parts = [_count_phrase(len(objs), "en") + " in the picture."]
        parts += [f"A {noun(o, 'en')} is {position_phrase(o, 'en')}." for o in objs]
        if scene.text:
            where = "top" if scene.sign_row == 0 else "bottom"
            parts.append(f'A sign at the {where} says "{scene.text}".')
        return " ".join(parts)
    parts = [_count_phrase(len(objs), "zh") + "。"]
    parts += [f"{position_phrase(o, 'zh')}有一个{noun(o, 'zh')}。" for o in objs]
    if scene.text:
        parts.append(f"{'上方' if scene.sign_row == 0 else '下方'}的牌子上写着“{scene.text}”。")
    return "".join(parts)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A brief caption (the LLaVA-558K stand-in's BLIP-style text): the objects, and the sign if any."""
    if scene.quality != "clear":
        return f"a very {scene.quality} photo"
    names = [f"a {noun(o, 'en')}" for o in (scene.objects[i] for i in rng.permutation(len(scene.objects)))]
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    if scene.text:
        text += f' with a sign that says "{scene.text}"'
    return text


# ---------------------------------------------------------------- question kinds


def _pick(rng: np.random.Generator, items):
    items = list(items)
    return items[int(rng.integers(len(items)))] if items else None


def _plural(shape: str, lang: str) -> str:
    return shape + "s" if lang == "en" else SHAPE_ZH[shape]


def q_colour(scene, rng, lang):
    o = _pick(rng, [o for o in scene.objects if ref(o, scene, lang, omit="colour")])
    if o is None:
        return None
    x = ref(o, scene, lang, omit="colour")
    q = f"What color is the {x}?" if lang == "en" else f"{x}是什么颜色？"
    return QA(
        "colour",
        lang,
        q,
        colour_word(o.colour, lang),
        f"The {x} is {o.colour}.",
        tuple(colour_word(c, lang) for c in COLOURS),
    )


def q_shape(scene, rng, lang):
    o = _pick(rng, [o for o in scene.objects if ref(o, scene, lang, omit="shape")])
    if o is None:
        return None
    x = ref(o, scene, lang, omit="shape")
    q = f"What shape is the {x}?" if lang == "en" else f"{x}是什么形状？"
    return QA(
        "shape",
        lang,
        q,
        shape_word(o.shape, lang),
        f"The {x} is a {o.shape}.",
        tuple(shape_word(s, lang) for s in SHAPES),
    )


def q_count(scene, rng, lang):
    mode = int(rng.integers(3))
    if mode == 0:
        n = len(scene.objects)
        q = "How many objects are there?" if lang == "en" else "图中有几个物体？"
        full = f"{_count_phrase(n, 'en')}."
    elif mode == 1:
        s = SHAPES[int(rng.integers(len(SHAPES)))]
        n = sum(o.shape == s for o in scene.objects)
        q = f"How many {_plural(s, 'en')} are there?" if lang == "en" else f"图中有几个{SHAPE_ZH[s]}？"
        full = f"There {'is' if n == 1 else 'are'} {n} {s if n == 1 else _plural(s, 'en')}."
    else:
        c = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        n = sum(o.colour == c for o in scene.objects)
        q = f"How many {c} objects are there?" if lang == "en" else f"图中有几个{COLOUR_ZH[c]}的物体？"
        full = f"There {'is' if n == 1 else 'are'} {n} {c} object{'' if n == 1 else 's'}."
    return QA("count", lang, q, str(n), full, tuple(str(i) for i in range(5)), (number_word(n, lang),))


def q_exist(scene, rng, lang):
    if rng.random() < 0.5:
        o = _pick(rng, scene.objects)
        c, s, answer = o.colour, o.shape, True
    else:
        present = {(o.colour, o.shape) for o in scene.objects}
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
        hard = [(c, s) for c, s in absent if any(o.shape == s for o in scene.objects)]
        c, s = _pick(rng, hard if hard and rng.random() < 0.5 else absent)
        answer = False
    if lang == "en":
        q = f"Is there a {c} {s}?"
        full = f"Yes, there is a {c} {s}." if answer else f"No, there is no {c} {s}."
    else:
        q, full = f"图中有{COLOUR_ZH[c]}{SHAPE_ZH[s]}吗？", ""
    return QA("exist", lang, q, YES[lang] if answer else NO[lang], full, (YES[lang], NO[lang]))


def q_position(scene, rng, lang):
    o = _pick(rng, [o for o in scene.objects if ref(o, scene, lang)])
    if o is None:
        return None
    x = ref(o, scene, lang)
    q = f"Where is the {x}?" if lang == "en" else f"{x}在哪里？"
    return QA(
        "position",
        lang,
        q,
        POSITION[lang][(o.row, o.col)],
        f"The {x} is {position_phrase(o, 'en')}.",
        tuple(POSITION[lang].values()),
    )


RELATIONS = {
    "left": ("to the left of", "左边", lambda a, b: a.col < b.col),
    "right": ("to the right of", "右边", lambda a, b: a.col > b.col),
    "above": ("above", "上面", lambda a, b: a.row < b.row),
    "below": ("below", "下面", lambda a, b: a.row > b.row),
}


def q_relation(scene, rng, lang):
    named = [o for o in scene.objects if ref(o, scene, lang)]
    if len(named) < 2:
        return None
    i, j = rng.choice(len(named), size=2, replace=False)
    a, b = named[int(i)], named[int(j)]
    rel = list(RELATIONS)[int(rng.integers(4))]
    en, zh, holds = RELATIONS[rel]
    x, y = ref(a, scene, lang), ref(b, scene, lang)
    yes = holds(a, b)
    if lang == "en":
        q = f"Is the {x} {en} the {y}?"
        full = f"{'Yes' if yes else 'No'}, the {x} is {'' if yes else 'not '}{en} the {y}."
    else:
        q, full = f"{x}在{y}的{zh}吗？", ""
    return QA(
        "relation",
        lang,
        q,
        YES[lang] if yes else NO[lang],
        full,
        (YES[lang], NO[lang]),
        meta={"relation": rel},
    )


def q_size(scene, rng, lang):
    o = _pick(rng, [o for o in scene.objects if ref(o, scene, lang, omit="size")])
    if o is None:
        return None
    x = ref(o, scene, lang, omit="size")
    q = f"Is the {x} small or large?" if lang == "en" else f"{x}是大的还是小的？"
    return QA(
        "size",
        lang,
        q,
        size_word(o.size, lang),
        f"The {x} is {o.size}.",
        tuple(size_word(s, lang) for s in SIZES),
    )


def q_text(scene, rng, lang):
    if not scene.text:
        return None
    q = (
        _pick(rng, ["What does the sign say?", "What word is written on the sign?"])
        if lang == "en"
        else _pick(rng, ["牌子上写着什么？", "牌子上写的是哪个词？"])
    )
    return QA("text", lang, q, scene.text, f'The sign says "{scene.text}".', SIGN_WORDS)


KINDS = {
    "colour": q_colour,
    "shape": q_shape,
    "count": q_count,
    "exist": q_exist,
    "position": q_position,
    "relation": q_relation,
    "size": q_size,
    "text": q_text,
}


def ask(scene: Scene, rng: np.random.Generator, lang: str, kinds=tuple(KINDS), tries: int = 8) -> QA | None:
    """A question of a random kind from `kinds` that this scene can answer (None after `tries` misses)."""
    for _ in range(tries):
        qa = KINDS[kinds[int(rng.integers(len(kinds)))]](scene, rng, lang)
        if qa is not None:
            return qa
    return None


def distinct_questions(
    scene: Scene, rng: np.random.Generator, n: int, kinds=tuple(KINDS), lang: str = "en", tries: int = 20
) -> list[QA]:
    """Up to `n` questions about `scene` with different wording."""
    seen, out = set(), []
    for _ in range(tries):
        qa = ask(scene, rng, lang, kinds)
        if qa is not None and qa.question not in seen:
            seen.add(qa.question)
            out.append(qa)
        if len(out) == n:
            break
    return out


def _gqa(question: str, answer: str, full: str, structural: str, semantic: str) -> QA:
    return QA(
        f"gqa_{structural}",
        "en",
        question,
        answer,
        full,
        meta={"structural": structural, "semantic": semantic},
    )


def gqa_questions(scene: Scene, rng: np.random.Generator) -> list[QA]:
    """GQA-style questions in a random order, each with its structural and semantic type in `meta` and a
    full-sentence answer: the mini GQA benchmark's questions, and the GQA share of the instruction mix
    (LLaVA-665K trains on GQA's balanced train split)."""
    out = []
    named = [o for o in scene.objects if ref(o, scene, "en")]
    # query over a relation: "What color is the object to the left of the square?"
    for b in rng.permutation(len(named)):
        b = named[int(b)]
        rel = list(RELATIONS)[int(rng.integers(4))]
        words, _, holds = RELATIONS[rel]
        hits = [o for o in scene.objects if o is not b and holds(o, b)]
        if len(hits) == 1:
            o, y = hits[0], ref(b, scene, "en")
            if rng.random() < 0.5:
                q, a, full = (
                    f"What color is the object {words} the {y}?",
                    o.colour,
                    f"The object {words} the {y} is {o.colour}.",
                )
            else:
                q, a, full = (
                    f"What shape is the object {words} the {y}?",
                    o.shape,
                    f"The object {words} the {y} is a {o.shape}.",
                )
            out.append(_gqa(q, a, full, "query", "rel"))
            break
    if len(named) >= 2:
        i, j = rng.choice(len(named), size=2, replace=False)
        a, b = named[int(i)], named[int(j)]
        x, y = ref(a, scene, "en"), ref(b, scene, "en")
        same = a.colour == b.colour
        full = f"{'Yes' if same else 'No'}, the {x} and the {y} have {'the same' if same else 'different'} colors."
        out.append(
            _gqa(
                f"Do the {x} and the {y} have the same color?",
                YES["en"] if same else NO["en"],
                full,
                "compare",
                "attr",
            )
        )
        if a.col != b.col:
            side = "left" if a.col < b.col else "right"
            q = f"Is the {x} to the left or to the right of the {y}?"
            out.append(_gqa(q, side, f"The {x} is to the {side} of the {y}.", "choose", "rel"))
        qa = ask(scene, rng, "en", ("relation",))
        if qa is not None:
            out.append(_gqa(qa.question, qa.answer, qa.full, "verify", "rel"))
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    (c1, s1), (c2, s2) = (combos[int(k)] for k in rng.choice(len(combos), size=2, replace=False))
    if rng.random() < 0.5 and scene.objects:
        o = scene.objects[int(rng.integers(len(scene.objects)))]
        c1, s1 = o.colour, o.shape
    has = {(o.colour, o.shape) for o in scene.objects}
    either = (c1, s1) in has or (c2, s2) in has
    named_in_answer = (c1 + " " + s1) if (c1, s1) in has or not either else (c2 + " " + s2)
    full = f"{'Yes' if either else 'No'}, there is {'a' if either else 'no'} {named_in_answer}."
    out.append(
        _gqa(
            f"Is there a {c1} {s1} or a {c2} {s2}?", YES["en"] if either else NO["en"], full, "logical", "obj"
        )
    )
    qa = ask(scene, rng, "en", ("colour", "shape"))
    if qa is not None:
        out.append(_gqa(qa.question, qa.answer, qa.full, "query", "attr"))
    return [out[int(i)] for i in rng.permutation(len(out))]


def unanswerable(scene: Scene, rng: np.random.Generator) -> QA | None:
    """A VizWiz-style unanswerable question: the picture is too dark/blurry, or asks about an absent shape."""
    if scene.quality != "clear":
        qa = ask(replace(scene, quality="clear"), rng, "en", ("colour", "shape", "count", "position", "text"))
        if qa is None:
            return None
        return replace(
            qa,
            kind="unanswerable",
            answer=UNANSWERABLE_ANSWER,
            full="",
            alternatives=(),
            meta={"reason": scene.quality},
        )
    absent = [s for s in SHAPES if all(o.shape != s for o in scene.objects)]
    if not absent:
        return None
    s = _pick(rng, absent)
    return QA("unanswerable", "en", f"What color is the {s}?", UNANSWERABLE_ANSWER, meta={"reason": "absent"})


# ---------------------------------------------------------------- prompt formats


def options(qa: QA, rng: np.random.Generator, k: int = 4) -> tuple[list[str], int]:
    """`k` shuffled options (the answer and distractors from `qa.choices`) and the answer's index."""
    distractors = [c for c in qa.choices if c != qa.answer]
    k = min(k, len(distractors) + 1)
    picked = [distractors[int(i)] for i in rng.choice(len(distractors), size=k - 1, replace=False)]
    opts = picked + [qa.answer]
    order = rng.permutation(k)
    opts = [opts[int(i)] for i in order]
    return opts, opts.index(qa.answer)


def option_lines(opts: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(opts))


def prompt(qa: QA, style: str, rng: np.random.Generator) -> tuple[str, str]:
    """(user text, assistant answer) for a question in a LLaVA-1.5 style:

    `short` (single word or phrase), `mc` (lettered options), `vizwiz` (short, may be unanswerable),
    `open` (a sentence answer, English).
    """
    if style == "short":
        return f"{qa.question}\n{SHORT[qa.lang]}", qa.answer
    if style == "vizwiz":
        return f"{qa.question}\n{UNANSWERABLE}\n{SHORT['en']}", qa.answer
    if style == "mc":
        opts, idx = options(qa, rng)
        return f"{qa.question}\n{option_lines(opts)}\n{MC[qa.lang]}", LETTERS[idx]
    if style == "open":
        return qa.question, qa.full or qa.answer
    raise ValueError(f"unknown prompt style {style!r}")
