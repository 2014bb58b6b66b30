"""`basic mini data`: build the embedded world on disk (scenes, corpora, benchmarks, probe set, tokenizer).

Layout (docs/interfaces.md): images/train/, llava/{pretrain,finetune}.json, benchmarks/<bench>/ (and
benchmarks/scenes.jsonl, the scene of every benchmark image: `basic.mini.scenes.annotations`),
tokenizer/, text/ (LLM pretraining and held-out text QA), probe/ (held-out single-object images for the
encoders' linear probes), manifest.json (seed, sizes, counts, sha256 of every file). The same seed
gives byte-identical files. Held-out scenes (benchmarks, probe, LLM text evaluation) are drawn from
their own random streams and, in addition, may not repeat the semantic content of any training scene
(images, instruction text, LLM text): `check_disjoint` asserts it before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
from tqdm.auto import tqdm

from basic.mini import benchmarks
from basic.mini.corpora import finetune_records, pretrain_records, text_docs
from basic.mini.scenes import (
    COLOURS,
    SHAPES,
    Scene,
    SceneSampler,
    annotations,
    png_bytes,
    render,
    sha256,
    stream_rng,
)
from basic.mini.tokenizer import family_tokenizer, train_tokenizer

# Shares of scene types in training images (VizWiz-like photos are rare there, as in LLaVA's data).
TRAIN_SCENES = {"text_prob": 0.3, "dark_prob": 0.03, "blurry_prob": 0.03}


@dataclass(frozen=True)
class WorldSizes:
    image_size: int = 64
    train_images: int = 4000  # LLaVA-558K stand-in captions; each also gets one LLaVA-665K record
    text_conversations: int = 100  # text-only records of the instruction mix (2.4% of it: a step of
    # text-only records teaches nothing about the image)
    llm_docs: int = 8000  # LLM pretraining documents (a scene in words, 3-5 QA turns): one pass
    # of the backbones' default 500 steps x 16
    llm_eval: int = 600  # held-out text QA for the LLM quality metric
    bench_questions: int = 300  # per benchmark (MMBench: base questions, circular copies extra)
    probe_images: int = 2000  # held-out single-object images (60% fit, 40% test)
    vocab_size: int = 2048
    # One object per scene: with 1-4 objects the mini VLMs stayed blind, since every question
    # about one of several objects needs a lookup (find it, read its attribute) that their 2-6 layer LLMs
    # do not learn in this budget; with one object, every question is about the whole image.
    max_objects: int = 1
    # Of the English LLM documents: a brief-caption turn first (text_docs). It teaches the LLMs the describe
    # pattern that stage 1 aligns the projector to; without it stage 1's caption loss stays high and stage 2
    # does not learn to read the image (benchmarks/results/seeing.json).
    llm_brief_share: float = 0.5


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _scenes(
    seed: int, stream: str, prefix: str, n: int, exclude=frozenset(), max_objects=4, **kw
) -> list[Scene]:
    sampler = SceneSampler(stream_rng(seed, stream), prefix, exclude=exclude, max_objects=max_objects, **kw)
    return [sampler.sample() for _ in range(n)]


def check_disjoint(train_keys: set[str], held_out: dict[str, list[Scene]]) -> None:
    """Raise if any held-out scene has the semantic content of a training scene."""
    for name, scenes in held_out.items():
        leaked = [s.id for s in scenes if s.key in train_keys]
        if leaked:
            raise AssertionError(
                f"held-out set {name!r}: {len(leaked)} scenes also in training, e.g. {leaked[:3]}"
            )


def _probe_rows(scenes: list[Scene], size: int) -> list[dict]:
    fit = int(0.6 * len(scenes))
    return [
        {
            "image": {"bytes": png_bytes(render(s, size)), "path": None},
            "colour": s.objects[0].colour,
            "shape": s.objects[0].shape,
            "split": "fit" if i < fit else "test",
        }
        for i, s in enumerate(scenes)
    ]


PROBE_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "colour": datasets.ClassLabel(names=list(COLOURS)),
        "shape": datasets.ClassLabel(names=list(SHAPES)),
        "split": datasets.Value("string"),
    }
)


def build_world(out: Path, seed: int, sizes: WorldSizes = WorldSizes()) -> dict:
    """Write the whole world under `out`; returns the manifest (also written to `out/manifest.json`)."""
    out = Path(out)
    datasets.disable_progress_bars()
    mo = sizes.max_objects
    # --- training scenes: images, text-only instruction records, LLM pretraining text
    train = _scenes(seed, "train_images", "train", sizes.train_images, max_objects=mo, **TRAIN_SCENES)
    text_only = _scenes(
        seed, "finetune_text", "text", sizes.text_conversations, max_objects=mo, **TRAIN_SCENES
    )
    llm_train = _scenes(seed, "llm_train", "doc", sizes.llm_docs, max_objects=mo, **TRAIN_SCENES)
    train_keys = {s.key for s in train + text_only + llm_train}
    # --- held-out scenes
    llm_eval = _scenes(seed, "llm_eval", "evaldoc", sizes.llm_eval, train_keys, mo, **TRAIN_SCENES)
    # Single-object probe scenes: the world has too few single-object contents to hold some out, so
    # these are held out as images (their own stream; no PNG equal to a training image, checked below).
    probe_sampler = SceneSampler(stream_rng(seed, "probe"), "probe", text_prob=0.0)
    probe = [probe_sampler.sample(n_objects=1) for _ in range(sizes.probe_images)]
    samplers = {
        name: SceneSampler(
            stream_rng(seed, name),
            f"{name}-",
            exclude=train_keys,
            max_objects=mo,
            **TRAIN_SCENES,  # the VizWiz stand-in picks each photo's quality itself
        )
        for name in ("vqav2", "gqa", "sqa_img", "mmb", "mmvet", "vizwiz", "textvqa")
    }
    files: list[Path] = []
    for s in tqdm(train, desc="training images", mininterval=1.0):
        path = out / "images" / "train" / f"{s.id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(render(s, sizes.image_size)))
        files.append(path)
    # --- corpora
    pretrain = pretrain_records(train, stream_rng(seed, "train_images", 1))
    finetune = finetune_records(train, text_only, stream_rng(seed, "train_images", 2))
    docs = text_docs(
        llm_train, stream_rng(seed, "llm_train", 1), turns=(3, 5), brief_share=sizes.llm_brief_share
    )
    eval_docs = text_docs(llm_eval, stream_rng(seed, "llm_eval", 1), turns=(1, 1))
    for path, obj in (
        (out / "llava" / "pretrain.json", pretrain),
        (out / "llava" / "finetune.json", finetune),
    ):
        _write_json(path, obj)
        files.append(path)
    for path, rows in (
        (out / "text" / "llm_train.jsonl", docs),
        (out / "text" / "llm_eval.jsonl", eval_docs),
    ):
        _write_jsonl(path, rows)
        files.append(path)
    # --- benchmarks and probe set
    counts = {}
    held_out = {"llm_eval": llm_eval}
    for name in tqdm(samplers, desc="benchmarks"):
        built = benchmarks.build(
            name, samplers[name], stream_rng(seed, name, 1), sizes.bench_questions, sizes.image_size
        )
        for bench, rows in built.items():
            files += benchmarks.write(out / "benchmarks" / bench, bench, rows)
            counts[bench] = len(rows)
    for name, sampler in samplers.items():
        held_out[name] = sampler.drawn
    check_disjoint(train_keys, held_out)
    # The scene of every benchmark image, keyed by its pixels: the ground truth of the embedding analysis.
    scenes_path = out / "benchmarks" / "scenes.jsonl"
    drawn = [s for sampler in samplers.values() for s in sampler.drawn]
    _write_jsonl(scenes_path, annotations(drawn, sizes.image_size))
    files.append(scenes_path)
    probe_rows = _probe_rows(probe, sizes.image_size)
    train_images = {sha256(p.read_bytes()) for p in files if p.suffix == ".png"}
    if any(sha256(r["image"]["bytes"]) in train_images for r in probe_rows):
        raise AssertionError("a probe image equals a training image")
    probe_path = out / "probe" / "probe.parquet"
    probe_path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(probe_rows, features=PROBE_FEATURES).to_parquet(str(probe_path))
    files.append(probe_path)
    # --- tokenizer, trained on the training corpora only
    texts = [t["value"] for r in pretrain + finetune for t in r["conversations"]]
    texts += [
        d["description"] + "\n" + "\n".join(f"{t['prompt']}\n{t['answer']}" for t in d["turns"]) for d in docs
    ]
    tokenizer = family_tokenizer(train_tokenizer(texts, sizes.vocab_size), "llama")
    tokenizer.save_pretrained(out / "tokenizer")
    files += sorted((out / "tokenizer").iterdir())
    counts.update(
        train_images=len(train),
        pretrain=len(pretrain),
        finetune=len(finetune),
        finetune_text_only=sum("image" not in r for r in finetune),
        llm_train_docs=len(docs),
        llm_train_answers=sum(len(d["turns"]) for d in docs),
        llm_eval=len(eval_docs),
        probe_images=len(probe),
        vocab=len(tokenizer),
    )
    manifest = {
        "seed": seed,
        "sizes": asdict(sizes),
        "counts": counts,
        "disjoint_checked": True,
        "files": {str(p.relative_to(out)): sha256(p.read_bytes()) for p in sorted(files)},
    }
    _write_json(out / "manifest.json", manifest)
    return manifest
