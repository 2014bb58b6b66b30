"""`basic analyze`: per-patch ground truth of the mini scenes, the vocabulary filter, and the whole analysis on a
tiny checkpoint, including projectors whose output is known (every patch exactly one word's embedding)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from basic.eval import analysis
from basic.mini.scenes import (
    BACKGROUND,
    MIXED,
    SIGN,
    Obj,
    Scene,
    annotations,
    patch_labels,
    pixel_key,
    render,
)
from basic.model import projector_of
from basic.testing.backbones import tiny_tokenizer
from basic.testing.eval import save_tiny_llava, write_benchmark_fixtures

TASKS = "mini_vqav2,mini_gqa"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    return {
        "checkpoint": save_tiny_llava(root / "checkpoint", vocab_size=600),
        "data": write_benchmark_fixtures(root / "data", n=9),
        "root": root,
    }


def _analyse(world, out: Path, checkpoint=None, **flags) -> dict:
    argv = [
        "--checkpoint",
        str(checkpoint or world["checkpoint"]),
        "--data",
        str(world["data"]),
        "--out",
        str(out),
        "--tasks",
        TASKS,
        "--images",
        "6",
        "--examples",
        "2",
        "--batch_size",
        "4",
    ]
    for name, value in flags.items():
        argv += [f"--{name}", str(value)]
    assert analysis.main(argv) == 0
    return json.loads(out.read_text(encoding="utf-8"))


def _word_projector(world, word_id: int, name: str) -> Path:
    """The tiny checkpoint with a projector whose every output is exactly row `word_id` of the input embeddings."""
    out = world["root"] / name
    model = LlavaForConditionalGeneration.from_pretrained(world["checkpoint"])
    projector = projector_of(model)
    with torch.no_grad():
        projector.linear_2.weight.zero_()
        projector.linear_2.bias.copy_(model.get_input_embeddings().weight[word_id])
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(world["checkpoint"]).save_pretrained(out)
    return out


# ---- ground truth and vocabulary -------------------------------------------------------------------------


def test_patch_labels_follow_the_objects_and_the_sign():
    big = Obj("square", "red", "large", row=0, col=0, x=1 / 6, y=1 / 6, rgb=(200, 0, 0))
    small = Obj("circle", "blue", "small", row=1, col=2, x=5 / 6, y=0.5, rgb=(0, 0, 200))
    scene = Scene("s", (big, small), text="cafe", sign_row=2, background=(230, 230, 230))
    labels = patch_labels(scene, 8)  # 8 x 8 patches of 1/8 of the side
    assert labels.shape == (8, 8)
    assert (labels[:2, :3] == 0).all()  # the large square covers [0.04, 0.29] of both sides
    assert labels[3, 6] == labels[4, 6] == 1 and labels[3, 5] == MIXED  # the small circle, and its edge
    assert (labels[6:] == SIGN).all() and labels[5, 0] == MIXED  # the sign, bottom third, 0.05-0.95 wide
    assert labels[0, 4] == labels[4, 2] == BACKGROUND
    assert set(labels.flatten().tolist()) <= {0, 1, SIGN, BACKGROUND, MIXED}


def test_annotations_key_a_scene_by_its_pixels_however_encoded(tmp_path):
    scene = Scene(
        "s", (Obj("star", "green", "small", 1, 1, 0.5, 0.5, (0, 160, 0)),), background=(220, 220, 220)
    )
    image = render(scene, 32)
    path = tmp_path / "x.png"
    image.save(path)
    from PIL import Image

    [record] = annotations([scene, scene], 32)
    assert record["pixels"] == pixel_key(Image.open(path)) and Scene.from_json(record["scene"]) == scene


def test_vocabulary_filter_keeps_whole_words_only():
    tokenizer = tiny_tokenizer("llama", vocab_size=600)
    words = analysis.token_words(tokenizer, len(tokenizer) + 2)
    assert len(words) == len(tokenizer) + 2 and words[-1] is None  # rows past the tokenizer's vocabulary
    vocab = tokenizer.get_vocab()
    assert words[vocab["Ġred"]] == "red" and words[vocab["Ġthe"]] == "the"
    assert all(words[i] is None for i in tokenizer.all_special_ids)
    meaningful = analysis.meaningful_ids(words, analysis.stop_words())
    assert meaningful[vocab["Ġred"]] and meaningful[vocab["Ġtriangle"]]
    assert (
        not meaningful[vocab["Ġthe"]]
        and not meaningful[vocab["Ġ."]]
        and not meaningful[tokenizer.eos_token_id]
    )
    assert not any(
        meaningful[i] for piece, i in vocab.items() if not piece.startswith("Ġ")
    )  # sub-word pieces
    assert {"the", "is", "of"} <= analysis.stop_words() and "red" not in analysis.stop_words()


def test_overlap_scores():
    assert analysis.token_f1("A red circle.", "a red circle") == 1.0
    assert analysis.token_f1("red", "blue") == 0.0 and analysis.token_f1("", "") == 1.0
    assert analysis.token_f1("a red circle", "a red square") == pytest.approx(2 / 3)


# ---- the analysis on a tiny checkpoint -------------------------------------------------------------------


def test_analysis_json(world, tmp_path):
    result = _analyse(world, tmp_path / "a.json")
    assert set(result) == {"summary", "setup", "layers", "replacement", "examples"}
    summary = result["summary"]
    assert set(summary) == {
        "initial_meaningful_fraction",
        "initial_meaningful_per_576",
        "initial_eos_fraction",
        "peak_meaningful_fraction",
        "peak_meaningful_layer",
        "last_layer_eos_fraction",
        "replacement_exact_match",
        "replacement_token_f1",
        "blank_exact_match",
        "blank_token_f1",
        "initial_grounded_fraction",
        "peak_grounded_fraction",
    }
    assert all(isinstance(v, (int, float)) for v in summary.values())  # what `dvc metrics show` reads
    setup = result["setup"]
    assert setup["images"] == 6 and setup["patches_per_image"] == 16 and setup["llm_layers"] == 4
    assert setup["tasks"] == TASKS and setup["eos_tokens"] == "</s>"
    assert [layer["layer"] for layer in result["layers"]] == [0, 1, 2, 3, 4]
    for layer in result["layers"]:
        for reading in analysis.READINGS:
            stats = layer[reading]
            for key in (
                "meaningful_fraction",
                "eos_fraction",
                "grounded_fraction",
                "grounded_object_fraction",
                "grounded_background_fraction",
            ):
                assert stats[key] is None or 0.0 <= stats[key] <= 1.0, (key, stats)
            assert sum(share for _, share in stats["top_tokens"]) <= 1.0 + 1e-5  # rounded to 6 digits
    per_576 = 576 * summary["initial_meaningful_fraction"]
    assert summary["initial_meaningful_per_576"] == pytest.approx(per_576, abs=0.01)
    replacement = {r["task"]: r for r in result["replacement"]}
    assert (
        replacement["all"]["questions"] == 6
        and sum(replacement[t]["questions"] for t in TASKS.split(",")) == 6
    )
    example = result["examples"][0]
    assert len(result["examples"]) == 2 and example["grid"] == 4 and len(example["labels"]) == 16
    assert len(example["matches"]["cosine"]) == 5
    assert all(len(layer) == 16 for layer in example["matches"]["logit_lens"])
    assert example["image_png"] and example["question"].endswith(
        "Answer the question using a single word or phrase."
    )
    # The batch (left padding) changes nothing: every number, match and answer is the same one image at a time.
    assert _analyse(world, tmp_path / "b.json", batch_size=1) == result


def test_a_projector_that_outputs_a_word_matches_that_word(world, tmp_path):
    """Every patch's projector output is exactly the embedding of "top": every initial match is "top", a
    meaningful word and the background's (layout) word, never an object's; replacing the embeddings by the
    matched token's changes nothing, so every answer is the same."""
    tokenizer = tiny_tokenizer("llama", vocab_size=600)
    top = tokenizer.get_vocab()["Ġtop"]
    result = _analyse(world, tmp_path / "top.json", _word_projector(world, top, "top"))
    initial = result["layers"][0]["cosine"]
    assert initial["top_tokens"] == [["top", 1.0]]
    assert initial["meaningful_fraction"] == 1.0 and initial["eos_fraction"] == 0.0
    assert initial["grounded_background_fraction"] == 1.0 and initial["grounded_object_fraction"] == 0.0
    assert all(token == "top" for token in result["examples"][0]["matches"]["cosine"][0])
    assert (
        result["summary"]["replacement_exact_match"] == 1.0
        and result["summary"]["replacement_token_f1"] == 1.0
    )
    assert result["summary"]["initial_meaningful_per_576"] == 576.0


