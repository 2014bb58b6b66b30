"""The embedded world's generators: scenes, rendering, wording, questions and the LLaVA-format corpora."""

from __future__ import annotations

import numpy as np
import pytest

from basic.mini import corpora, language
from basic.mini.language import KINDS, LANGS, POSITION, QA, ask, describe, options, prompt, ref, unanswerable
from basic.mini.scenes import COLOURS, GRID, SHAPES, SceneSampler, png_bytes, render, stream_rng


def _scenes(seed=0, stream="train_images", n=60, **kw):
    sampler = SceneSampler(stream_rng(seed, stream), "s", text_prob=0.4, dark_prob=0.1, blurry_prob=0.1, **kw)
    return [sampler.sample() for _ in range(n)]


def test_scenes_are_seeded_and_streams_differ():
    assert _scenes(0) == _scenes(0)
    assert [s.key for s in _scenes(0)] != [s.key for s in _scenes(1)]
    assert [s.key for s in _scenes(0)] != [s.key for s in _scenes(0, stream="vqav2")]


def test_scene_contents_are_valid():
    for s in _scenes(n=200):
        assert 1 <= len(s.objects) <= 4
        cells = [(o.row, o.col) for o in s.objects]
        assert len(set(cells)) == len(cells)  # one object per grid cell
        assert all(o.shape in SHAPES and o.colour in COLOURS for o in s.objects)
        if s.text is not None:
            assert s.sign_row in (0, GRID - 1) and all(o.row != s.sign_row for o in s.objects)
        for o in s.objects:  # the shape stays inside its cell
            assert o.col / GRID < o.x < (o.col + 1) / GRID and o.row / GRID < o.y < (o.row + 1) / GRID


def test_rendering_is_deterministic_and_reflects_the_scene():
    scenes = _scenes(n=30)
    assert [png_bytes(render(s)) for s in scenes] == [png_bytes(render(s)) for s in scenes]
    s = next(s for s in scenes if s.quality == "clear")
    img = np.asarray(render(s, 64)).astype(int)
    assert img.shape == (64, 64, 3)
    o = s.objects[0]
    centre = img[int(o.y * 64), int(o.x * 64)]
    assert np.abs(centre - np.array(o.rgb)).max() < 30  # the object's colour is at its centre
    dark = next(s for s in scenes if s.quality == "dark")
    assert np.asarray(render(dark)).mean() < 45


def test_exclusion_redraws_training_contents():
    train = _scenes(n=300)
    keys = {s.key for s in train}
    held_out = SceneSampler(
        stream_rng(0, "train_images"), "h", exclude=keys, text_prob=0.4
    )  # same stream on purpose
    assert all(held_out.sample().key not in keys for _ in range(100))
    tiny = SceneSampler(stream_rng(0, "probe"), "t", exclude={s.key for s in train}, max_redraws=3)
    with pytest.raises(RuntimeError, match="no scene outside the excluded set"):
        for _ in range(1000):
            tiny.sample(n_objects=1, text=False, quality="clear", shape="circle", colour="red")


def test_held_out_scenes_keep_the_quality_shares():
    """Redraws reject clear one-object scenes (their contents are in training) far more often than dark or
    blurry ones; the quality is drawn once per held-out scene, so its shares stay those asked for."""
    train = SceneSampler(stream_rng(0, "train_images"), "t", max_objects=1, dark_prob=0.03, blurry_prob=0.03)
    keys = {train.sample().key for _ in range(4000)}
    held_out = SceneSampler(
        stream_rng(0, "vqav2"), "h", exclude=keys, max_objects=1, dark_prob=0.03, blurry_prob=0.03
    )
    scenes = [held_out.sample() for _ in range(1000)]
    assert 0.02 < sum(s.quality != "clear" for s in scenes) / len(scenes) < 0.11  # 6% asked; 18% without


def test_vizwiz_stand_in_has_the_real_unanswerable_share():
    from basic.mini.benchmarks import VIZWIZ_UNANSWERABLE, vizwiz

    sampler = SceneSampler(stream_rng(0, "vizwiz"), "v", exclude=set(), max_objects=1, text_prob=0.3)
    rows = vizwiz(sampler, np.random.default_rng(0), 400, 32)
    share = sum(r["category"] == "unanswerable" for r in rows) / len(rows)
    assert abs(share - VIZWIZ_UNANSWERABLE) < 0.06
    assert {r["category"] for r in rows} >= {"unanswerable", "other", "yes/no", "number"}


