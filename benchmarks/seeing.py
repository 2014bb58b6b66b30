"""Do the mini VLMs see? A diagnostic that isolates vision from the rest of the mini study.

It builds a LLaVA model from the mini backbones exactly as `basic train` does (`basic.model.build`, the
engine's labels and templates) and trains it in-process with the engine's optimiser settings (AdamW, warmup
then cosine, gradient clipping at 1), so that it can score the model at any step on probe questions whose
answer is in the image, once with the image and once with a blank image of the image processor's mean
colour (the blind baseline of `basic evaluate --blind`). Four measurements:

- `scale`: the norm of the projector's outputs per image token against the LLM's word embeddings.
- `stage1`: stage 1 (projector only, `plain` template, the world's `llava/pretrain.json`): caption loss on
  held-out scenes with and without the image at each step count; a gap means the projector carries what
  the frozen LLM needs. After stage 1 the probe questions are also asked of the frozen LLM (does it read
  aligned visual tokens without instruction tuning?).
- `stage2`: stage 2 (projector and LLM) from that projector, on the world's `llava/finetune.json` (the
  recipe's own mix) or on probe questions alone (`--stage2-data probe`: the upper bound of what the
  budget can teach), scored at each of `--stage2-steps` (one schedule per step count).
- `probes`: held-out scenes with `--objects` objects, asked about `--kinds` in the short-answer style
  ("What color is the circle?\\nAnswer the question using a single word or phrase."); accuracy is exact match
  of the greedy answer (teacher-forced, as `basic.mini.quality` scores), its blind counterpart with blank
  images, and the share of answers the image changes.

    python benchmarks/seeing.py --data data/mini --backbones models/backbones \\
        --stage1-steps 60 --stage2-steps 120 --out benchmarks/results/seeing.json

Writes the JSON to `--out` (and prints it); `--label` names the variant measured.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from transformers import get_cosine_schedule_with_warmup

from basic.data.collator import LlavaCollator
from basic.data.images import background_color, expand2square
from basic.data.labels import IGNORE_INDEX, SkipSample, encode
from basic.data.templates import get_template
from basic.families import FAMILIES
from basic.mini.language import ask, caption, prompt
from basic.mini.scenes import Scene, SceneSampler, render
from basic.model import build, projector_of, set_trainable

ROOT = Path(__file__).resolve().parents[1]
# The probe scenes' own random streams (far from basic.mini.scenes.STREAMS' purposes): training and held out.
PROBE_TRAIN, PROBE_TEST = 9001, 9002


# ---- data ------------------------------------------------------------------------------------------------


def probe_scenes(seed: int, stream: int, n: int, objects: int, signs: bool = False) -> list[Scene]:
    """`n` clear scenes with exactly `objects` objects; with a sign on every other one if `signs` (to ask
    the sign's word), else without."""
    sampler = SceneSampler(np.random.default_rng([seed, stream]), f"probe{stream}-", text_prob=0.5)
    return [
        sampler.sample(n_objects=objects, text=None if signs else False, quality="clear") for _ in range(n)
    ]


def probe_records(scenes: list[Scene], kinds: tuple[str, ...], seed: int) -> list[dict]:
    """One short-answer question of a kind in `kinds` per scene, as a LLaVA record with an in-memory image."""
    rng = np.random.default_rng(seed)
    records = []
    for scene in scenes:
        qa = ask(scene, rng, "en", kinds)
        if qa is None:
            continue
        question, answer = prompt(qa, "short", rng)
        records.append(
            {
                "scene": scene,
                "kind": qa.kind,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{question}"},
                    {"from": "gpt", "value": answer},
                ],
            }
        )
    return records


def caption_records(scenes: list[Scene], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "scene": s,
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe the image."},
                {"from": "gpt", "value": caption(s, rng)},
            ],
        }
        for s in scenes
    ]


def file_records(data: Path, name: str) -> list[dict]:
    """The world's LLaVA records (`llava/<name>.json`) with their image paths made absolute."""
    records = json.loads((data / "llava" / f"{name}.json").read_text(encoding="utf-8"))
    for r in records:
        if "image" in r:
            r["path"] = str(data / "images" / r["image"])
    return records


