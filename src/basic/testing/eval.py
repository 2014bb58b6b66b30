"""Tiny LLaVA checkpoints and mini-benchmark fixtures for evaluation tests and speed checks, built offline.

`save_tiny_llava` writes the checkpoint format of docs/interfaces.md (LlavaForConditionalGeneration +
LlavaProcessor with the family's chat template, `image_aspect_ratio`, end-of-turn ids in the generation
config's eos) with vanilla transformers and `basic.testing.backbones`'s tiny backbones, so the plugin is proven on
any HF LLaVA directory. `write_benchmark_fixtures` writes a few questions of every mini benchmark with the
embedded world's own generator, laid out like `data/mini/benchmarks/` (with the scenes file the analysis reads).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    GenerationConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from basic.data.templates import IMAGE_TOKEN, TEMPLATES
from basic.families import FAMILIES
from basic.testing.backbones import save_tiny_vision, tiny_llm_config, tiny_tokenizer


def save_tiny_llava(
    out_dir: str | Path,
    family: str = "llama",
    image_aspect_ratio: str = "pad",
    seed: int = 0,
    hidden: int = 32,
    layers: int = 4,
    image_size: int = 16,
    tokenizer: PreTrainedTokenizerFast | None = None,
    vocab_size: int = 320,
) -> Path:
    """Write a random tiny LLaVA checkpoint (CLIP encoder + `family` LLM) to `out_dir`; returns it.

    `image_size` / 4 squared is the number of image tokens (CLIP patch size 4). `tokenizer`: another
    tokenizer with `family`'s special tokens (default: the byte-level BPE of basic.testing.backbones, whose
    `vocab_size` of 600 gives whole-word tokens: "Ġred", "Ġtop", ...)."""
    out = Path(out_dir)
    vision_dir = save_tiny_vision("clip", out / "_vision", image_size=image_size)
    tokenizer = tokenizer or tiny_tokenizer(family, vocab_size=vocab_size)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    vision_config = AutoConfig.from_pretrained(vision_dir).vision_config
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=tiny_llm_config(family, tokenizer, layers=layers, hidden=hidden),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    config.image_aspect_ratio = image_aspect_ratio
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    template = TEMPLATES[FAMILIES[family][2]]
    end_of_turn = tokenizer.convert_tokens_to_ids(template.end_of_turn_for(tokenizer))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=sorted({tokenizer.eos_token_id, end_of_turn}),
    )
    model.save_pretrained(out)
    LlavaProcessor(
        image_processor=AutoImageProcessor.from_pretrained(vision_dir),
        tokenizer=tokenizer,
        chat_template=template.jinja,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
    ).save_pretrained(out)
    return out


def write_benchmark_fixtures(data_root: str | Path, n: int = 4, seed: int = 0, image_size: int = 32) -> Path:
    """`<data_root>/benchmarks/<bench>/<split>.parquet` for the eight benchmarks, `n` questions each, written by
    the embedded world's own generator (basic.mini.benchmarks), as `basic mini data` writes them."""
    import json

    from basic.mini import benchmarks
    from basic.mini.scenes import SceneSampler, annotations

    rng = np.random.default_rng(seed)
    sampler = SceneSampler(rng, "eval")
    for name in ("vqav2", "gqa", "sqa_img", "mmb", "mmvet", "vizwiz", "textvqa"):
        for bench, rows in benchmarks.build(name, sampler, rng, n, image_size).items():
            benchmarks.write(Path(data_root) / "benchmarks" / bench, bench, rows)
    scenes = Path(data_root) / "benchmarks" / "scenes.jsonl"
    scenes.write_text(
        "".join(json.dumps(r) + "\n" for r in annotations(sampler.drawn, image_size)), encoding="utf-8"
    )
    return Path(data_root)
