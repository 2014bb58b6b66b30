"""Tiny random backbones for tests and benchmarks: every LLM family and both encoders, built offline.

`save_tiny_llm(family, dir)` and `save_tiny_vision(kind, dir)` write ordinary Hugging Face checkpoint
directories (weights, config, tokenizer or image processor), so the engine is exercised exactly as a
user would call it, with paths instead of hub ids. `tiny_llava(family, encoder)` builds a random LLaVA
and its processor in memory (`tiny_llava_config` its config alone, e.g. for fake tensors). The tokenizer is a small byte-level BPE trained on a
fixed corpus; each family gets its own special tokens and chat template, as the real checkpoints do.
The LLM tokenizers deliberately lack `<image>`: adding it is the engine's job.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from basic.data.templates import IMAGE_TOKEN, TEMPLATES
from basic.families import FAMILIES, SPECIAL_TOKENS

_CORPUS = (
    "a red circle sits left of a blue square . the green triangle is small . what colour is the shape ? "
    "answer the question using a single word or phrase . how many objects are there ? two three four five "
    "yellow purple orange big large tiny top bottom right middle above below the scene shows text reads "
    "describe the image in detail . answer with the option's letter from the given choices directly . "
    "yes no unanswerable A B C D 0 1 2 3 4 5 6 7 8 9 红色 的 圆 形 蓝 绿 这 是 什么 颜色 ? 。"
)


TOKENIZER_KINDS = ("byte_bpe", "word", "sentencepiece")


def tiny_tokenizer(
    family: str = "llama", vocab_size: int = 320, kind: str = "byte_bpe"
) -> PreTrainedTokenizerFast:
    """A tokenizer with `family`'s special tokens and chat template (deterministic), of one of three kinds:
    `byte_bpe` (GPT-2 style byte-level BPE, as the mini LLMs use), `word` (whole words, no byte-level
    decoder: transformers cannot build its stop-string criterion for it), `sentencepiece` (Llama-2 style
    Unigram with the `▁` word marker)."""
    _, _, template, tokens = FAMILIES[family]
    if kind == "byte_bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    elif kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False
        )
    elif kind == "sentencepiece":
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="<unk>", show_progress=False
        )
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; known: {', '.join(TOKENIZER_KINDS)}")
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=tokens["bos"],
        eos_token=tokens["eos"],
        unk_token=tokens["unk"],
        pad_token=tokens["pad"],
        model_max_length=512,
    )
    fast.chat_template = TEMPLATES[template].jinja
    return fast


def tiny_llm_config(family: str, tokenizer: PreTrainedTokenizerFast, layers: int = 4, hidden: int = 32):
    config_cls, _, _, _ = FAMILIES[family]
    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden + 5,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if family == "gemma":
        kwargs.update(head_dim=hidden // 4, tie_word_embeddings=True)
    if family in ("mistral", "phi3"):
        kwargs.update(sliding_window=24)  # small enough that the window bites in tests
    return config_cls(**kwargs)


def tiny_llava_config(
    family: str = "llama",
    encoder: str = "clip",
    layers: int = 4,
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> LlavaConfig:
    """A random LLaVA's config: `family`'s tiny LLM (`tokenizer`, default `tiny_llava_tokenizer(family)`, must
    hold `<image>`), a 2-layer CLIP or SigLIP tower on 16x16 images in 4x4 patches (16 image tokens)."""
    if encoder not in ("clip", "siglip"):
        raise ValueError(f"unknown vision kind {encoder!r}; known: clip, siglip")
    tokenizer = tokenizer or tiny_llava_tokenizer(family)
    vision = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 16,
        "patch_size": 4,
    }
    clip = encoder == "clip"
    return LlavaConfig(
        vision_config=CLIPVisionConfig(**vision) if clip else SiglipVisionConfig(**vision),
        text_config=tiny_llm_config(family, tokenizer, layers=layers),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=16,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default" if clip else "full",
    )


def tiny_llava_tokenizer(family: str = "llama") -> PreTrainedTokenizerFast:
    """`tiny_tokenizer(family)` with `<image>` added (and a pad token), as the engine prepares it."""
    tokenizer = tiny_tokenizer(family)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def tiny_llava(
    family: str = "llama",
    encoder: str = "clip",
    layers: int = 4,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A random LLaVA (`tiny_llava_config`) and its processor, in memory."""
    tokenizer = tiny_llava_tokenizer(family)
    config = tiny_llava_config(family, encoder, layers, tokenizer)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(dtype)
    clip = encoder == "clip"
    image_processor = (
        CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
        if clip
        else SiglipImageProcessor(size={"height": 16, "width": 16})
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=4,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=int(clip),
        image_token=IMAGE_TOKEN,
    )
    return model, processor


def save_tiny_llm(family: str, out_dir: str | Path, layers: int = 4, hidden: int = 32, seed: int = 0) -> Path:
    """Write a random `family` causal LM with its tokenizer to `out_dir`; returns the directory."""
    out = Path(out_dir)
    tokenizer = tiny_tokenizer(family)
    torch.manual_seed(seed)
    model = FAMILIES[family][1](tiny_llm_config(family, tokenizer, layers, hidden))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_tiny_vision(
    kind: str, out_dir: str | Path, image_size: int = 16, patch_size: int = 4, hidden: int = 32, seed: int = 0
) -> Path:
    """Write a random vision encoder and its image processor to `out_dir`.

    `clip` is saved as a full CLIPModel (as openai/clip-vit-* are); `siglip` as a bare SiglipVisionModel,
    so both layouts a user may bring are covered.
    """
    out = Path(out_dir)
    torch.manual_seed(seed)
    vision = dict(
        hidden_size=hidden,
        intermediate_size=2 * hidden + 5,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
    )
    if kind == "clip":
        text = dict(
            vocab_size=99,
            hidden_size=hidden,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=4,
            max_position_embeddings=16,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=hidden)).save_pretrained(
            out
        )
        CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        ).save_pretrained(out)
    elif kind == "siglip":
        SiglipVisionModel(SiglipVisionConfig(**vision)).save_pretrained(out)
        SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    else:
        raise ValueError(f"unknown vision kind {kind!r}; known: clip, siglip")
    return out


__all__ = [
    "save_tiny_llm",
    "save_tiny_vision",
    "tiny_llava",
    "tiny_llava_config",
    "tiny_llava_tokenizer",
    "tiny_llm_config",
    "tiny_tokenizer",
]