class Samples:
    """LLaVA records -> engine samples (labels by `basic.data.labels.encode`), images as the engine makes them."""

    def __init__(self, built, template: str, image_size: int, max_length: int = 256):
        self.processor, self.tokenizer = built.processor.image_processor, built.tokenizer
        self.template = get_template(template)
        self.image_id = built.model.config.image_token_id
        self.seq = built.model.config.image_seq_length
        self.pad = background_color(self.processor)
        self.size, self.max_length = image_size, max_length
        self.blank = self.pixels(_blank(image_size, self.pad))

    def pixels(self, image) -> torch.Tensor:
        return self.processor(images=expand2square(image.convert("RGB"), self.pad), return_tensors="pt")[
            "pixel_values"
        ][0]

    def __call__(self, record: dict, blind: bool = False) -> dict | None:
        has_image = "scene" in record or "path" in record
        try:
            enc = encode(
                record["conversations"],
                self.template,
                self.tokenizer,
                has_image=has_image,
                image_token_id=self.image_id,
                image_seq_length=self.seq,
                max_length=self.max_length,
            )
        except SkipSample:
            return None
        sample = {"input_ids": torch.tensor(enc.input_ids), "labels": torch.tensor(enc.labels)}
        if has_image:
            if blind:
                sample["pixel_values"] = self.blank
            elif "scene" in record:
                sample["pixel_values"] = self.pixels(render(record["scene"], self.size))
            else:
                from PIL import Image

                with Image.open(record["path"]) as image:
                    sample["pixel_values"] = self.pixels(image)
        return sample


def _blank(size: int, colour):
    from PIL import Image

    return Image.new("RGB", (size, size), colour)


# ---- training and scoring ---------------------------------------------------------------------------------


def train(
    built,
    samples: Samples,
    records: list[dict],
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    projector_only: bool,
    warmup: float = 0.03,
    group_by_modality: bool = False,
    projector_lr: float | None = None,
) -> list[float]:
    """`steps` optimiser steps as the engine's Trainer takes them (AdamW, betas 0.9/0.999, no weight decay,
    linear warmup then cosine to 0, gradient norm clipped at 1); returns the loss per step.
    `group_by_modality`: each batch all image records or all text-only ones, as LLaVA's sampler makes them.
    `projector_lr`: the projector's own learning rate (LLaVA's `--mm_projector_lr`)."""
    model = built.model
    set_trainable(model, projector_only=projector_only)
    params = [p for p in model.parameters() if p.requires_grad]
    in_projector = {id(p) for p in projector_of(model).parameters()}
    groups_ = [
        {"params": [p for p in params if id(p) not in in_projector]},
        {"params": [p for p in params if id(p) in in_projector], "lr": projector_lr or lr},
    ]
    opt = torch.optim.AdamW(
        [g for g in groups_ if g["params"]], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    )
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(warmup * steps), steps)
    collate = LlavaCollator(built.tokenizer.pad_token_id)
    rng = np.random.default_rng(seed)
    groups = [
        [i for i, r in enumerate(records) if ("scene" in r or "path" in r) == image]
        for image in (True, False)
    ]
    groups = [g for g in groups if g] if group_by_modality else [list(range(len(records)))]
    queue: list[list[int]] = []
    model.train()
    losses = []
    for _ in range(steps):
        if not queue:
            for g in groups:
                order = rng.permutation(g)
                queue += [list(order[b : b + batch]) for b in range(0, len(order) - batch + 1, batch)]
            queue = [queue[int(i)] for i in rng.permutation(len(queue))]
        chosen = [s for s in (samples(records[int(i)]) for i in queue.pop()) if s is not None]
        inputs = collate(chosen)
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def score(built, samples: Samples, records: list[dict], batch: int = 64) -> dict:
    """Per record, with the image and with a blank one: whether the greedy answer is exact (teacher-forced:
    the argmax at every answer token, end of turn included, is the reference) and the answer's loss."""
    model, collate = built.model, LlavaCollator(built.tokenizer.pad_token_id)
    out = {}
    for blind in (False, True):
        hits, losses, argmaxes = [], [], []
        for b in range(0, len(records), batch):
            chosen = [samples(r, blind) for r in records[b : b + batch]]
            inputs = collate(chosen)
            logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits[:, :-1]
            labels = inputs["labels"][:, 1:]
            mask = labels != IGNORE_INDEX
            predicted = logits.argmax(-1)
            nll = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), labels.clamp(min=0), reduction="none"
            )
            for row in range(len(chosen)):
                m = mask[row]
                hits.append(bool((predicted[row][m] == labels[row][m]).all()))
                losses.append(float(nll[row][m].mean()))
                argmaxes.append(tuple(predicted[row][m].tolist()))
        out["blind" if blind else "image"] = (hits, losses, argmaxes)
    (hit, loss, said), (bhit, bloss, bsaid) = out["image"], out["blind"]
    kinds = sorted({r.get("kind", "caption") for r in records})
    by_kind = {}
    for kind in kinds:
        idx = [i for i, r in enumerate(records) if r.get("kind", "caption") == kind]
        by_kind[kind] = {
            "n": len(idx),
            "accuracy": _mean([hit[i] for i in idx]),
            "blind_accuracy": _mean([bhit[i] for i in idx]),
        }
    return {
        "n": len(records),
        "accuracy": _mean(hit),
        "blind_accuracy": _mean(bhit),
        "loss": _mean(loss),
        "blind_loss": _mean(bloss),
        "changed_by_image": _mean([a != b for a, b in zip(said, bsaid)]),
        "distinct_answers": len(set(said)),
        "kinds": by_kind,
    }