@pytest.mark.parametrize("lang", LANGS)
def test_every_question_kind_answers_from_the_scene(lang):
    rng = np.random.default_rng(0)
    seen = set()
    for s in (s for s in _scenes(n=150) if s.quality == "clear"):
        for kind, make in KINDS.items():
            qa = make(s, rng, lang)
            if qa is None:
                continue
            seen.add(kind)
            assert qa.answer in qa.choices
            if kind == "colour":
                target = [o for o in s.objects if language.colour_word(o.colour, lang) == qa.answer]
                assert any(f"{ref(o, s, lang, omit='colour')}" in qa.question for o in target)
            elif kind == "count":
                assert 0 <= int(qa.answer) <= len(s.objects)
            elif kind == "position":
                assert qa.answer in POSITION[lang].values()
            elif kind == "text":
                assert qa.answer == s.text
    assert seen == set(KINDS)


def test_references_pick_out_one_object():
    for s in _scenes(n=200):
        for o in s.objects:
            name = ref(o, s, "en")
            if name is None:  # two identical objects: nothing names one of them alone
                assert sum((p.shape, p.colour, p.size) == (o.shape, o.colour, o.size) for p in s.objects) > 1
                continue
            words = name.split()
            matching = [
                p
                for p in s.objects
                if p.shape == words[-1] and all(w in (p.size, p.colour) for w in words[:-1])
            ]
            assert matching == [o]


def test_descriptions_cover_every_object_in_both_languages():
    rng = np.random.default_rng(0)
    for s in (s for s in _scenes(n=50) if s.quality == "clear"):
        en, zh = describe(s, "en", rng), describe(s, "zh", rng)
        for o in s.objects:
            assert f"{o.size} {o.colour} {o.shape}" in en
            assert language.COLOUR_ZH[o.colour] + language.SHAPE_ZH[o.shape] in zh
        if s.text:
            assert s.text in en and s.text in zh


def test_prompt_styles_follow_llava():
    rng = np.random.default_rng(0)
    qa = QA("colour", "en", "What color is the circle?", "red", choices=tuple(COLOURS))
    text, answer = prompt(qa, "short", rng)
    assert text.endswith("\nAnswer the question using a single word or phrase.") and answer == "red"
    text, answer = prompt(qa, "mc", rng)
    lines = text.split("\n")
    assert lines[-1] == "Answer with the option's letter from the given choices directly."
    assert f"{answer}. red" in lines
    text, _ = prompt(qa, "vizwiz", rng)
    assert "respond with 'Unanswerable'" in text
    opts, idx = options(qa, rng, k=4)
    assert len(opts) == 4 == len(set(opts)) and opts[idx] == "red"


def test_unanswerable_questions():
    rng = np.random.default_rng(0)
    for s in _scenes(n=100):
        qa = unanswerable(s, rng)
        if qa is None:
            continue
        assert qa.answer == "unanswerable"
        if s.quality == "clear":  # asks about a shape the scene lacks
            assert qa.meta["reason"] == "absent" and all(o.shape not in qa.question for o in s.objects)


def test_corpora_are_in_llava_format():
    scenes = _scenes(n=80)
    rng = np.random.default_rng(0)
    pre = corpora.pretrain_records(scenes, rng)
    assert all(
        r["conversations"][0]["value"].startswith("<image>\n") and len(r["conversations"]) == 2 for r in pre
    )
    assert all(r["image"] == f"train/{s.id}.png" for r, s in zip(pre, scenes))
    fine = corpora.finetune_records(scenes, scenes[:10], rng)
    assert len(fine) == 90 and sum("image" not in r for r in fine) == 10
    for r in fine:
        turns = r["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n") == ("image" in r)
        assert sum(t["value"].count("<image>") for t in turns) == int("image" in r)
    texts = " ".join(t["value"] for r in fine for t in r["conversations"])
    assert "Answer the question using a single word or phrase." in texts
    assert "Answer with the option's letter from the given choices directly." in texts
    gqa = [r for r in fine if r["id"].endswith("-gqa")]  # GQA's share of LLaVA-665K
    assert gqa and all(
        r["conversations"][1]["value"] in {"yes", "no", "left", "right", *COLOURS, *SHAPES} for r in gqa
    )


def test_text_docs_for_the_llms():
    docs = corpora.text_docs(_scenes(n=100), np.random.default_rng(0), turns=(3, 5))
    assert {d["lang"] for d in docs} == {"en", "zh"}
    assert all(1 <= len(d["turns"]) <= 5 for d in docs)
    styles = {t["style"] for d in docs for t in d["turns"]}
    assert styles == {"short", "mc", "vizwiz"}
    assert all(d["lang"] == "en" for d in docs for t in d["turns"] if t["style"] == "vizwiz")


def test_ask_gives_up_on_impossible_kinds():
    s = next(s for s in _scenes(n=50) if s.text is None)
    assert ask(s, np.random.default_rng(0), "en", ("text",)) is None
