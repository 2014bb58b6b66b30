"""The embedded world's corpora in LLaVA's formats, and the LLM pretraining text.

- `pretrain_records`: the LLaVA-558K stand-in, one brief caption per training image, for the `plain`
  template (LLaVA replaces the human turn by the image alone, so the prompt wording does not matter).
- `finetune_records`: the LLaVA-665K stand-in: one short-answer VQA question per record ("Answer the
  question using a single word or phrase."; OCR-style sign reading among them), multiple choice ("Answer
  with the option's letter from the given choices directly."), a few VizWiz-style questions that may be
  unanswerable, and text-only conversations (no `image` key) over scenes given in words; the types
  `conversation` and `detail` exist but have no share (FINETUNE_MIX). English only, as LLaVA-665K is.
- `text_docs`: what the mini LLMs are pretrained on: a scene described in words (English or Chinese)
  followed by question-answer turns in the LLaVA prompt styles; rendered later in each family's chat
  format.
"""

from __future__ import annotations

import numpy as np

from basic.mini.language import (
    ask,
    caption,
    describe,
    distinct_questions,
    gqa_questions,
    prompt,
    unanswerable,
)
from basic.mini.scenes import Scene

IMAGE = "<image>"

BRIEF_PROMPTS = (
    "Give a brief description of the image.",
    "Describe the image concisely.",
    "Provide a short caption for this picture.",
    "Summarize the visual content of the image.",
    "Write a terse but informative summary of the picture.",
    "Share a concise interpretation of the image provided.",
)
DETAIL_PROMPTS = (
    "Describe the image in detail.",
    "Describe the following image.",
    "What do you see in this picture? Describe everything.",
    "Write a detailed description of the given image.",
)
# Share of each instruction type among image records (the rest of the mix is text-only, see finetune_records).
# No conversations and no detailed descriptions (dark or blurry photos still get a description): in the
# token-averaged loss their long answers outweigh the one-word answers, and with them stage 2 leaves the
# mini models blind (benchmarks/seeing.py, benchmarks/results/seeing.json).
# VQA in two question styles, as LLaVA-665K holds VQAv2 (83K) and GQA (72K): the VQAv2 stand-in's kinds
# (`ask`) and GQA's (`gqa_questions`: logical "Is there a A or a B?", attribute queries).
FINETUNE_MIX = {"conversation": 0.0, "vqa": 0.50, "gqa": 0.30, "mc": 0.10, "detail": 0.0, "vizwiz": 0.10}
# Questions per record (min, max): one. LLaVA-665K groups several questions about an image in one record;
# here that leaves the mini models blind: later turns are answered from the earlier ones ("Is there a blue
# circle?" ... "What color is the circle?") instead of from the image.
TURNS = {"conversation": (1, 2), "vqa": (1, 1)}
OPEN_KINDS = ("colour", "shape", "count", "exist", "position", "relation", "size", "text")


def _turns(conversation: list[tuple[str, str]], with_image: bool) -> list[dict]:
    out = []
    for i, (human, gpt) in enumerate(conversation):
        out.append({"from": "human", "value": f"{IMAGE}\n{human}" if (i == 0 and with_image) else human})
        out.append({"from": "gpt", "value": gpt})
    return out


def pretrain_records(scenes: list[Scene], rng: np.random.Generator) -> list[dict]:
    """LLaVA-558K format: `{"id", "image", "conversations": [human "<image>\\n...", gpt caption]}`."""
    return [
        {
            "id": s.id,
            "image": f"train/{s.id}.png",
            "conversations": _turns(
                [(BRIEF_PROMPTS[int(rng.integers(len(BRIEF_PROMPTS)))], caption(s, rng))], with_image=True
            ),
        }
        for s in scenes
    ]


def _image_conversation(scene: Scene, kind: str, rng: np.random.Generator) -> list[tuple[str, str]]:
    low, high = TURNS.get(kind, (1, 1))
    n = int(rng.integers(low, high + 1))
    if kind == "conversation":
        return [prompt(qa, "open", rng) for qa in distinct_questions(scene, rng, n, OPEN_KINDS)]
    if kind == "vqa":
        return [prompt(qa, "short", rng) for qa in distinct_questions(scene, rng, n, OPEN_KINDS)]
    if kind == "gqa":
        return [prompt(qa, "short", rng) for qa in gqa_questions(scene, rng)[:1]]
    if kind == "mc":
        kinds = ("colour", "shape", "count", "position", "size", "text")
        return [prompt(qa, "mc", rng) for qa in distinct_questions(scene, rng, 1, kinds)]
    if kind == "detail":
        return [(DETAIL_PROMPTS[int(rng.integers(len(DETAIL_PROMPTS)))], describe(scene, "en", rng))]
    if kind == "vizwiz":
        qa = unanswerable(scene, rng) if (scene.quality != "clear" or rng.random() < 0.5) else None
        qa = qa or ask(scene, rng, "en", OPEN_KINDS)
        return [prompt(qa, "vizwiz", rng)]
    raise ValueError(f"unknown instruction type {kind!r}")