def _mean(values) -> float:
    return round(float(np.mean(values)), 4) if len(values) else float("nan")


@torch.no_grad()
def scale(built, samples: Samples, scenes: list[Scene]) -> dict:
    """Mean norm of the projector's output per image token and of the LLM's input embeddings of the words."""
    model = built.model
    pixels = torch.stack([samples.pixels(render(s, samples.size)) for s in scenes])
    output = model.model.get_image_features(
        pixel_values=pixels,
        vision_feature_layer=model.config.vision_feature_layer,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy,
    )
    features = torch.cat(list(output.pooler_output))
    embeddings = model.get_input_embeddings().weight
    ids = sorted(
        {
            i
            for w in ("red", "blue", "circle", "square", "large", "small", "the", "color", "What")
            for i in built.tokenizer(" " + w, add_special_tokens=False)["input_ids"]
        }
    )
    words = embeddings[ids].norm(dim=-1).mean().item()
    patches = features.norm(dim=-1)
    deviation = (features - features.mean(0)).norm(dim=-1).mean().item()
    return {
        "image_token_norm": round(patches.mean().item(), 3),
        "image_token_deviation": round(deviation, 3),
        "word_embedding_norm": round(words, 3),
        "ratio": round(patches.mean().item() / words, 1),
    }


# ---- the measurement ---------------------------------------------------------------------------------------


def load_model(args, seed: int):
    template = FAMILIES[_family(args.backbones / args.llm)][2]
    built = build(
        str(args.backbones / args.llm),
        str(args.backbones / args.encoder),
        projector_type="mlp2x_gelu",
        vision_select_layer=-2,
        model_max_length=256,
        chat_template=get_template(template).jinja,
        seed=seed,
    )
    if args.projector_scale != 1.0:
        with torch.no_grad():
            for name in ("weight", "bias"):
                getattr(projector_of(built.model).linear_2, name).mul_(args.projector_scale)
    return built, template


