"""The shipped manifests (data and backbones) parse, pin what can be pinned, and name every file LLaVA-1.5 needs."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from basic.full import checkpoints as ck
from basic.full import download as dl

# What LLaVA-1.5's scripts read (research/llava_recipe.md section 5, reference_numbers.yaml `data`).
PRETRAIN_JSON = "LLaVA-Pretrain/blip_laion_cc_sbu_558k.json"
PRETRAIN_IMAGES = "LLaVA-Pretrain/images"
FINETUNE_JSON = "llava_v1_5_mix665k.json"
FINETUNE_IMAGE_FOLDERS = [
    "coco/train2017",
    "gqa/images",
    "ocr_vqa/images",
    "textvqa/train_images",
    "vg/VG_100K",
    "vg/VG_100K_2",
]
# Image paths as they appear in llava_v1_5_mix665k.json (one per source), relative to --image_folder.
MIX665K_IMAGES = [
    "coco/train2017/000000033471.jpg",
    "gqa/images/2354786.jpg",
    "ocr_vqa/images/140031996.jpg",
    "textvqa/train_images/011e7e629fb9ae7b.jpg",
    "vg/VG_100K/2316529.jpg",
    "vg/VG_100K_2/2364.jpg",
]


@pytest.mark.parametrize("name", dl.manifest_names())
def test_every_shipped_manifest_parses_and_is_well_formed(name):
    m = dl.load_manifest(name)
    assert m.files and m.name == name
    for f in m.files:
        assert f.url is None and f.manual or re.match(r"https?://", f.url), f.path
        assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256)
        if f.unpack:
            assert f.provides, f"{f.path}: an archive says which folder it yields"


def test_full_manifest_names_every_file_llava_1_5_needs():
    m = dl.load_manifest("full")
    provided = m.provides
    assert {PRETRAIN_JSON, PRETRAIN_IMAGES, FINETUNE_JSON} <= provided
    assert set(FINETUNE_IMAGE_FOLDERS) <= provided
    for image in MIX665K_IMAGES:  # every image path of the mix lies in a folder some entry yields
        assert any(PurePosixPath(image).is_relative_to(folder) for folder in provided), image
    assert {f.path for f in dl.load_manifest("pretrain").files} | {
        f.path for f in dl.load_manifest("finetune").files
    } == {f.path for f in m.files}


def test_ocr_vqa_is_fetched_per_image_with_an_explicit_missing_limit():
    (lst,) = dl.load_manifest("ocr_vqa").image_lists
    assert lst.ext == ".jpg" and lst.dest == "ocr_vqa/images" and lst.referenced_by == FINETUNE_JSON
    assert 0 < lst.max_missing and lst.report.startswith("ocr_vqa/")
    # the finetune manifest fetches the mix json in the same run, before the list needs it
    assert FINETUNE_JSON in {f.path for f in dl.load_manifest("finetune").files}


def test_hub_urls_are_pinned_to_a_commit_except_the_declared_community_mirror():
    for name in dl.manifest_names():
        for f in dl.load_manifest(name).files:
            if f.url and "huggingface.co" in f.url:
                pinned = re.search(r"/resolve/[0-9a-f]{40}/", f.url)
                assert pinned or name == "ocr_vqa_mirror", f.url


def test_every_url_can_be_pointed_at_a_mirror():
    mirrors = dl.Mirrors.from_args(["http=file:///mirror/http"], environ={})
    for name in dl.manifest_names():
        for f in dl.load_manifest(name).files:
            if f.url:
                assert mirrors.resolve(f.url).startswith("file:///mirror/"), f.url


def test_bad_manifests_are_refused_with_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"name": "b", "files": [{"path": "a", "url": "http://x/a", "sha256": None, "md5": "x"}]}
        )
    )
    with pytest.raises(dl.DownloadError, match=r"bad.yaml: files\[0\]\.md5: unknown key"):
        dl.load_manifest(bad)
    bad.write_text(
        yaml.safe_dump({"name": "b", "files": [{"path": "a", "url": "http://x/a", "sha256": "ABC"}]})
    )
    with pytest.raises(dl.DownloadError, match=r"files\[0\] \(a\): sha256 must be 64 lowercase hex"):
        dl.load_manifest(bad)
    bad.write_text(
        yaml.safe_dump({"name": "b", "files": [{"path": "../a", "url": "http://x/a", "sha256": None}]})
    )
    with pytest.raises(dl.DownloadError, match="must be a relative path inside DEST"):
        dl.load_manifest(bad)
    bad.write_text(yaml.safe_dump({"name": "b", "include": ["bad"]}))
    with pytest.raises(dl.DownloadError, match="include cycle"):
        dl.load_manifest(bad)
    with pytest.raises(dl.DownloadError, match="neither a file nor a shipped manifest"):
        dl.load_manifest("no-such-manifest")


# ---------------------------------------------------------------------------------------------------------
# Backbones (`basic checkpoints`)

STUDY_BACKBONES = {"clip-l-336", "siglip", "vicuna-7b", "vicuna-13b", "gemma-2b", "phi3-3.8b", "mistral-7b"}


def test_the_seven_backbones_are_pinned_to_commits():
    backbones = ck.load_backbones()
    assert set(backbones) == STUDY_BACKBONES  # docs/interfaces.md names
    assert backbones["vicuna-7b"].repo == "lmsys/vicuna-7b-v1.5"
    assert backbones["clip-l-336"].repo == "openai/clip-vit-large-patch14-336"
    assert {b.name for b in backbones.values() if b.gated} == {"gemma-2b", "mistral-7b"}


def test_only_one_weight_format_and_no_foreign_files_are_selected():
    mistral = [
        "config.json",
        "consolidated.safetensors",
        "model-00001-of-00003.safetensors",
        "model.safetensors.index.json",
        "pytorch_model-00001-of-00003.bin",
        "tokenizer.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "README.md",
    ]
    assert ck.select_files(mistral) == sorted(
        [
            "config.json",
            "model-00001-of-00003.safetensors",
            "model.safetensors.index.json",
            "tokenizer.model",
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
            "README.md",
        ]
    )
    vicuna = [
        "config.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model.bin.index.json",
        "tokenizer.model",
    ]
    assert "pytorch_model-00001-of-00002.bin" in ck.select_files(vicuna)
    gemma = ["config.json", "model.safetensors", "gemma-2b-it.gguf", "flax_model.msgpack", "tf_model.h5"]
    assert ck.select_files(gemma) == ["config.json", "model.safetensors"]


class FakeHub:
    """Stands in for huggingface_hub (no network here): records calls, writes the selected files."""

    def __init__(self, files):
        self.files, self.calls = files, []
        hub = self

        class HfApi:
            def list_repo_files(self, repo, revision):
                hub.calls.append(("list", repo, revision))
                return hub.files

        self.HfApi = HfApi

    def snapshot_download(self, repo, revision, local_dir, cache_dir, allow_patterns):
        self.calls.append(("snapshot", repo, revision, tuple(allow_patterns)))
        for f in allow_patterns:
            (Path(local_dir) / f).parent.mkdir(parents=True, exist_ok=True)
            (Path(local_dir) / f).write_text("{}")


def test_fetch_pins_the_revision_records_it_and_skips_the_second_time(tmp_path):
    b = ck.load_backbones()["siglip"]
    hub = FakeHub(["config.json", "model.safetensors", "preprocessor_config.json", "tf_model.h5"])
    ck.fetch(b, tmp_path, hub=hub)
    assert hub.calls == [
        ("list", b.repo, b.revision),
        ("snapshot", b.repo, b.revision, ("config.json", "model.safetensors", "preprocessor_config.json")),
    ]
    assert ck.check({"siglip": b}, tmp_path) == []
    hub.calls.clear()
    ck.fetch(b, tmp_path, hub=hub)
    assert hub.calls == []
    moved = ck.Backbone(b.name, b.repo, "0" * 40, False)
    assert "the manifest pins 0000" in ck.check({"siglip": moved}, tmp_path)[0]


def test_bad_revision_in_a_manifest_is_refused(tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_text("backbones:\n  x: {repo: a/b, revision: main}\n")
    with pytest.raises(ck.CheckpointError, match="x: revision 'main' is not a 40-hex commit id"):
        ck.load_backbones(bad)
