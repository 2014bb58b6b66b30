"""The two mini vision encoders: a CLIP (contrastive) and a SigLIP (sigmoid) model trained on image-caption pairs.

Both are the real transformers classes (`CLIPModel`, `SiglipModel`) trained with their own
`return_loss=True` objectives, and saved whole, with image processor and tokenizer, as the hub
checkpoints are; LLaVA keeps only the vision tower. Their image-caption pairs are, for most batches,
freshly rendered single objects (`object_batches`), and otherwise the LLaVA-558K stand-in's scenes and
captions: CLIP and SigLIP, too, were pretrained on corpora of their own, not on LLaVA's. The text towers
read the world's tokenizer, dressed as each original does it: CLIP adds a start token and pools at the
first end-of-text token; SigLIP pads to a fixed length and pools the last position.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, processors
from tqdm.auto import tqdm
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from basic.mini.language import caption
from basic.mini.optim import EAGER, adamw_warmup_cosine
from basic.mini.scenes import COLOURS, SHAPES, SIZES, SceneSampler, render

TEXT_LENGTH = 40  # the longest caption (four objects and a sign) is 27 tokens, 29 with the special ones

# The SigLIP paper starts the bias at -10, about -log of its 32k batch, so that sigmoid(bias) starts near the
# share of positive pairs; the mini encoders' batch is 32 (BackboneSettings.encoder_batch): -log 32 = -3.47.
# Measured (seed 0, 2,600 steps): shape probe 0.92 with -3.5 against 0.84 with -10.
SIGLIP_BIAS = -3.5


@dataclass(frozen=True)
class EncoderSpec:
    kind: str  # clip | siglip
    layers: int
    hidden: int
    heads: int
    intermediate: int
    text_layers: int
    patch: int


ENCODER_SPECS: dict[str, EncoderSpec] = {
    "clip-l-336": EncoderSpec(
        "clip", layers=4, hidden=96, heads=4, intermediate=384, text_layers=2, patch=16
    ),
    "siglip": EncoderSpec("siglip", layers=4, hidden=96, heads=4, intermediate=384, text_layers=2, patch=16),
}


def encoder_tokenizer(base: Tokenizer, kind: str) -> PreTrainedTokenizerFast:
    """The world's vocabulary with CLIP's (`<s> text <|endoftext|>`, pad = eos) or SigLIP's
    (`text </s>`, padded to a fixed length) conventions."""
    backend = Tokenizer.from_str(base.to_str())
    if kind == "clip":
        bos, eos = "<s>", "<|endoftext|>"
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}",
            special_tokens=[(bos, backend.token_to_id(bos)), (eos, backend.token_to_id(eos))],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=backend,
            bos_token=bos,
            eos_token=eos,
            pad_token=eos,
            unk_token="<unk>",
            model_max_length=TEXT_LENGTH,
        )
    eos = "</s>"
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", special_tokens=[(eos, backend.token_to_id(eos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=eos,
        pad_token=eos,
        unk_token="<unk>",
        model_max_length=TEXT_LENGTH,
    )


def build_encoder(spec: EncoderSpec, tokenizer: PreTrainedTokenizerFast, image_size: int, seed: int):
    """(model, image processor) for `spec`, freshly initialised."""
    vision = {
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "image_size": image_size,
        "patch_size": spec.patch,
    }
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.heads,
        "max_position_embeddings": TEXT_LENGTH,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(seed)
    if spec.kind == "clip":
        # Patch and position embeddings drawn at ~1/sqrt(fan-in) as SigLIP's are (CLIP's 0.02 makes AdamW's
        # first steps rewrite them wholesale; shape came later), and a sharper start temperature (1/50).
        model = CLIPModel(
            CLIPConfig(
                text_config=text,
                vision_config={**vision, "initializer_range": 0.07},
                projection_dim=spec.hidden,
                logit_scale_init_value=math.log(50.0),
            )
        )
        processor = CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
    elif spec.kind == "siglip":
        model = SiglipModel(
            SiglipConfig(text_config={**text, "projection_size": spec.hidden}, vision_config=vision)
        )
        with torch.no_grad():  # SigLIP's initialisation: temperature 10, bias -log(batch) (see SIGLIP_BIAS)
            model.logit_scale.fill_(math.log(10.0))
            model.logit_bias.fill_(SIGLIP_BIAS)
        processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    else:
        raise ValueError(f"unknown encoder kind {spec.kind!r}; known: clip, siglip")
    model.set_attn_implementation(EAGER)
    return model, processor


def contrast_batches(captions: list[str], batch_size: int, rng: np.random.Generator, hard: float = 0.75):
    """Endless batches of image indices with distinct captions. A share `hard` of them gathers groups of
    images whose captions differ only in their shape words, so that telling them apart takes shapes: in
    random batches colours separate almost every pair, and the encoders learnt no shape at all."""
    groups: dict[tuple, list[int]] = {}
    for i, text in enumerate(captions):
        groups.setdefault(tuple(sorted(w for w in text.split() if w.strip(',."') not in SHAPES)), []).append(
            i
        )
    # Groups are drawn through their images, so big ones (single objects) come up most.
    members = [i for g in groups.values() if len({captions[j] for j in g}) > 1 for i in g]
    group_of = {i: g for g in groups.values() for i in g}
    while True:
        batch, seen = [], set()
        hard_batch = bool(members) and rng.random() < hard
        order = (
            (i for m in rng.permutation(members) for i in rng.permutation(group_of[m])[:16])
            if hard_batch
            else iter(rng.permutation(len(captions)))
        )
        for i in order:
            if captions[i] not in seen:
                seen.add(captions[i])
                batch.append(int(i))
                if len(batch) == batch_size:
                    break
        yield torch.tensor(batch)


def object_batches(
    batch_size: int, rng: np.random.Generator, image_size: int, held_out: frozenset[str] = frozenset()
):
    """Endless batches of freshly drawn single-object scenes, as (images, captions): `batch_size // 4`
    distinct (size, colour) pairs, each drawn once in every shape ("a large red circle", "a large red
    square", ...), at its own place. Every image's hardest rivals, its shape siblings, share its batch, so
    the contrastive loss can only fall by telling shapes apart: what teaches the encoders shape (on scene
    captions alone their shape probe stayed near 0.45). `held_out`: `pixel_digest`s of the probe images;
    rendering one of them again is an error."""
    sampler = SceneSampler(rng, "encoder-object-", text_prob=0.0)
    pairs = [(size, colour) for size in SIZES for colour in COLOURS]
    groups = min(max(1, batch_size // len(SHAPES)), len(pairs))
    while True:
        images, captions = [], []
        for k in rng.permutation(len(pairs))[:groups]:
            size, colour = pairs[int(k)]
            for shape in SHAPES:
                scene = sampler.sample(n_objects=1, shape=shape, colour=colour, size=size)
                image = render(scene, image_size)
                if pixel_digest(image) in held_out:
                    raise AssertionError(f"encoder training image {scene.id} equals a probe image")
                images.append(image)
                captions.append(caption(scene, rng))
        yield images, captions


def pixel_digest(image: Image.Image) -> str:
    """sha256 of an image's RGB pixels (PNG bytes would depend on the encoder's settings)."""
    return hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()


def mixed_batches(
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    captions: list[str],
    objects,
    tokenize,
    process,
    batch_size: int,
    rng: np.random.Generator,
    object_share: float,
    hard: float = 0.75,
):
    """Endless (pixel_values, input_ids) batches: a share `object_share` from `objects` (`object_batches`,
    processed and tokenised here), the rest from the scene-caption pairs by `contrast_batches`."""
    scenes = contrast_batches(captions, batch_size, rng, hard)
    while True:
        if rng.random() < object_share:
            images, texts = next(objects)
            yield process(images), tokenize(texts)
        else:
            idx = next(scenes)
            yield pixel_values[idx], input_ids[idx]


def train_encoder(
    model: PreTrainedModel, batches, steps: int, lr: float, desc: str = "encoder", position: int = 0
) -> list[float]:
    """`steps` AdamW steps of the model's own image-text loss on `batches` ((pixel_values, input_ids)
    pairs, e.g. `mixed_batches`); returns the losses. Many small batches beat few large ones here: shape
    is learnt only after about a thousand updates."""
    opt, sched = adamw_warmup_cosine(model, lr, steps, warmup=0.1, weight_decay=0.05, floor=0.0)
    model.train()
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, position=position, leave=True, mininterval=2.0)
    for _ in bar:
        pixel_values, input_ids = next(batches)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True).loss
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if len(losses) % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    model.eval()
    return losses


@torch.no_grad()
def probe_features(
    model: PreTrainedModel, pixel_values: torch.Tensor, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Image features for linear probes: `pooled` (the tower's pooled output, CLIP's post-norm CLS or
    SigLIP's attention-pool head: the standard linear-probe features) and `patches` (mean over patches of
    the penultimate layer, what LLaVA's projector reads)."""
    vision = model.vision_model
    skip = 1 if isinstance(model, CLIPModel) else 0  # CLIP's CLS token is not a patch
    pooled, patches = [], []
    for b in range(0, len(pixel_values), batch_size):
        out = vision(pixel_values=pixel_values[b : b + batch_size], output_hidden_states=True)
        pooled.append(out.pooler_output)
        patches.append(out.hidden_states[-2][:, skip:].mean(1))
    return {"pooled": torch.cat(pooled), "patches": torch.cat(patches)}