def _family(llm_dir: Path) -> str:
    model_type = json.loads((llm_dir / "config.json").read_text())["model_type"]
    return {"llama": "llama", "gemma": "gemma", "phi3": "phi3", "mistral": "mistral"}[model_type]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "data/mini")
    p.add_argument("--backbones", type=Path, default=ROOT / "models/backbones")
    p.add_argument("--llm", default="vicuna-7b")
    p.add_argument("--encoder", default="clip-l-336")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stage1-steps", type=int, default=60)
    p.add_argument("--stage1-batch", type=int, default=32)
    p.add_argument("--stage1-lr", type=float, default=1e-3)
    p.add_argument("--stage2-steps", default="120", help="comma-separated; one stage-2 schedule per value")
    p.add_argument("--stage2-batch", type=int, default=16)
    p.add_argument("--stage2-lr", type=float, default=1e-3)
    p.add_argument(
        "--stage2-projector-lr", type=float, help="stage 2's projector learning rate (mm_projector_lr)"
    )
    p.add_argument("--stage2-data", choices=["finetune", "probe"], default="finetune")
    p.add_argument("--objects", default="1,2", help="objects per probe scene (comma-separated)")
    p.add_argument("--kinds", default="colour,shape", help="probe question kinds (basic.mini.language.KINDS)")
    p.add_argument("--probe-train", type=int, default=2000, help="probe training scenes per object count")
    p.add_argument("--probe-test", type=int, default=200, help="held-out probe scenes per object count")
    p.add_argument(
        "--projector-scale",
        type=float,
        default=1.0,
        help="multiply the new projector's output layer by this (a what-if on the output scale, "
        "not something the engine does)",
    )
    p.add_argument("--label", default="", help="what this run measures (recorded)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/seeing.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    kinds = tuple(args.kinds.split(","))
    objects = [int(n) for n in args.objects.split(",")]
    size = json.loads((args.data / "manifest.json").read_text())["sizes"]["image_size"]

    tests = {
        n: probe_records(
            probe_scenes(args.seed, PROBE_TEST + 100 * n, args.probe_test, n, "text" in kinds),
            kinds,
            args.seed + 1,
        )
        for n in objects
    }
    captions = caption_records(probe_scenes(args.seed, PROBE_TEST + 1, args.probe_test, 2), args.seed + 2)
    result: dict = {
        "label": args.label,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }

    # Stage 1: the projector alone on the captions.
    torch.manual_seed(args.seed)
    built, template = load_model(args, args.seed)
    plain = Samples(built, "plain", size)
    chat = Samples(built, template, size)
    result["scale_initial"] = scale(built, chat, [r["scene"] for r in tests[objects[0]][:64]])
    started = time.perf_counter()
    losses = train(
        built,
        plain,
        file_records(args.data, "pretrain"),
        args.stage1_steps,
        args.stage1_batch,
        args.stage1_lr,
        args.seed,
        projector_only=True,
    )
    result["stage1"] = {
        "steps": args.stage1_steps,
        "seconds": round(time.perf_counter() - started, 1),
        "loss_first": round(float(np.mean(losses[:5])), 3),
        "loss_last": round(float(np.mean(losses[-5:])), 3),
        "captions": score(built, plain, captions),
        "scale": scale(built, chat, [r["scene"] for r in tests[objects[0]][:64]]),
        "frozen_llm_probes": {str(n): score(built, chat, tests[n]) for n in objects},
    }
    projector = {k: v.clone() for k, v in projector_of(built.model).state_dict().items()}
    print(json.dumps(result["stage1"], indent=1), flush=True)

    # Stage 2: projector and LLM, one schedule per step count, each from the stage-1 projector.
    if args.stage2_data == "probe":
        records = [
            r
            for n in objects
            for r in probe_records(
                probe_scenes(args.seed, PROBE_TRAIN + 100 * n, args.probe_train, n, "text" in kinds),
                kinds,
                args.seed + 3,
            )
        ]
    else:
        records = file_records(args.data, "finetune")
    result["stage2"] = []
    for steps in [int(s) for s in args.stage2_steps.split(",")]:
        built, _ = load_model(args, args.seed)
        projector_of(built.model).load_state_dict(projector)
        started = time.perf_counter()
        losses = train(
            built,
            chat,
            records,
            steps,
            args.stage2_batch,
            args.stage2_lr,
            args.seed,
            projector_only=False,
            group_by_modality=args.stage2_data == "finetune",
            projector_lr=args.stage2_projector_lr,
        )
        entry = {
            "steps": steps,
            "seconds": round(time.perf_counter() - started, 1),
            "loss_last": round(float(np.mean(losses[-10:])), 3),
            "probes": {str(n): score(built, chat, tests[n]) for n in objects},
        }
        result["stage2"].append(entry)
        print(json.dumps(entry, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