def finetune_records(scenes: list[Scene], text_scenes: list[Scene], rng: np.random.Generator) -> list[dict]:
    """LLaVA-665K format: one record per training image (type drawn from `FINETUNE_MIX`), then one
    text-only record (no `image` key) per scene of `text_scenes`, in a shuffled order."""
    kinds, probs = list(FINETUNE_MIX), np.array(list(FINETUNE_MIX.values()))
    records = []
    for s in scenes:
        kind = kinds[int(rng.choice(len(kinds), p=probs / probs.sum()))]
        if s.quality != "clear" and kind != "vizwiz":
            kind = "detail"  # a dark or blurry photo supports a description ("too dark ...") and nothing else
        conv = _image_conversation(s, kind, rng)
        if not conv:  # no question fits this scene in this style: describe it instead
            kind, conv = "detail", _image_conversation(s, "detail", rng)
        records.append(
            {"id": f"{s.id}-{kind}", "image": f"train/{s.id}.png", "conversations": _turns(conv, True)}
        )
    for s in text_scenes:
        style = "short" if rng.random() < 0.5 else "open"
        conv = [
            prompt(qa, style, rng) for qa in distinct_questions(s, rng, int(rng.integers(1, 4)), OPEN_KINDS)
        ]
        if conv:
            conv[0] = (f"{describe(s, 'en', rng)}\n{conv[0][0]}", conv[0][1])
            records.append({"id": f"{s.id}-text", "conversations": _turns(conv, with_image=False)})
    order = rng.permutation(len(records))
    return [records[int(i)] for i in order]


def text_doc(scene: Scene, rng: np.random.Generator, lang: str, n_turns: int, brief: bool = False) -> dict:
    """A scene in words followed by `n_turns` question-answer turns: the LLM pretraining unit.

    Styles: `short` and `mc` in both languages; `vizwiz` (English) adds the "respond with
    'Unanswerable'" line and, when the description cannot answer, expects "unanswerable". `brief`: the
    first turn asks for the scene's brief caption (the LLaVA-558K stand-in's wording), read off the
    description.
    """
    turns = []
    if brief:
        turns.append(
            {
                "prompt": BRIEF_PROMPTS[int(rng.integers(len(BRIEF_PROMPTS)))],
                "answer": caption(scene, rng),
                "kind": "caption",
                "style": "caption",
            }
        )
    for _ in range(n_turns):
        u = rng.random()
        if scene.quality != "clear" or (lang == "en" and u < 0.15):
            style = "vizwiz"
            qa = unanswerable(scene, rng) if (scene.quality != "clear" or rng.random() < 0.4) else None
            qa = qa or ask(scene, rng, lang)
        else:
            style = "mc" if u < 0.45 else "short"
            qa = ask(scene, rng, lang)
        if qa is None:
            continue
        text, answer = prompt(qa, style, rng)
        turns.append({"prompt": text, "answer": answer, "kind": qa.kind, "style": style})
    return {
        "id": scene.id,
        "lang": lang,
        "objects": len(scene.objects) if scene.quality == "clear" else 0,
        "description": describe(scene, lang, rng),
        "turns": turns,
    }


def text_docs(
    scenes: list[Scene], rng: np.random.Generator, turns: tuple[int, int] = (1, 1), brief_share: float = 0.0
) -> list[dict]:
    """One `text_doc` per scene; language: Chinese for half the clear scenes; `turns` = (min, max)
    question turns; `brief_share` of the English clear scenes open with a brief-caption turn."""
    docs = []
    for s in scenes:
        lang = "zh" if (s.quality == "clear" and rng.random() < 0.5) else "en"
        brief = bool(brief_share) and lang == "en" and s.quality == "clear" and rng.random() < brief_share
        docs.append(text_doc(s, rng, lang, int(rng.integers(turns[0], turns[1] + 1)), brief))
    return [d for d in docs if d["turns"]]


__all__ = ["FINETUNE_MIX", "finetune_records", "pretrain_records", "text_doc", "text_docs"]
