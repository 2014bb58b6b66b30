"""The embedded world's scenes: coloured shapes on a 3x3 grid, an optional text sign, seeded and rendered.

A `Scene` is pure data (what is where); `render` turns it into an RGB image. Everything random comes
from numpy Generators derived from `(seed, stream)` with `stream_rng`, so the same seed gives the same
scenes and the same pixels, and train and evaluation use disjoint streams. On top of that,
`SceneSampler(exclude=...)` redraws any scene whose semantic content (`Scene.key`) was already used
for training, so an evaluation scene never appears in training, not even with other pixel jitter.
`patch_labels` gives the ground truth of each image patch (which object, the sign or the background) and
`annotations` the records that tie a held-out image (by its pixels) to its scene, for the embedding analysis.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Base RGB of each named colour; every object gets a small per-channel jitter around it.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (240, 135, 20),
    "yellow": (235, 210, 30),
    "green": (35, 160, 55),
    "blue": (35, 75, 215),
    "purple": (135, 55, 185),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
# Radius of an object as a fraction of the image side.
RADIUS = {"small": 0.085, "large": 0.14}
# Words on signs (TextVQA-style scenes): short, distinct, none of them a colour or shape name.
SIGN_WORDS = (
    "cafe",
    "stop",
    "open",
    "exit",
    "park",
    "taxi",
    "bank",
    "shop",
    "book",
    "sale",
    "milk",
    "bus",
    "hotel",
    "pizza",
    "tea",
    "gym",
    "zoo",
    "farm",
    "road",
    "gate",
    "lamp",
    "fish",
    "cake",
    "door",
    "home",
    "west",
    "east",
    "north",
    "south",
    "bread",
    "soup",
    "rice",
    "train",
    "boat",
    "bike",
    "wine",
)
GRID = 3

# Independent random streams: the same seed never feeds two purposes.
STREAMS = {
    "train_images": 1,
    "llm_train": 2,
    "finetune_text": 3,
    "llm_eval": 10,
    "probe": 11,
    "vqav2": 20,
    "gqa": 21,
    "sqa_img": 22,
    "mmb": 23,
    "mmvet": 24,
    "vizwiz": 25,
    "textvqa": 26,
}


def stream_rng(seed: int, stream: str, part: int = 0) -> np.random.Generator:
    """The Generator for one purpose (`STREAMS` key) of one world seed; `part` splits a purpose further
    (scenes and their wording use different parts, so changing one leaves the other as it was)."""
    return np.random.default_rng([seed, STREAMS[stream], part])


@dataclass(frozen=True)
class Obj:
    """One shape: attributes, grid cell (row 0 = top, col 0 = left) and centre in [0, 1] image units."""

    shape: str
    colour: str
    size: str
    row: int
    col: int
    x: float
    y: float
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """What an image shows. `sign_row` is the grid row the text sign fills (no object shares it)."""

    id: str
    objects: tuple[Obj, ...]
    text: str | None = None
    sign_row: int | None = None
    text_upper: bool = False
    quality: str = "clear"
    background: tuple[int, int, int] = (235, 235, 235)
    noise_seed: int = 0

    @property
    def key(self) -> str:
        """Semantic content (attributes, cells, text, quality), ignoring pixel jitter: the disjointness key."""
        objs = sorted((o.shape, o.colour, o.size, o.row, o.col) for o in self.objects)
        return json.dumps([objs, self.text, self.sign_row, self.quality])

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Scene:
        objs = tuple(Obj(**{**o, "rgb": tuple(o["rgb"])}) for o in d["objects"])
        return cls(**{**d, "objects": objs, "background": tuple(d["background"])})


class SceneSampler:
    """Draws scenes from one Generator; scenes whose `key` is in `exclude` are redrawn (held-out sets)."""

    def __init__(
        self,
        rng: np.random.Generator,
        prefix: str,
        exclude: set[str] | frozenset = frozenset(),
        max_objects: int = 4,
        text_prob: float = 0.3,
        dark_prob: float = 0.0,
        blurry_prob: float = 0.0,
        max_redraws: int = 1000,
    ):
        self.rng, self.prefix, self.exclude = rng, prefix, exclude
        self.max_objects, self.text_prob = max_objects, text_prob
        self.dark_prob, self.blurry_prob, self.max_redraws = dark_prob, blurry_prob, max_redraws
        self.drawn: list[Scene] = []

    def sample(
        self, n_objects: int | None = None, text: bool | None = None, quality: str | None = None, **kwargs
    ) -> Scene:
        if quality is None and self.exclude:
            # Held-out scenes draw their photo quality once, not per redraw: redraws reject clear scenes far
            # more often than dark or blurry ones (nearly every clear one-object content is in training),
            # which would otherwise inflate the share of dark and blurry photos several-fold.
            quality = self._quality(self.rng.random())
        for _ in range(self.max_redraws):
            scene = self._draw(n_objects, text, quality, **kwargs)
            if scene.key not in self.exclude:
                self.drawn.append(scene)
                return scene
        raise RuntimeError(
            f"{self.prefix}: no scene outside the excluded set after {self.max_redraws} draws; "
            "the world is too small for this many held-out scenes"
        )

    def _quality(self, u: float) -> str:
        return (
            "dark" if u < self.dark_prob else "blurry" if u < self.dark_prob + self.blurry_prob else "clear"
        )

    def _draw(
        self,
        n_objects: int | None,
        text: bool | None,
        quality: str | None,
        shape: str | None = None,
        colour: str | None = None,
        size: str | None = None,
    ) -> Scene:
        rng = self.rng
        has_text = bool(rng.random() < self.text_prob) if text is None else text
        sign_row = int(rng.choice([0, GRID - 1])) if has_text else None
        cells = [(r, c) for r in range(GRID) for c in range(GRID) if r != sign_row]
        n = int(rng.integers(1, self.max_objects + 1)) if n_objects is None else n_objects
        n = min(n, len(cells))
        chosen = rng.choice(len(cells), size=n, replace=False)
        objects = []
        for k, idx in enumerate(chosen):
            row, col = cells[int(idx)]
            drawn_size = SIZES[
                int(rng.integers(len(SIZES)))
            ]  # drawn even when forced: same stream either way
            size_k = size if (size and k == 0) else drawn_size
            r = RADIUS[size_k]
            slack = 1 / (2 * GRID) - r - 0.015  # keep the shape inside its cell
            x = (col + 0.5) / GRID + float(rng.uniform(-slack, slack))
            y = (row + 0.5) / GRID + float(rng.uniform(-slack, slack))
            name = colour if (colour and k == 0) else str(rng.choice(list(COLOURS)))
            rgb = tuple(int(np.clip(v + rng.integers(-18, 19), 0, 255)) for v in COLOURS[name])
            objects.append(
                Obj(
                    shape=shape if (shape and k == 0) else str(rng.choice(SHAPES)),
                    colour=name,
                    size=size_k,
                    row=row,
                    col=col,
                    x=round(x, 4),
                    y=round(y, 4),
                    rgb=rgb,
                )
            )
        u = rng.random()  # drawn even when the quality is given: same stream either way
        q = quality or self._quality(u)
        grey = int(rng.integers(205, 250))
        tint = rng.integers(-8, 9, size=3)
        background = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
        word = str(rng.choice(SIGN_WORDS)) if has_text else None
        scene_id = f"{self.prefix}{len(self.drawn):06d}"
        return Scene(
            id=scene_id,
            objects=tuple(sorted(objects, key=lambda o: (o.row, o.col))),
            text=word,
            sign_row=sign_row,
            text_upper=bool(rng.random() < 0.5) if has_text else False,
            quality=q,
            background=background,
            noise_seed=int(rng.integers(2**31)),
        )


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        a = -np.pi / 2 + i * np.pi / 5
        rr = r if i % 2 == 0 else r * 0.45
        pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
    return pts


def _draw_object(draw: ImageDraw.ImageDraw, scene: Scene, o: Obj, size: int, fill) -> None:
    cx, cy, r = o.x * size, o.y * size, RADIUS[o.size] * size
    if o.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif o.shape == "square":
        s = r * 0.9
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif o.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif o.shape == "star":
        draw.polygon(_star(cx, cy, r * 1.1), fill=fill)
    else:
        raise ValueError(f"scene {scene.id}: unknown shape {o.shape!r}")


def _sign_box(scene: Scene, size: int) -> tuple[float, float, float, float]:
    top = scene.sign_row * size / GRID + size * 0.04
    bottom = (scene.sign_row + 1) * size / GRID - size * 0.04
    return size * 0.05, top, size * 0.95, bottom


def render(scene: Scene, size: int = 64) -> Image.Image:
    """The scene as an RGB image of `size` x `size` pixels (deterministic given the scene)."""
    img = Image.new("RGB", (size, size), scene.background)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        _draw_object(draw, scene, o, size, o.rgb)
    if scene.text is not None:
        left, top, right, bottom = _sign_box(scene, size)
        draw.rectangle([left, top, right, bottom], fill=(250, 250, 250), outline=(20, 20, 20))
        font = ImageFont.load_default(size=max(6, round(size * 0.19)))
        word = scene.text.upper() if scene.text_upper else scene.text
        draw.text((size / 2, (top + bottom) / 2), word, font=font, fill=(15, 15, 15), anchor="mm")
    noise = np.random.default_rng(scene.noise_seed).normal(0, 5, size=(size, size, 3))
    pixels = np.asarray(img, dtype=np.float32) + noise
    if scene.quality == "dark":
        pixels *= 0.13
    img = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    if scene.quality == "blurry":
        img = img.filter(ImageFilter.GaussianBlur(radius=size * 0.07))
    return img


def png_bytes(img: Image.Image) -> bytes:
    """PNG encoding with fixed settings and no metadata, so equal images give equal bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- ground truth per image patch

