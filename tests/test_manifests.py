"""The shipped manifests parse, pin what can be pinned, and name every file LLaVA-1.5's data needs."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pytest
import yaml

from basic import download as dl

# What LLaVA-1.5's scripts read (research/llava_recipe.md section 5, reference_numbers.yaml `data`).
PRETRAIN_JSON = "LLaVA-Pretrain/blip_laion_cc_sbu_558k.json"
PRETRAIN_IMAGES = "LLaVA-Pretrain/images"
FINETUNE_JSON = "llava_v1_5_mix665k.json"
FINETUNE_IMAGE_FOLDERS = ["coco/train2017", "gqa/images", "ocr_vqa/images", "textvqa/train_images",
                          "vg/VG_100K", "vg/VG_100K_2"]
# Image paths as they appear in llava_v1_5_mix665k.json (one per source), relative to --image_folder.
MIX665K_IMAGES = ["coco/train2017/000000033471.jpg", "gqa/images/2354786.jpg", "ocr_vqa/images/140031996.jpg",
                  "textvqa/train_images/011e7e629fb9ae7b.jpg", "vg/VG_100K/2316529.jpg", "vg/VG_100K_2/2364.jpg"]


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
    assert {f.path for f in dl.load_manifest("pretrain").files} | {f.path for f in dl.load_manifest("finetune").files} \
        == {f.path for f in m.files}


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
    bad.write_text(yaml.safe_dump({"name": "b", "files": [{"path": "a", "url": "http://x/a", "sha256": None, "md5": "x"}]}))
    with pytest.raises(dl.DownloadError, match=r"bad.yaml: files\[0\]: unknown key\(s\) md5"):
        dl.load_manifest(bad)
    bad.write_text(yaml.safe_dump({"name": "b", "files": [{"path": "a", "url": "http://x/a", "sha256": "ABC"}]}))
    with pytest.raises(dl.DownloadError, match=r"files\[0\] \(a\): sha256 must be 64 lowercase hex"):
        dl.load_manifest(bad)
    bad.write_text(yaml.safe_dump({"name": "b", "files": [{"path": "../a", "url": "http://x/a", "sha256": None}]}))
    with pytest.raises(dl.DownloadError, match="must be a relative path inside DEST"):
        dl.load_manifest(bad)
    bad.write_text(yaml.safe_dump({"name": "b", "include": ["bad"]}))
    with pytest.raises(dl.DownloadError, match="include cycle"):
        dl.load_manifest(bad)
    with pytest.raises(dl.DownloadError, match="neither a file nor a shipped manifest"):
        dl.load_manifest("no-such-manifest")
