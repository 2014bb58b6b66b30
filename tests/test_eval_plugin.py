"""The `basic_llava` lmms-eval model: registration, prompting, batch-size invariance, log-likelihood, traps."""

from __future__ import annotations

import importlib
import importlib.metadata
import random
import subprocess
import sys

import pytest
import torch
from lmms_eval.api.instance import Instance, unwrap_generation_output
from PIL import Image

from basic.data.images import expand2square
from basic.eval.plugin import BasicLlava, cut_at_stops
from basic.testing.backbones import TOKENIZER_KINDS, tiny_tokenizer
from basic.testing.eval import save_tiny_llava

TASK, SPLIT = "t", "test"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a shared CPU threads wait for each other (30x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="module")
def docs():
    rng = random.Random(0)
    return [
        {
            "image": Image.new(
                "RGB", (rng.randint(8, 40), rng.randint(8, 40)), tuple(rng.randrange(256) for _ in "rgb")
            ),
            "question": "what colour is the shape ?" + " describe it ." * rng.randint(0, 3),
        }
        for _ in range(9)
    ]


def _model(checkpoint, docs, batch_size) -> BasicLlava:
    model = BasicLlava(pretrained=str(checkpoint), batch_size=batch_size)
    model.task_dict = {TASK: {SPLIT: docs}}
    return model


def _generate_requests(docs, gen_kwargs):
    return [
        Instance(
            "generate_until",
            (d["question"], dict(gen_kwargs), lambda doc: [doc["image"]], i, TASK, SPLIT),
            idx=0,
            metadata={"task": TASK, "doc_id": i, "repeats": 1},
        )
        for i, d in enumerate(docs)
    ]


def _loglikelihood_requests(docs, continuations):
    return [
        Instance(
            "loglikelihood",
            (d["question"], c, lambda doc: [doc["image"]], i, TASK, SPLIT),
            idx=0,
            metadata={"task": TASK, "doc_id": i, "repeats": 1},
        )
        for i, d in enumerate(docs)
        for c in continuations
    ]


def test_entry_point_resolves_to_the_plugin():
    points = importlib.metadata.entry_points(group="lmms_eval.models")
    assert "basic_llava" in [ep.name for ep in points]
    from lmms_eval.models import get_model, get_model_manifest

    assert get_model("basic_llava") is BasicLlava
    assert get_model_manifest("basic_llava").simple_class_path == "basic.eval.plugin.BasicLlava"


def test_plugin_resolves_when_imported_before_lmms_eval_models():
    # Importing the plugin first must not break the registry build it triggers (a circular import).
    code = "import basic.eval.plugin\nfrom lmms_eval.models import get_model\nprint(get_model('basic_llava').__name__)"
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("BasicLlava"), out.stderr[-2000:]


def test_batch_size_does_not_change_answers(checkpoint, docs):
    gen = {"max_new_tokens": 10, "until": ["\n\n"]}
    answers = {
        bs: _model(checkpoint, docs, bs).generate_until(_generate_requests(docs, gen)) for bs in (1, 4)
    }
    assert answers[1] == answers[4]
    assert len(set(answers[1])) > 1 and all(answers[1])  # real, varied generations, not one constant


def test_loglikelihood_is_batch_invariant_and_exact(checkpoint, docs):
    requests = _loglikelihood_requests(docs[:4], [" red", " blue square"])
    results = {bs: _model(checkpoint, docs, bs).loglikelihoods(requests) for bs in (1, 4)}
    for (a, greedy_a), (b, greedy_b) in zip(results[1], results[4]):
        assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b

    # Independent computation for one request: one unpadded forward pass over prompt + continuation.
    model = _model(checkpoint, docs, 1)
    doc = docs[0]
    image = expand2square(doc["image"].convert("RGB"), model.pad_colour)
    prompt = model.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": doc["question"]}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    inputs = model.processor(text=[prompt], images=[image], add_special_tokens=False, return_tensors="pt")
    cont = model.tokenizer(" red", add_special_tokens=False)["input_ids"]
    ids = torch.cat([inputs["input_ids"], torch.tensor([cont])], dim=1)
    with torch.no_grad():
        logits = model.model(input_ids=ids, pixel_values=inputs["pixel_values"]).logits[0].log_softmax(-1)
    n = inputs["input_ids"].shape[1]
    expected = sum(logits[n - 1 + k, t].item() for k, t in enumerate(cont))
    greedy = all(logits[n - 1 + k].argmax().item() == t for k, t in enumerate(cont))
    assert results[1][0] == (pytest.approx(expected, abs=1e-4), greedy)


def test_until_and_max_new_tokens_are_honoured(checkpoint, docs):
    model = _model(checkpoint, docs, 3)
    long = model.generate_until(_generate_requests(docs[:3], {"max_new_tokens": 12}))
    short = model.generate_until(_generate_requests(docs[:3], {"max_new_tokens": 3}))
    for a, b in zip(long, short):
        assert a.startswith(b) and len(b) < len(a)
    stop = next(ch for ch in long[0][1:] if ch.isascii() and ch.isalpha())  # a stop string inside the answer
    stopped = model.generate_until(_generate_requests(docs[:1], {"max_new_tokens": 12, "until": [stop]}))
    assert stopped[0] == cut_at_stops(long[0], [stop]).strip() and stop not in stopped[0]


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_until_stops_generation_with_every_kind_of_tokenizer(tmp_path, docs, kind):
    """Word-level, byte-level BPE and SentencePiece-style tokenizers: the answer stops at the stop string
    (transformers' own stop-string criterion fails on the word-level one)."""
    checkpoint = save_tiny_llava(tmp_path / kind, tokenizer=tiny_tokenizer("llama", kind=kind))
    model = _model(checkpoint, docs, 3)
    free = model.generate_until(_generate_requests(docs[:3], {"max_new_tokens": 12}))
    stop = (
        next(w for w in free[0].split()[1:] if w.isalpha())
        if kind == "word"
        else next(ch for ch in free[0][1:] if ch.isascii() and ch.isalpha())
    )
    stopped = model.generate_until(_generate_requests(docs[:3], {"max_new_tokens": 12, "until": [stop]}))
    assert stopped == [cut_at_stops(a, [stop]).strip() for a in free]
    assert stop not in stopped[0]


