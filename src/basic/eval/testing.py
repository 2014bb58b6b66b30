"""Tiny LLaVA checkpoints and mini-benchmark fixtures for evaluation tests and speed checks, built offline.

`save_tiny_llava` writes the checkpoint format of docs/interfaces.md (LlavaForConditionalGeneration +
LlavaProcessor with the family's chat template, `image_aspect_ratio`, end-of-turn ids in the generation
config's eos) with vanilla transformers and `basic.testing`'s tiny backbones, so the plugin is proven on
any HF LLaVA directory. `write_benchmark_fixtures` writes small parquet files with the documented columns
of every mini benchmark (docs/interfaces.md), laid out like `data/mini/benchmarks/`.
"""

from __future__ import annotations

import random
from pathlib import Path

import datasets
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    GenerationConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from basic.data.templates import IMAGE_TOKEN, TEMPLATES
from basic.testing import FAMILIES, save_tiny_vision, tiny_llm_config, tiny_tokenizer


def save_tiny_llava(out_dir: str | Path, family: str = "llama", image_aspect_ratio: str = "pad",
                    seed: int = 0, hidden: int = 32, layers: int = 4, image_size: int = 16) -> Path:
    """Write a random tiny LLaVA checkpoint (CLIP encoder + `family` LLM) to `out_dir`; returns it.

    `image_size` / 4 squared is the number of image tokens (CLIP patch size 4)."""
    out = Path(out_dir)
    vision_dir = save_tiny_vision("clip", out / "_vision", image_size=image_size)
    tokenizer = tiny_tokenizer(family)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    vision_config = AutoConfig.from_pretrained(vision_dir).vision_config
    config = LlavaConfig(
        vision_config=vision_config, text_config=tiny_llm_config(family, tokenizer, layers=layers, hidden=hidden),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    config.image_aspect_ratio = image_aspect_ratio
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    template = TEMPLATES[FAMILIES[family][2]]
    end_of_turn = tokenizer.convert_tokens_to_ids(template.end_of_turn_for(tokenizer))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=sorted({tokenizer.eos_token_id, end_of_turn}),
    )
    model.save_pretrained(out)
    LlavaProcessor(
        image_processor=AutoImageProcessor.from_pretrained(vision_dir), tokenizer=tokenizer,
        chat_template=template.jinja, patch_size=vision_config.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,  # CLIP's CLS token
    ).save_pretrained(out)
    return out


_WORDS = ["red", "blue", "green", "circle", "square", "two", "three", "yes", "no", "left", "right"]


def _image(rng: random.Random) -> Image.Image:
    size = (rng.randint(12, 40), rng.randint(12, 40))  # non-square, so padding to square is exercised
    return Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))


def _rows(bench: str, n: int, rng: random.Random) -> list[dict]:
    """`n` records of `bench` with the columns of docs/interfaces.md (content random, shape exact)."""
    def word() -> str:
        return rng.choice(_WORDS)

    rows: list[dict] = []
    for i in range(n):
        q = f"what is the {word()} {word()}?"
        if bench == "vqav2":
            answers = [word() for _ in range(10)]
            rows.append(dict(question_id=i, image=_image(rng), question=q,
                             answers=[dict(answer=a, answer_confidence="yes", answer_id=k + 1)
                                      for k, a in enumerate(answers)],
                             multiple_choice_answer=answers[0], answer_type="other", question_type="what"))
        elif bench == "gqa":
            a = word()
            rows.append(dict(id=str(i), imageId=f"img{i}", image=_image(rng), question=q, answer=a,
                             fullAnswer=f"The answer is {a}.", structural="query", semantic="attr"))
        elif bench == "sqa_img":
            choices = rng.sample(_WORDS, rng.randint(2, 4))
            rows.append(dict(image=_image(rng), question=q, choices=choices, answer=rng.randrange(len(choices)),
                             hint=rng.choice(["", "The scene has shapes."]), subject="natural science",
                             grade="grade3", category="shapes"))
        elif bench in ("mmb_en", "mmb_cn"):
            options = rng.sample(_WORDS, 4)
            image, truth, hint = _image(rng), rng.randrange(4), rng.choice(["", "Look."])
            for k in range(4):  # the original and its three circular copies, options rotated by k
                rotated = options[k:] + options[:k]
                rows.append(dict(index=i + k * 1_000_000, image=image, question=q, hint=hint,
                                 A=rotated[0], B=rotated[1], C=rotated[2], D=rotated[3],
                                 answer="ABCD"[rotated.index(options[truth])], category="attribute",
                                 **{"l2-category": "perception"}))
        elif bench == "mmvet":
            answer = rng.choice([word(), f"{word()}<AND>{word()}", f"{word()}<OR>{word()}"])
            rows.append(dict(question_id=f"v1_{i}", image=_image(rng), question=q, answer=answer, capability="rec"))
        elif bench == "vizwiz":
            answers = [rng.choice(_WORDS + ["unanswerable"]) for _ in range(10)]
            rows.append(dict(question_id=f"VizWiz_test_{i:08d}.jpg", image=_image(rng), question=q, answers=answers,
                             category=rng.choice(["other", "unanswerable"]), answerable=int(rng.random() < 0.8)))
        elif bench == "textvqa":
            rows.append(dict(question_id=i, image=_image(rng), image_id=f"t{i}", question=q,
                             answers=[word() for _ in range(10)], ocr_tokens=[word(), word()]))
        else:
            raise ValueError(f"unknown mini benchmark {bench!r}")
    return rows


SPLITS = {"vqav2": "testdev", "gqa": "testdev", "sqa_img": "test", "mmb_en": "dev", "mmb_cn": "dev",
          "mmvet": "test", "vizwiz": "testdev", "textvqa": "validation"}


def write_benchmark_fixtures(data_root: str | Path, n: int = 4, seed: int = 0,
                             benchmarks: tuple[str, ...] = tuple(SPLITS)) -> Path:
    """Write `<data_root>/benchmarks/<bench>/<split>.parquet` (Image feature, PNG bytes embedded)."""
    root = Path(data_root)
    rng = random.Random(seed)
    for bench in benchmarks:
        ds = datasets.Dataset.from_list(_rows(bench, n, rng)).cast_column("image", datasets.Image())
        path = root / "benchmarks" / bench / f"{SPLITS[bench]}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(path)
    return root