def test_a_projector_that_outputs_the_end_token_matches_it(world, tmp_path):
    eos = tiny_tokenizer("llama", vocab_size=600).eos_token_id
    result = _analyse(world, tmp_path / "eos.json", _word_projector(world, eos, "eos"))
    initial = result["layers"][0]["cosine"]
    assert initial["eos_fraction"] == 1.0 and initial["meaningful_fraction"] == 0.0
    assert initial["grounded_fraction"] == 0.0
    assert result["summary"]["initial_eos_fraction"] == 1.0


@pytest.mark.slow  # a second whole analysis
def test_full_profile_reads_any_lmms_eval_task_without_ground_truth(world, tmp_path):
    result = _analyse(world, tmp_path / "full.json", profile="full", dtype="float32")
    assert result["setup"]["profile"] == "full" and "initial_grounded_fraction" not in result["summary"]
    assert (
        "grounded_fraction" not in result["layers"][0]["cosine"] and result["examples"][0]["labels"] is None
    )


def test_errors_name_what_is_missing(world, tmp_path, capsys):
    scenes = Path(world["data"]) / "benchmarks" / "scenes.jsonl"
    moved = scenes.rename(scenes.with_suffix(".bak"))
    try:  # `basic analyze` is analysis.main (basic.cli); in this process it skips a second import of lmms-eval
        code = analysis.main(
            [
                "--checkpoint",
                str(world["checkpoint"]),
                "--data",
                str(world["data"]),
                "--out",
                str(tmp_path / "x.json"),
                "--tasks",
                TASKS,
            ]
        )
    finally:
        moved.rename(scenes)
    assert code == 1 and "scenes.jsonl: missing" in capsys.readouterr().err
    with pytest.raises(analysis.AnalysisError, match="no lmms-eval task mini_nothing"):
        analysis.load_tasks(["mini_nothing"], Path(world["data"]), "mini", tmp_path)