def test_other_family_prompts_with_its_own_template(tmp_path, docs):
    checkpoint = save_tiny_llava(tmp_path / "gemma", family="gemma", image_aspect_ratio="square")
    model = _model(checkpoint, docs, 2)
    assert model.image_aspect_ratio == "square"
    assert model._prompt("hi", 1).endswith("<start_of_turn>model\n")
    end_of_turn = model.tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in model.eos_ids  # generation stops at the end of the model's turn
    assert len(model.generate_until(_generate_requests(docs[:3], {"max_new_tokens": 4}))) == 3


def test_pad_checkpoints_get_square_images_in_the_mean_colour(checkpoint, docs):
    model = _model(checkpoint, docs, 1)
    assert model.pad_colour == tuple(int(255 * m) for m in model.processor.image_processor.image_mean)
    [image] = model._visuals(lambda doc: [doc["image"]], TASK, SPLIT, 0)
    assert image.size[0] == image.size[1] == max(docs[0]["image"].size)


def test_blind_replaces_every_image_by_a_blank_one_of_the_mean_colour_and_same_size(checkpoint, docs):
    sighted, blind = _model(checkpoint, docs, 1), BasicLlava(pretrained=str(checkpoint), blind="True")
    blind.task_dict = sighted.task_dict
    for i, doc in enumerate(docs):
        [seen] = sighted._visuals(lambda d: [d["image"]], TASK, SPLIT, i)
        [blank] = blind._visuals(lambda d: [d["image"]], TASK, SPLIT, i)
        assert blank.size == seen.size  # same size: the same image tokens
        assert set(blank.getdata()) == {blind.pad_colour}
    # Every doc asks the same question about another image: blind, the answers cannot differ.
    same = [{**d, "question": "what colour is the shape ?"} for d in docs]
    blind.task_dict = {TASK: {SPLIT: same}}
    answers = blind.generate_until(_generate_requests(same, {"max_new_tokens": 5}))
    assert len(set(answers)) == 1
    with pytest.raises(ValueError, match="blind='maybe'"):
        BasicLlava(pretrained=str(checkpoint), blind="maybe")


# ---- lmms-eval 0.7.3 traps this project relies on being handled ----------------------------------------


def test_filelock_pin_keeps_lmms_eval_importable():
    major = int(importlib.metadata.version("filelock").split(".")[0])
    assert major < 4, "lmms-eval 0.7.3 imports filelock._api, which filelock 4 removed"
    importlib.import_module("filelock._api")
    importlib.import_module("lmms_eval.evaluator")


def test_plugin_needs_no_decord_unlike_lmms_evals_llava_wrappers(checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)  # as if not installed (lmms-eval does not declare it)
    with pytest.raises(ImportError):
        importlib.import_module("lmms_eval.models.simple.llava_hf")
    from lmms_eval.models import get_model

    assert get_model("basic_llava").create_from_arg_string(f"pretrained={checkpoint}", {"batch_size": "2"})


def test_plugin_is_a_simple_model_so_loglikelihood_tasks_run():
    # lmms-eval's chat-style models refuse log-likelihood requests; multiple-choice tasks need a simple one.
    assert BasicLlava.is_simple
    with pytest.raises(ValueError, match="integer"):
        BasicLlava(pretrained="unused", batch_size="auto")


def test_loglikelihood_speaks_lmms_evals_conventions(checkpoint, docs):
    # lmms-eval 0.7.3 str()s a plain (value, is_greedy) tuple, which breaks multiple-choice scoring ...
    assert isinstance(unwrap_generation_output((-1.5, True))[0], str)
    # ... so the plugin wraps each pair, and returns the negative log-likelihood (it picks the argmin).
    model = _model(checkpoint, docs, 1)
    requests = _loglikelihood_requests(docs[:1], [" red"])
    [wrapped] = model.loglikelihood(requests)
    [(logprob, greedy)] = model.loglikelihoods(requests)
    assert unwrap_generation_output(wrapped)[0] == (-logprob, greedy) and logprob < 0


def test_the_training_engines_checkpoint_is_evaluated_as_trained(llava_argv, tmp_path, docs):
    from basic.train import parse_args, train

    out = tmp_path / "stage2"
    train(*parse_args(llava_argv(2, "gemma", "clip", out)))
    model = _model(out, docs, 4)
    assert model.image_aspect_ratio == "pad"
    end_of_turn = model.tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in model.eos_ids
    gen = {"max_new_tokens": 6}
    assert model.generate_until(_generate_requests(docs, gen)) == _model(out, docs, 1).generate_until(
        _generate_requests(docs, gen)
    )