# Labels of `patch_labels`; an object's label is its index in `scene.objects` (0, 1, ...).
BACKGROUND, SIGN, MIXED = -1, -2, -3


def patch_labels(scene: Scene, grid: int, min_cover: float = 0.25, subpixels: int = 8) -> np.ndarray:
    """What each patch of the rendered image shows when a vision tower cuts it into `grid` x `grid` patches
    (row-major, as a ViT reads them): [grid, grid] ints. A patch is labelled with the object (its index) or
    the sign (`SIGN`) that covers the largest share of it, if that share is at least `min_cover`;
    `BACKGROUND` if nothing covers any of it; `MIXED` otherwise (an edge). The shapes are drawn with
    `render`'s own geometry on a `grid * subpixels` raster, so the labels hold at any rendered size."""
    if len(scene.objects) > 250:
        raise ValueError(f"scene {scene.id}: too many objects to label")
    size = grid * subpixels
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for k, o in enumerate(scene.objects):
        _draw_object(draw, scene, o, size, k + 1)
    sign = len(scene.objects) + 1
    if scene.text is not None:
        draw.rectangle(list(_sign_box(scene, size)), fill=sign)
    cells = (
        np.asarray(mask)
        .reshape(grid, subpixels, grid, subpixels)
        .transpose(0, 2, 1, 3)
        .reshape(grid, grid, -1)
    )
    counts = (
        np.stack([(cells == v).sum(-1) for v in range(sign + 1)], -1) / subpixels**2
    )  # [grid, grid, labels]
    best = counts[..., 1:].argmax(-1) + 1
    share = np.take_along_axis(counts, best[..., None], -1)[..., 0]
    labels = np.where(best == sign, SIGN, best - 1)
    labels = np.where(share >= min_cover, labels, np.where(counts[..., 0] == 1.0, BACKGROUND, MIXED))
    return labels.astype(np.int64)


def pixel_key(img: Image.Image) -> str:
    """A key of an image's RGB pixels (size included), however it was encoded: how the analysis finds the
    scene of a benchmark image in `annotations`."""
    rgb = img.convert("RGB")
    return sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes())


def annotations(scenes: list[Scene], size: int) -> list[dict]:
    """One record per distinct rendered image of `scenes`: `{"pixels": pixel_key, "scene": Scene.to_json()}`,
    the ground truth of held-out images (`basic mini data` writes them to benchmarks/scenes.jsonl)."""
    out: dict[str, dict] = {}
    for s in scenes:
        out.setdefault(pixel_key(render(s, size)), s.to_json())
    return [{"pixels": key, "scene": scene} for key, scene in out.items()]
