"""`basic mini backbones` at a tiny size: standard HF checkpoints that vanilla Auto* classes load, the
families' real architectures and chat formats, the quality metrics, and the training target masks."""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoProcessor, AutoTokenizer

from basic.data.labels import ROLES
from basic.data.templates import get_template
from basic.families import FAMILIES
from basic.mini import prebuilt
from basic.mini.backbones import ORDER
from basic.mini.cli import backbones_main
from basic.mini.encoders import contrast_batches, mixed_batches, object_batches, pixel_digest
from basic.mini.llms import (
    LLM_SPECS,
    LLMSpec,
    build_llm,
    conversation,
    encode,
    generation_config,
    train_llm,
)
from basic.mini.quality import linear_probe, text_qa_accuracy
from basic.mini.scenes import COLOURS, SHAPES, SIZES
from basic.mini.tokenizer import family_tokenizer

ARCHITECTURES = {
    "vicuna-7b": "LlamaForCausalLM",
    "vicuna-13b": "LlamaForCausalLM",
    "gemma-2b": "GemmaForCausalLM",
    "phi3-3.8b": "Phi3ForCausalLM",
    "mistral-7b": "MistralForCausalLM",
}


@pytest.fixture(scope="module")
def world(mini_world) -> Path:
    return mini_world


