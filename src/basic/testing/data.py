"""A tiny LLaVA-format data set (images + stage-1 and stage-2 conversation JSON) for tests and smoke runs.

Deterministic, generated in well under a second: coloured shapes on non-square canvases (so `pad`
matters), captions for stage 1, and for stage 2 a mix of single- and multi-turn image conversations and
text-only ones, in LLaVA's exact record format. It is not the embedded study data (`basic.mini`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square")


def _scene(rng: random.Random) -> tuple[Image.Image, str, str]:
    width, height = rng.choice([(32, 20), (20, 32), (28, 28)])
    colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
    image = Image.new("RGB", (width, height), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    box = (width // 4, height // 4, 3 * width // 4, 3 * height // 4)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
    return image, colour, shape


def write_tiny_llava_data(root: str | Path, n_images: int = 12, seed: int = 0) -> dict[str, Path]:
    """Write `images/train/*.png`, `pretrain.json` and `finetune.json` under `root`; returns their paths."""
    root = Path(root)
    rng = random.Random(seed)
    (root / "images" / "train").mkdir(parents=True, exist_ok=True)
    pretrain, finetune = [], []
    for i in range(n_images):
        image, colour, shape = _scene(rng)
        name = f"train/{i:04d}.png"
        image.save(root / "images" / name)
        caption = f"a {colour} {shape} in the middle"
        pretrain.append(
            {
                "id": f"cap-{i}",
                "image": name,
                "conversations": [
                    {
                        "from": "human",
                        "value": rng.choice(
                            ["<image>\ndescribe the image .", "describe the image .\n<image>"]
                        ),
                    },
                    {"from": "gpt", "value": caption},
                ],
            }
        )
        if i % 3 == 0:
            conversations = [
                {"from": "human", "value": "<image>\nwhat colour is the shape ?"},
                {"from": "gpt", "value": colour},
                {"from": "human", "value": "what is the shape ?"},
                {"from": "gpt", "value": f"a {shape}"},
            ]
        else:
            conversations = [
                {
                    "from": "human",
                    "value": "what colour is the shape ?\nanswer the question using a single word or phrase .\n<image>",
                },
                {"from": "gpt", "value": colour},
            ]
        finetune.append({"id": f"vqa-{i}", "image": name, "conversations": conversations})
        if i % 4 == 0:
            finetune.append(
                {
                    "id": f"text-{i}",
                    "conversations": [
                        {"from": "human", "value": f"how many objects are there ? {i % 5}"},
                        {"from": "gpt", "value": "two three four five"},
                    ],
                }
            )
    paths = {
        "images": root / "images",
        "pretrain": root / "pretrain.json",
        "finetune": root / "finetune.json",
    }
    paths["pretrain"].write_text(json.dumps(pretrain, indent=1))
    paths["finetune"].write_text(json.dumps(finetune, indent=1))
    return paths
