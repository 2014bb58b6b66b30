"""`basic mini backbones`: pretrain the seven mini backbones from the world and measure their quality.

Each backbone is one job (load its data, train, measure on held-out data, save a standard HF
checkpoint); jobs run in `workers` processes, each using `cores / workers` threads, because on a
small CPU two single-threaded trainings of these small models get through more work than one
two-threaded one. Seeds are per backbone, so a result does not depend on which worker ran it.
Results, with the goals, go to `<out>/metrics.json`.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerFast

from basic.mini.encoders import (
    ENCODER_SPECS,
    TEXT_LENGTH,
    build_encoder,
    encoder_tokenizer,
    mixed_batches,
    object_batches,
    pixel_digest,
    probe_features,
    train_encoder,
)
from basic.mini.llms import LLM_SPECS, build_llm, encode, generation_config, train_llm
from basic.mini.quality import linear_probe, text_qa_accuracy
from basic.mini.scenes import COLOURS, SHAPES
from basic.mini.tokenizer import family_tokenizer

GOALS = {"llm_text_qa_accuracy": 0.70, "encoder_probe_accuracy": 0.90}
# The order jobs start in, so that two workers finish close together: the two long poles (SigLIP, the 13B
# stand-in, ~3.5 min each) first, one per worker, then the rest in the order whose greedy two-worker schedule
# of the measured job times (seed 0) ends soonest.
ORDER = ("siglip", "vicuna-13b", "vicuna-7b", "clip-l-336", "gemma-2b", "phi3-3.8b", "mistral-7b")


@dataclass(frozen=True)
class BackboneSettings:
    # vicuna-7b, seed 0: 500 steps of question turns alone score text QA 0.42 in the time
    # 300 steps took with a describe-the-scene turn before the questions (0.36). 450 rather than 500 keeps
    # the world and backbones inside their 8 minutes with a margin, at the same mean text QA of the five
    # LLMs (0.41 at 450 and at 500 steps, seed 0).
    llm_steps: int = 450
    llm_batch: int = 16
    llm_lr: float = 2e-3
    clip_steps: int = 2000
    siglip_steps: int = 2600  # SigLIP (sigmoid loss, batch 32) learns shape later and less evenly than CLIP
    encoder_batch: int = 32
    encoder_lr: float = 1e-3
    encoder_object_share: float = 0.85  # of the encoder batches: fresh single-object scenes (object_batches)
    workers: int = 2
    threads: int = 0  # per worker; 0: the machine's cores divided by the workers
    names: tuple[str, ...] = field(default=ORDER)


def _seed(seed: int, name: str) -> int:
    return seed * 1_000_003 + zlib.crc32(name.encode()) % 1_000_003


def _met(scores: dict[str, float], goal: float) -> bool | None:
    """Whether every score reaches `goal`; None when no backbone of the kind was built."""
    return all(v >= goal for v in scores.values()) if scores else None


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _llm_job(name: str, data: Path, out: Path, seed: int, s: BackboneSettings, position: int) -> dict:
    spec = LLM_SPECS[name]
    tokenizer = family_tokenizer(PreTrainedTokenizerFast.from_pretrained(data / "tokenizer"), spec.family)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_items = encode(_read_jsonl(data / "text" / "llm_train.jsonl"), tokenizer, spec.family)
    eval_items = encode(_read_jsonl(data / "text" / "llm_eval.jsonl"), tokenizer, spec.family)
    model = build_llm(spec, tokenizer, _seed(seed, name))
    losses = train_llm(
        model,
        train_items,
        s.llm_steps,
        s.llm_batch,
        s.llm_lr,
        _seed(seed, name),
        pad,
        desc=name,
        position=position,
    )
    quality = text_qa_accuracy(model, eval_items, pad)
    target = out / name
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    generation_config(tokenizer, spec.family).save_pretrained(target)
    return {
        "type": "llm",
        "architecture": type(model).__name__,
        **asdict(spec),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": s.llm_steps,
        "final_loss": float(np.mean(losses[-20:])),
        "text_qa_accuracy": quality["all"]["accuracy"],
        "text_qa": quality,
    }


def _encoder_job(name: str, data: Path, out: Path, seed: int, s: BackboneSettings, position: int) -> dict:
    spec = ENCODER_SPECS[name]
    base = PreTrainedTokenizerFast.from_pretrained(data / "tokenizer").backend_tokenizer
    tokenizer = encoder_tokenizer(base, spec.kind)
    records = json.loads((data / "llava" / "pretrain.json").read_text(encoding="utf-8"))
    images = [Image.open(data / "images" / r["image"]).convert("RGB") for r in records]
    captions = [r["conversations"][1]["value"] for r in records]
    size = images[0].width
    model, processor = build_encoder(spec, tokenizer, size, _seed(seed, name))

    def process(batch: list[Image.Image]) -> torch.Tensor:
        # The world's images already have the tower's size, so resizing and cropping would return them as
        # they are (the same tensors, measured); skipping them saves ~5% of a CLIP step.
        native = all(im.size == (size, size) for im in batch)
        return processor(images=batch, return_tensors="pt", do_resize=not native, do_center_crop=not native)[
            "pixel_values"
        ]

    def tokenize(texts: list[str]) -> torch.Tensor:
        return tokenizer(
            texts, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt"
        )["input_ids"]

    probe = datasets.Dataset.from_parquet(str(data / "probe" / "probe.parquet"))
    probe_images = [im.convert("RGB") for im in probe["image"]]
    rng = np.random.default_rng(_seed(seed, name))
    objects = object_batches(s.encoder_batch, rng, size, frozenset(pixel_digest(im) for im in probe_images))
    batches = mixed_batches(
        process(images),
        tokenize(captions),
        captions,
        objects,
        tokenize,
        process,
        s.encoder_batch,
        rng,
        s.encoder_object_share,
    )
    steps = s.clip_steps if spec.kind == "clip" else s.siglip_steps
    losses = train_encoder(model, batches, steps, s.encoder_lr, desc=name, position=position)
    probe_pixels = process(probe_images)
    fit = torch.tensor([split == "fit" for split in probe["split"]])
    labels = {
        "colour": (torch.tensor(probe["colour"]), len(COLOURS)),
        "shape": (torch.tensor(probe["shape"]), len(SHAPES)),
    }
    accuracy = {}
    for features_name, features in probe_features(model, probe_pixels).items():
        for attr, (y, classes) in labels.items():
            accuracy[f"{features_name}/{attr}"] = linear_probe(
                features[fit], y[fit], features[~fit], y[~fit], classes
            )
    target = out / name
    model.save_pretrained(target)
    processor.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return {
        "type": "encoder",
        "architecture": type(model).__name__,
        **asdict(spec),
        "parameters": sum(p.numel() for p in model.vision_model.parameters()),
        "steps": steps,
        "final_loss": float(np.mean(losses[-10:])),
        "probe_colour": accuracy["pooled/colour"],
        "probe_shape": accuracy["pooled/shape"],
        "probe": accuracy,
        "probe_sizes": {"fit": int(fit.sum()), "test": int((~fit).sum())},
    }


def run_job(
    name: str, data: str, out: str, seed: int, settings: BackboneSettings, threads: int, position: int = 0
) -> dict:
    """Train, measure and save one backbone; returns its metrics (with its wall time)."""
    torch.set_num_threads(threads)
    start = time.time()
    job = _llm_job if name in LLM_SPECS else _encoder_job
    metrics = job(name, Path(data), Path(out), seed, settings, position)
    return {**metrics, "seed": _seed(seed, name), "threads": threads, "wall_s": round(time.time() - start, 1)}


def build_backbones(
    data: Path, out: Path, seed: int, settings: BackboneSettings = BackboneSettings()
) -> dict:
    """Train every backbone in `settings.names`; writes `<out>/<name>/` and `<out>/metrics.json`."""
    unknown = [n for n in settings.names if n not in LLM_SPECS and n not in ENCODER_SPECS]
    if unknown:
        raise ValueError(f"unknown backbone(s) {unknown}; known: {', '.join(ORDER)}")
    for required in ("tokenizer", "text/llm_train.jsonl", "llava/pretrain.json", "probe/probe.parquet"):
        if not (Path(data) / required).exists():
            raise FileNotFoundError(
                f"{Path(data) / required} is missing: run `basic mini data --out {data}` first"
            )
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in ORDER if n in settings.names]
    workers = max(1, min(settings.workers, len(names)))
    threads = settings.threads or max(1, (os.cpu_count() or 1) // workers)
    start = time.time()
    if workers == 1:
        results = [run_job(n, str(data), str(out), seed, settings, threads, i) for i, n in enumerate(names)]
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(run_job, n, str(data), str(out), seed, settings, threads, i)
                for i, n in enumerate(names)
            ]
            results = [f.result() for f in futures]
    per_backbone = dict(zip(names, results))
    llms = {n: m["text_qa_accuracy"] for n, m in per_backbone.items() if m["type"] == "llm"}
    probes = {
        n: min(m["probe_colour"], m["probe_shape"]) for n, m in per_backbone.items() if m["type"] == "encoder"
    }
    metrics = {
        "seed": seed,
        "settings": asdict(settings),
        "workers": workers,
        "threads_per_worker": threads,
        "wall_s": round(time.time() - start, 1),
        "goals": GOALS,
        "goals_met": {
            "llm_text_qa_accuracy": _met(llms, GOALS["llm_text_qa_accuracy"]),
            "encoder_probe_accuracy": _met(probes, GOALS["encoder_probe_accuracy"]),
        },
        "llm_text_qa_accuracy": llms,
        "encoder_probe_min_accuracy": probes,
        "backbones": per_backbone,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
