"""`basic mini data` end to end at a tiny size: layout, determinism, held-out scenes, the mini benchmarks
as `datasets.load_dataset` and lmms-eval's own metric functions see them, and the tokenizer."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import datasets
import pytest
from transformers import AutoTokenizer

from basic.mini.cli import data_main
from conftest import MINI_WORLD_ARGS

OPTIONS = dict(zip(MINI_WORLD_ARGS[::2], MINI_WORLD_ARGS[1::2]))
OTHER_SEED = [*MINI_WORLD_ARGS[2:], "--seed", "4"]
BENCHMARKS = {
    "vqav2": "testdev",
    "gqa": "testdev",
    "sqa_img": "test",
    "mmb_en": "dev",
    "mmb_cn": "dev",
    "mmvet": "test",
    "vizwiz": "testdev",
    "textvqa": "validation",
}


def _hashes(root: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(mini_world) -> Path:
    return mini_world


def _load(world: Path, bench: str) -> datasets.Dataset:
    return datasets.load_dataset(str(world / "benchmarks" / bench), split=BENCHMARKS[bench])


def test_same_seed_gives_identical_files_and_another_seed_other_data(world, tmp_path):
    again = tmp_path / "again"
    other = tmp_path / "other"
    data_main(["--out", str(again), *MINI_WORLD_ARGS])
    data_main(["--out", str(other), *OTHER_SEED])
    first = _hashes(world)
    assert first == _hashes(again)
    different = {k for k, v in _hashes(other).items() if first.get(k) != v}
    assert "llava/pretrain.json" in different and "benchmarks/vqav2/testdev.parquet" in different
    # datasets caches a local folder by name and card: the card's checksum keeps worlds apart
    assert _load(world, "vqav2")["question"] != _load(other, "vqav2")["question"]


def test_layout_and_manifest(world):
    manifest = json.loads((world / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["disjoint_checked"]
    for rel in manifest["files"]:
        assert (world / rel).is_file(), rel
    assert len(list((world / "images" / "train").glob("*.png"))) == int(OPTIONS["--train-images"])
    assert manifest["counts"]["mmb_en"] == 4 * int(
        OPTIONS["--bench-questions"]
    )  # base questions + three circular copies each


def test_llava_json_points_at_existing_images(world):
    for name in ("pretrain", "finetune"):
        records = json.loads((world / "llava" / f"{name}.json").read_text())
        assert len({r["id"] for r in records}) == len(records)
        for r in records:
            if "image" in r:
                assert (world / "images" / r["image"]).is_file()


def test_benchmarks_load_offline_with_the_real_columns(world):
    expected = {
        "vqav2": {
            "question_id",
            "image",
            "question",
            "answers",
            "multiple_choice_answer",
            "answer_type",
            "question_type",
        },
        "gqa": {"id", "imageId", "image", "question", "answer", "fullAnswer", "structural", "semantic"},
        "sqa_img": {"image", "question", "choices", "answer", "hint", "subject", "grade", "category"},
        "mmb_en": {
            "index",
            "image",
            "question",
            "hint",
            "A",
            "B",
            "C",
            "D",
            "answer",
            "category",
            "L2-category",
            "source",
            "split",
        },
        "mmvet": {"question_id", "image", "question", "answer", "capability"},
        "vizwiz": {"question_id", "image", "question", "answers", "category", "answerable"},
        "textvqa": {"question_id", "image", "image_id", "question", "answers", "ocr_tokens"},
    }
    expected["mmb_cn"] = expected["mmb_en"]
    for bench, columns in expected.items():
        ds = _load(world, bench)
        assert set(ds.column_names) == columns, bench
        assert ds[0]["image"].size == (64, 64)
        assert len(ds) >= int(OPTIONS["--bench-questions"])


def test_held_out_scenes_never_appear_in_training(world):
    """Every benchmark image differs from every training image; the world checks contents (`check_disjoint`)."""
    import hashlib

    train = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (world / "images" / "train").glob("*.png")}
    for bench, split in BENCHMARKS.items():
        table = datasets.Dataset.from_parquet(str(world / "benchmarks" / bench / f"{split}.parquet"))
        table = table.cast_column("image", datasets.Image(decode=False))
        assert not {hashlib.sha256(im["bytes"]).hexdigest() for im in table["image"]} & train


def test_vqa_style_answers_score_under_lmms_eval(world):
    from lmms_eval.tasks.textvqa.utils import textvqa_process_results
    from lmms_eval.tasks.vizwiz_vqa.utils import vizwiz_vqa_process_results
    from lmms_eval.tasks.vqav2.utils import vqav2_process_results

    for bench, score in (
        ("vqav2", vqav2_process_results),
        ("vizwiz", vizwiz_vqa_process_results),
        ("textvqa", textvqa_process_results),
    ):
        ds = _load(world, bench)
        for doc in ds:
            answers = doc["answers"]
            assert len(answers) == 10
            texts = [a["answer"] for a in answers] if bench == "vqav2" else answers
            reference = max(set(texts), key=texts.count)
            assert score(copy.deepcopy(doc), [reference])["exact_match"] > 0.6, (bench, doc["question"])
            assert score(copy.deepcopy(doc), ["zebra"])["exact_match"] == 0.0
            if bench == "vqav2":
                assert doc["multiple_choice_answer"] == reference
    viz = _load(world, "vizwiz")
    for doc in viz:
        assert doc["answerable"] == int(doc["category"] != "unanswerable")
        if not doc["answerable"]:
            assert max(set(doc["answers"]), key=doc["answers"].count) == "unanswerable"
    for doc in _load(world, "textvqa"):
        assert doc["ocr_tokens"][0].lower() in doc["answers"]


def test_multiple_choice_benchmarks_score_under_lmms_eval(world):
    from lmms_eval.tasks.mmbench.en_utils import (
        mmbench_doc_to_text,
        mmbench_evaluator,
        mmbench_process_results,
    )
    from lmms_eval.tasks.scienceqa.utils import sqa_doc_to_target, sqa_process_results

    for doc in _load(world, "sqa_img"):
        assert 0 <= doc["answer"] < len(doc["choices"])
        assert sqa_process_results(doc, [sqa_doc_to_target(doc)])["exact_match"] == 1.0
    for bench in ("mmb_en", "mmb_cn"):
        ds = _load(world, bench)
        by_base: dict[int, list[dict]] = {}
        for doc in ds:
            by_base.setdefault(doc["index"] % 1_000_000, []).append(doc)
            assert doc["question"] in mmbench_doc_to_text(doc, {"post_prompt": ""})
        for copies in by_base.values():
            assert sorted(d["index"] // 1_000_000 for d in copies) == [0, 1, 2, 3]
            assert len({d[d["answer"]] for d in copies}) == 1  # rotated options, same correct text
            assert len({d["answer"] for d in copies}) == 4  # ... under a different letter each time
        right = [mmbench_process_results(d, [d["answer"]])["gpt_eval_score"] for d in ds]
        always_a = [mmbench_process_results(d, ["A"])["gpt_eval_score"] for d in ds]
        assert mmbench_evaluator.eval_result(right, eval_method="static")[0] == 1.0
        assert mmbench_evaluator.eval_result(always_a, eval_method="static")[0] == 0.0  # circular evaluation
    en, cn = _load(world, "mmb_en"), _load(world, "mmb_cn")
    assert list(en["index"]) == list(cn["index"]) and list(en["answer"]) == list(cn["answer"])
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in q) for q in cn["question"])


def test_open_benchmarks(world):
    for doc in _load(world, "gqa"):
        assert doc["structural"] in {"verify", "query", "choose", "logical", "compare"}
        assert doc["semantic"] in {"rel", "attr", "obj"}
        assert doc["answer"] and doc["fullAnswer"].endswith(".")
    for doc in _load(world, "mmvet"):
        assert set(doc["capability"].split(",")) <= {"rec", "ocr", "spat", "math", "know", "gen"}
        assert doc["answer"] and doc["question_id"].startswith("v1_")


def test_tokenizer_is_standard_bilingual_and_has_no_image_token(world):
    tok = AutoTokenizer.from_pretrained(world / "tokenizer")
    assert "<image>" not in tok.get_vocab()
    for text in (
        "A large red circle is at the top left.",
        "左上方有一个大的红色圆形。",
        'A sign says "cafe".',
    ):
        assert tok.decode(tok(text)["input_ids"]) == text
    assert len(tok.tokenize(" red circle")) == 2  # world words are whole tokens
    assert tok.chat_template and tok.eos_token == "</s>"