@pytest.fixture(scope="module")
def backbones(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini") / "backbones"
    assert (
        backbones_main(
            ["--data", str(world), "--out", str(out), *TINY, "--pack", str(out.parent / "artifact.tar.gz")]
        )
        == 0
    )
    return out


TINY = [
    "--llm-steps",
    "3",
    "--llm-batch",
    "8",
    "--clip-steps",
    "2",
    "--siglip-steps",
    "2",
    "--encoder-batch",
    "16",
    "--workers",
    "1",
    "--threads",
    "1",
]


@pytest.mark.slow  # trains backbones
def test_the_shipped_artifact_is_unpacked_only_for_the_inputs_it_was_built_from(
    world, backbones, tmp_path, capsys
):
    artifact = backbones.parent / "artifact.tar.gz"
    out = tmp_path / "unpacked"
    # Same world and settings (the split of work over processes aside): unpacked, byte for byte, no training.
    assert (
        backbones_main(
            [
                "--data",
                str(world),
                "--out",
                str(out),
                *TINY[:-4],
                "--workers",
                "2",
                "--prebuilt",
                str(artifact),
            ]
        )
        == 0
    )
    assert "unpacked" in capsys.readouterr().out
    built = sorted(p.relative_to(backbones) for p in backbones.rglob("*") if p.is_file())
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == built
    assert all((out / f).read_bytes() == (backbones / f).read_bytes() for f in built)
    # Other settings: built, naming what differs.
    other = tmp_path / "other"
    assert (
        backbones_main(
            [
                "--data",
                str(world),
                "--out",
                str(other),
                *TINY,
                "--names",
                "mistral-7b",
                "--prebuilt",
                str(artifact),
            ]
        )
        == 0
    )
    assert "was built from another settings" in capsys.readouterr().out
    assert (other / "mistral-7b" / "model.safetensors").is_file() and not (other / "vicuna-7b").exists()
    # A damaged file is refused.
    damaged = tmp_path / "damaged"
    prebuilt.pack(backbones, tmp_path / "a.tar.gz", {"x": 1})
    record = prebuilt.read_record(tmp_path / "a.tar.gz")
    record["files"]["metrics.json"] = "0" * 64
    with tarfile.open(tmp_path / "a.tar.gz") as src, tarfile.open(tmp_path / "bad.tar.gz", "w:gz") as dst:
        for m in src.getmembers():
            data = json.dumps(record).encode() if m.name == prebuilt.RECORD else src.extractfile(m).read()
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    with pytest.raises(ValueError, match="metrics.json does not match its sha256"):
        prebuilt.unpack(tmp_path / "bad.tar.gz", damaged)


@pytest.mark.slow  # trains backbones
def test_metrics_json(backbones):
    metrics = json.loads((backbones / "metrics.json").read_text())
    assert set(metrics["backbones"]) == set(ORDER)
    assert set(metrics["llm_text_qa_accuracy"]) == set(ARCHITECTURES)
    for m in metrics["backbones"].values():
        assert m["wall_s"] > 0 and m["seed"] >= 0
        if m["type"] == "llm":
            assert 0 <= m["text_qa_accuracy"] <= 1 and m["text_qa"]["all"]["n"] == 40
            assert {"lang/en", "lang/zh"} <= set(m["text_qa"])
            styles = {k: v["n"] for k, v in m["text_qa"].items() if k.startswith("style/")}
            assert set(styles) <= {"style/short", "style/mc", "style/vizwiz"} and sum(styles.values()) == 40
        else:
            assert set(m["probe"]) == {"pooled/colour", "pooled/shape", "patches/colour", "patches/shape"}
    assert set(metrics["goals_met"]) == {"llm_text_qa_accuracy", "encoder_probe_accuracy"}


@pytest.mark.slow  # trains backbones
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_llms_load_with_auto_classes_and_chat(backbones, name):
    path = backbones / name
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == ARCHITECTURES[name]
    assert model.config._attn_implementation == "sdpa"  # trained eager; BASIC's attention capture needs SDPA
    assert model.config.num_hidden_layers % 2 == 0
    assert "<image>" not in tok.get_vocab()
    family = LLM_SPECS[name].family
    _, _, template, specials = FAMILIES[family]
    assert tok.chat_template == get_template(template).jinja
    assert tok.bos_token == specials["bos"] and tok.eos_token == specials["eos"]
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What color is the circle?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    out = model.generate(ids, max_new_tokens=3)
    assert out.shape[1] > ids.shape[1]
    if family == "gemma":
        assert model.config.tie_word_embeddings
        assert (
            model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
        )


@pytest.mark.slow  # trains backbones
def test_vicuna_13b_is_deeper_and_wider(backbones):
    small = AutoModelForCausalLM.from_pretrained(backbones / "vicuna-7b").config
    large = AutoModelForCausalLM.from_pretrained(backbones / "vicuna-13b").config
    assert large.num_hidden_layers > small.num_hidden_layers and large.hidden_size > small.hidden_size


@pytest.mark.slow  # trains backbones
@pytest.mark.parametrize("name,cls", [("clip-l-336", "CLIPModel"), ("siglip", "SiglipModel")])
def test_encoders_load_with_auto_classes(backbones, world, name, cls):
    model = AutoModel.from_pretrained(backbones / name)
    processor = AutoProcessor.from_pretrained(backbones / name)
    assert type(model).__name__ == cls and model.config.vision_config._attn_implementation == "sdpa"
    from PIL import Image

    image = Image.open(next((world / "images" / "train").glob("*.png")))
    inputs = processor(images=[image], text=["a large red circle"], padding="max_length", return_tensors="pt")
    out = model(**inputs)
    assert out.logits_per_image.shape == (1, 1)
    vision = model.vision_model(pixel_values=inputs["pixel_values"], output_hidden_states=True)
    patches = (64 // model.config.vision_config.patch_size) ** 2
    assert vision.hidden_states[-2].shape[1] in (patches, patches + 1)  # SigLIP has no CLS token


def messages(doc: dict) -> list[dict]:
    return [{"role": ROLES[turn["from"]], "content": turn["value"]} for turn in conversation(doc)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_targets_are_the_answers_and_end_of_turn(world, family):
    from transformers import PreTrainedTokenizerFast

    tok = family_tokenizer(PreTrainedTokenizerFast.from_pretrained(world / "tokenizer"), family)
    docs = [json.loads(line) for line in (world / "text" / "llm_train.jsonl").read_text().splitlines()[:20]]
    eot = get_template(FAMILIES[family][2]).end_of_turn_for(tok)
    for doc, item in zip(docs, encode(docs, tok, family)):
        assert (
            item.ids == tok.apply_chat_template(messages(doc), tokenize=True, return_dict=True)["input_ids"]
        )
        # the first target is the first token after the generation prompt (the answer lead included)
        prompt = tok.apply_chat_template(
            messages(doc)[:1], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        assert item.ids[: len(prompt)] == prompt and item.targets[0] == len(prompt)
        target_text = tok.decode([item.ids[t] for t in item.targets], skip_special_tokens=False)
        assert target_text.replace(" ", "") == "".join(t["answer"] + eot for t in doc["turns"]).replace(
            " ", ""
        )


def test_pretraining_docs_are_question_turns(world):
    docs = [json.loads(line) for line in (world / "text" / "llm_train.jsonl").read_text().splitlines()]
    # 3-5 question turns, half the English clear-scene documents opening with a brief-caption turn
    questions = [[t for t in d["turns"] if t["style"] != "caption"] for d in docs]
    assert docs and all(1 <= len(q) <= 5 for q in questions)
    assert {t["style"] for q in questions for t in q} == {"short", "mc", "vizwiz"}
    briefed = [d for d in docs if any(t["style"] == "caption" for t in d["turns"])]
    assert briefed and all(d["turns"][0]["style"] == "caption" and d["lang"] == "en" for d in briefed)
    assert all(sum(t["style"] == "caption" for t in d["turns"]) == 1 for d in briefed)
    evals = [json.loads(line) for line in (world / "text" / "llm_eval.jsonl").read_text().splitlines()]
    assert all(len(d["turns"]) == 1 for d in evals)


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_teacher_forced_accuracy_equals_greedy_generation(world, family):
    """The metric's one-pass shortcut gives exactly what greedy decoding from the generation prompt would
    (llama: the v1 template, whose answers follow "ASSISTANT:" after a space)."""
    from transformers import PreTrainedTokenizerFast

    docs = [json.loads(line) for line in (world / "text" / "llm_eval.jsonl").read_text().splitlines()[:16]]
    spec = LLMSpec(family, layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128)
    tok = family_tokenizer(PreTrainedTokenizerFast.from_pretrained(world / "tokenizer"), spec.family)
    model = build_llm(spec, tok, seed=0)
    items = encode(docs, tok, spec.family)
    train_llm(
        model, items[:8], steps=40, batch_size=8, lr=1e-2, seed=0, pad_id=tok.eos_token_id
    )  # learn half
    accuracy = text_qa_accuracy(model, items, pad_id=tok.eos_token_id)["all"]["accuracy"]
    assert 0 < accuracy < 1
    gen = generation_config(tok, spec.family)
    hits = []
    for doc, item in zip(docs, items):
        prompt = tok.apply_chat_template(
            messages(doc)[:1], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        out = model.generate(prompt, generation_config=gen, max_new_tokens=len(item.targets))
        new = out[0, prompt.shape[1] :].tolist()
        hits.append(new[: len(item.targets)] == [item.ids[t] for t in item.targets])
    assert accuracy == pytest.approx(np.mean(hits))


def test_linear_probe_separates_separable_data_only():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=gen)
    centres = torch.randn(3, 8, generator=gen) * 4
    x = centres[y] + torch.randn(300, 8, generator=gen)
    assert linear_probe(x[:200], y[:200], x[200:], y[200:], classes=3) > 0.95
    noise = torch.randn(300, 8, generator=gen)
    assert linear_probe(noise[:200], y[:200], noise[200:], y[200:], classes=3) < 0.6


def test_unknown_backbone_and_missing_data_are_clear_errors(tmp_path):
    from basic.mini.backbones import BackboneSettings, build_backbones

    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbones(tmp_path, tmp_path / "out", 0, BackboneSettings(names=("llama-70b",)))
    with pytest.raises(FileNotFoundError, match="basic mini data"):
        build_backbones(tmp_path, tmp_path / "out", 0, BackboneSettings(names=("vicuna-7b",)))


def test_hard_contrast_batches_differ_only_in_shapes():
    captions = [
        f"a {size} {colour} {shape}"
        for size in ("small", "large")
        for colour in ("red", "blue")
        for shape in SHAPES
    ] + ["a very dark photo"] * 3
    batches = contrast_batches(captions, 6, np.random.default_rng(0), hard=1.0)
    for _ in range(5):
        batch = [captions[i] for i in next(batches)]
        assert len(set(batch)) == len(batch) == 6
        assert (
            len({c.rsplit(" ", 1)[0] for c in batch[:4]}) == 1
        )  # one size-and-colour group, all four shapes
    # No caption differs from another by shapes alone: random batches, still of distinct captions.
    fallback = next(contrast_batches(captions[:1] + captions[-3:], 8, np.random.default_rng(0), hard=1.0))
    assert len(fallback) == 2 and 0 in fallback.tolist()


def test_object_batches_are_single_objects_with_distinct_captions():
    images, captions = next(object_batches(20, np.random.default_rng(0), 32))
    assert len(images) == len(set(captions)) == 20 and images[0].size == (32, 32)
    words = [caption.split() for caption in captions]
    assert all(w[0] == "a" and w[1] in SIZES and w[2] in COLOURS and w[3] in SHAPES for w in words)
    for g in range(0, 20, len(SHAPES)):  # groups of one size and colour in every shape
        assert len({(w[1], w[2]) for w in words[g : g + 4]}) == 1 and {w[3] for w in words[g : g + 4]} == set(
            SHAPES
        )
    # More than there are distinct captions: capped, not an endless loop.
    _, captions = next(object_batches(1000, np.random.default_rng(0), 32))
    assert len(captions) == len(set(captions)) == len(SIZES) * len(COLOURS) * len(SHAPES)
    # Re-rendering a held-out (probe) image is an error, never a silent overlap.
    with pytest.raises(AssertionError, match="equals a probe image"):
        next(object_batches(20, np.random.default_rng(0), 32, frozenset({pixel_digest(images[3])})))


def test_mixed_batches_draw_both_sources():
    pixel_values, input_ids = torch.zeros(8, 3, 4, 4), torch.arange(8)[:, None].repeat(1, 5)
    captions = [f"caption {i}" for i in range(8)]
    objects = iter(lambda: ([None] * 4, ["x"] * 4), None)
    batches = mixed_batches(
        pixel_values,
        input_ids,
        captions,
        objects,
        lambda texts: torch.full((len(texts), 5), -1),
        lambda images: torch.ones(len(images), 3, 4, 4),
        4,
        np.random.default_rng(0),
        0.5,
    )
    kinds = [int(next(batches)[1][0, 0]) == -1 for _ in range(40)]
    assert 10 < sum(kinds) < 30  # about half object batches, half scene batches
    assert all(len(next(batches)[0]) == 4 for _ in range(5))


def _benchmark(name: str):
    """The script benchmarks/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # trains backbones
def test_budget_benchmark_trains_each_budget(world, tmp_path):
    """benchmarks/backbone_budget.py: one entry per budget, with each backbone's time and quality."""
    budget = _benchmark("backbone_budget")
    out = tmp_path / "budget.json"
    result = budget.main(
        [
            "--data",
            str(world),
            "--names",
            "vicuna-7b",
            "clip-l-336",
            "--budgets",
            "2:1",
            "3:2",
            "--workers",
            "1",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == result
    assert [(r["llm_steps"], r["encoder_steps"]) for r in result["runs"]] == [(2, 1), (3, 2)]
    for run in result["runs"]:
        assert 0 <= run["backbones"]["vicuna-7b"]["text_qa_accuracy"] <= 1
        assert 0 <= run["backbones"]["clip-l-336"]["pooled/shape"] <= 1
    with pytest.raises(SystemExit):
        budget.main(["--budgets", "300"])


@pytest.mark.slow  # trains backbones
def test_binding_benchmark_reports_accuracy_by_object_count(world, tmp_path):
    """benchmarks/llm_binding.py: one point per chunk, with the held-out accuracy per number of objects."""
    binding = _benchmark("llm_binding")
    out = tmp_path / "binding.json"
    assert (
        binding.main(
            [
                "--tokenizer",
                str(world / "tokenizer"),
                "--steps",
                "4",
                "--every",
                "2",
                "--batch",
                "4",
                "--docs",
                "60",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert [p["step"] for p in result["points"]] == [2, 4] and result["eval_docs"] > 0
    for point in result["points"]:
        assert 0 <= point["all"] <= 1 and any(key.startswith("objects/") for key in point)
    # The hop-by-hop auxiliary losses train too; they need colour questions and three layers or more.
    circuit = tmp_path / "circuit.json"
    assert (
        binding.main(
            [
                "--tokenizer",
                str(world / "tokenizer"),
                "--steps",
                "2",
                "--every",
                "2",
                "--batch",
                "4",
                "--docs",
                "60",
                "--circuit",
                "prev,query,match",
                "--out",
                str(circuit),
            ]
        )
        == 0
    )
    assert json.loads(circuit.read_text())["args"]["circuit"] == "prev,query,match"
    for bad in (
        ["--circuit", "attend"],
        ["--circuit", "prev", "--kinds", "shape"],
        ["--circuit", "prev", "--name", "gemma-2b"],
    ):
        with pytest.raises(SystemExit):
            binding.main(["--tokenizer", str(world / "tokenizer"), *bad])
    docs = binding.documents(binding._scenes(0, "llm_train", "t", 20), ("colour",), "short", 0)
    assert docs and all(d["turns"][0]["kind"] == "colour" and d["turns"][0]["style"] == "short" for d in docs)
