"""`basic analyze`: the paper's analysis of the visual embeddings (its section 3) for one stage-2 checkpoint.

    basic analyze --checkpoint models/<run>/finetune --data data/mini --out results/analysis/<run>.json \\
        [--profile mini|full] [--images N] [--tasks mini_vqav2,mini_gqa,...] [--examples K]

N held-out images (default: 300 at mini scale, as many as the tasks have; 30 at full scale, as the paper)
go through the model with their benchmark prompt: lmms-eval's own task (its documents, `doc_to_visual`,
`doc_to_text` and generation settings; mini: the package's mini tasks over `--data`, full: any lmms-eval
task, by default `coco2017_cap_val`, whose prompt asks for a caption), and the prompt, image padding and
encoding of the evaluation model (`basic.eval.plugin.BasicLlava`). The hidden states are read, through
forward hooks, from the evaluation's own pass over the prompt (the first forward pass of its generation; no
attention weights, any attention kernel). Read at the image positions, for the initial embeddings (the projector's output) and
for the output of every LLM layer (the residual stream, before the final norm):

- the **matched token** of each patch: the vocabulary token whose input embedding has the highest cosine
  with it (the paper's reading; Gemma's sqrt(d) scaling of its embeddings does not change a cosine), and,
  as a second reading, the **logit lens**: the argmax of lm_head(final norm(h)), named `logit_lens`;
- `meaningful_fraction`: the share of patches whose match is a meaningful word: a whole-word token (the
  tokenizer's word-start marker, `▁` or `Ġ`, then two or more letters), not a special token, not a stop
  word (`stop_words.txt` in this package). The same filter serves the full tokenizers and the mini one;
- `eos_fraction`: the share matching an end-of-turn token (the generation config's eos ids, `</s>` for
  Vicuna);
- mini scale only, `grounded_fraction`: over the patches that the scene annotations
  (`<data>/benchmarks/scenes.jsonl`, `basic.mini.scenes.patch_labels`) assign to one object, to the sign
  or to the background (edges left out), the share whose match is one of that object's attribute words
  (colour, shape, size), one of the sign's words (its text, "sign"), or, for the background, a layout or
  background word (the world's position words: top, bottom, left, right, center; background, picture,
  image); also split into `grounded_object_fraction` and `grounded_background_fraction`.

The **replacement test** answers each image's question with its real visual embeddings (the evaluation
path, pixels in), and again with each visual embedding replaced by the input embedding of its initial
matched token; `exact_match` is the share of answers identical to the real ones (normalised: case,
punctuation, spaces) and `token_f1` the bag-of-words F1 between them (the score for captions). The same
two scores for answers given a blank image of the processor's mean colour (`blank_*`) are the control:
what agreement a model that ignores its image reaches anyway.

The JSON keeps a small `summary` of numbers (what `dvc metrics show` reads), the setup, one record per layer
(both readings: the fractions and the most frequent matches), the replacement test, and a few `examples`
(the image as the model saw it, as PNG base64, its patch labels and every layer's matches) for the
analysis notebook. `summary.initial_meaningful_per_576` scales the initial share to the paper's 576
patches (its 74 / 576 for LLaVA-1.5 and 217 / 576 for BASIC).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import string
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from typing_extensions import Self  # typing.Self from Python 3.11

STOP_WORDS_FILE = "stop_words.txt"
WORD_START = ("▁", "Ġ")  # SentencePiece's and byte-level BPE's marks of a token that starts a word
PAPER_PATCHES = 576  # LLaVA-1.5's 24 x 24 patches of a 336-pixel image
# Per profile: images, tasks, and the batch (mini: 64 halves the per-step overhead of CPU generation, and the
# answers are the same at any batch size; full: every layer's image positions of a batch are held at once).
DEFAULTS = {
    "mini": {"images": 300, "tasks": "mini_vqav2,mini_gqa,mini_textvqa", "batch_size": 64},
    "full": {"images": 30, "tasks": "coco2017_cap_val", "batch_size": 8},
}
READINGS = ("cosine", "logit_lens")
# Words of the background in the mini world: what the scene descriptions say about layout (where an object
# is) and the words for the picture itself; attribute words come from the scene (basic.mini.language).
BACKGROUND_WORDS = ("background", "picture", "image")
TOP_TOKENS = 8


class AnalysisError(RuntimeError):
    """The analysis cannot run on what it was given; the message names the file, task or key."""


# ---- vocabulary -----------------------------------------------------------------------------------------


def stop_words() -> frozenset[str]:
    text = (resources.files("basic.eval") / STOP_WORDS_FILE).read_text(encoding="utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def token_words(tokenizer, size: int) -> list[str | None]:
    """Per vocabulary id (0..size-1, the embedding matrix's rows): the lower-case word the token spells when it
    is a whole-word alphabetic token (word-start marker, then letters only), else None (special tokens,
    sub-word pieces, punctuation, numbers, rows past the tokenizer's vocabulary)."""
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special
    }
    pieces = tokenizer.convert_ids_to_tokens(list(range(min(size, len(tokenizer)))))
    words: list[str | None] = []
    for i, piece in enumerate(pieces):
        word = piece[1:] if piece and piece.startswith(WORD_START) else None
        words.append(
            word.lower() if word and i not in special and word.isascii() and word.isalpha() else None
        )
    return words + [None] * (size - len(words))


def meaningful_ids(words: list[str | None], stops: frozenset[str]) -> torch.Tensor:
    """[V] bool: whole-word tokens of two or more letters that are not stop words."""
    return torch.tensor([w is not None and len(w) >= 2 and w not in stops for w in words], dtype=torch.bool)


def token_text(tokenizer, token_id: int) -> str:
    """A token as a reader sees it (its decoded text, stripped; the raw piece when that is empty)."""
    if token_id >= len(tokenizer):
        return f"<{token_id}>"
    text = tokenizer.decode([token_id]).strip()
    return text if text and text.isprintable() else tokenizer.convert_ids_to_tokens(token_id)


# ---- what is analysed: documents of lmms-eval tasks -----------------------------------------------------


@dataclass
class Item:
    """One held-out image with its benchmark question."""

    task: str
    doc_id: int
    context: str
    gen_kwargs: dict
    target: str
    key: str  # basic.mini.scenes.pixel_key of the image
    labels: Any = None  # [grid, grid] patch labels (mini), from the scene


def load_tasks(names: list[str], data: Path, profile: str, work: Path) -> dict:
    """lmms-eval task objects by name: the package's tasks rendered for `data` (mini: only those, so that
    lmms-eval does not index its hundreds of own tasks), lmms-eval's own ones too at full scale."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    from basic.eval.evaluate import render_tasks

    tasks_dir = render_tasks(data, work / "tasks")
    manager = TaskManager(
        verbosity="WARNING", include_path=str(tasks_dir), include_defaults=profile == "full"
    )
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise AnalysisError(
            f"no lmms-eval task {', '.join(unknown)} (profile {profile}; mini tasks: "
            f"{', '.join(t for t in manager.all_tasks if t.startswith('mini_'))})"
        )
    tasks = get_task_dict(names, manager)
    return {name: tasks[name] for name in names}


def _target(task, doc) -> str:
    try:
        target = task.doc_to_target(doc)
    except Exception:  # noqa: BLE001 - a target is shown, never scored; some tasks have none for a split
        return ""
    return target if isinstance(target, str) else json.dumps(target, default=str)[:200]


def test_docs(task) -> Any:
    return task.test_docs() if task.has_test_docs() else task.validation_docs()


def select_items(tasks: dict, n: int) -> list[Item]:
    """The first `n` distinct images of the tasks' test documents, taken from the tasks in turn, each with the
    first question asked about it; documents with other than one image are skipped."""
    from basic.mini.scenes import pixel_key

    docs = {name: test_docs(task) for name, task in tasks.items()}
    items: list[Item] = []
    seen: set[str] = set()
    for i in range(max(len(d) for d in docs.values())):
        for name, task in tasks.items():
            if len(items) >= n or i >= len(docs[name]):
                continue
            visuals = task.doc_to_visual(docs[name][i]) or []
            if len(visuals) != 1:
                continue
            key = pixel_key(visuals[0])
            if key not in seen:
                seen.add(key)
                items.append(
                    Item(
                        name,
                        i,
                        task.doc_to_text(docs[name][i]),
                        dict(task.config.generation_kwargs or {}),
                        _target(task, docs[name][i]),
                        key,
                    )
                )
    if not items:
        raise AnalysisError(f"tasks {', '.join(tasks)} have no single-image documents")
    return items


def load_scenes(data: Path) -> dict:
    """pixel key -> Scene, from the world's `benchmarks/scenes.jsonl`."""
    from basic.mini.scenes import Scene

    path = data / "benchmarks" / "scenes.jsonl"
    if not path.is_file():
        raise AnalysisError(
            f"{path}: missing; the mini world writes the benchmark scenes there (basic mini data "
            f"--out {data})"
        )
    out = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
            out[record["pixels"]] = Scene.from_json(record["scene"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise AnalysisError(f"{path}:{number}: not a scene record ({e})") from None
    return out


def patch_words(scene, labels) -> list[tuple[str, frozenset[str]] | None]:
    """Per patch (row-major): ("object" | "background", the words that ground it), or None for an edge patch
    (left out). The sign counts as an object whose words are its text and "sign"."""
    from basic.mini.language import POSITION, colour_word, shape_word, size_word
    from basic.mini.scenes import BACKGROUND, MIXED, SIGN

    layout = frozenset(w for phrase in POSITION["en"].values() for w in phrase.split()) | frozenset(
        BACKGROUND_WORDS
    )
    out: list[tuple[str, frozenset[str]] | None] = []
    for label in labels.flatten().tolist():
        if label == MIXED:
            out.append(None)
        elif label == BACKGROUND:
            out.append(("background", layout))
        elif label == SIGN:
            out.append(("object", frozenset({scene.text.lower(), "sign"})))
        else:
            o = scene.objects[label]
            out.append(
                (
                    "object",
                    frozenset(
                        {colour_word(o.colour, "en"), shape_word(o.shape, "en"), size_word(o.size, "en")}
                    ),
                )
            )
    return out


# ---- the model pass -------------------------------------------------------------------------------------


class PrefillOutputs:
    """Forward hooks that keep, from the first forward pass of a generation (the prompt's, before any new
    token), the projector's output and each LLM decoder layer's output at the image positions."""

    def __init__(self, model, image_mask: torch.Tensor):
        from basic.method.capture import decoder_layers

        self.projector, self.layers, self.mask = (
            model.model.multi_modal_projector,
            decoder_layers(model),
            image_mask,
        )
        self.initial: torch.Tensor | None = None
        self.outputs: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles: list = []

    def __enter__(self) -> Self:
        def keep_initial(module, args, output):
            if self.initial is None:
                self.initial = output.reshape(-1, output.shape[-1]).float()

        def keep_layer(index: int):
            def keep(module, args, output):
                hidden = output[0] if isinstance(output, tuple) else output
                if self.outputs[index] is None:  # later calls are the decoding steps
                    self.outputs[index] = hidden[self.mask].float()

            return keep

        self._handles = [self.projector.register_forward_hook(keep_initial)]
        self._handles += [layer.register_forward_hook(keep_layer(i)) for i, layer in enumerate(self.layers)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    @property
    def states(self) -> list[torch.Tensor]:
        """[initial, layer 1, ..., layer L], each [image tokens of the batch, d]."""
        if self.initial is None or any(o is None for o in self.outputs):
            raise RuntimeError(
                "the generation's first forward pass did not run the projector and every layer"
            )
        if len(self.initial) != len(self.outputs[0]):
            raise RuntimeError(
                f"{len(self.initial)} projector outputs for {len(self.outputs[0])} image positions"
            )
        return [self.initial, *self.outputs]  # type: ignore[list-item]


def match(hidden: torch.Tensor, unit_vocab: torch.Tensor, lm_head, norm) -> dict[str, torch.Tensor]:
    """Matched token ids [P] of hidden states [P, d] for both readings."""
    unit = torch.nn.functional.normalize(hidden, dim=-1)
    cosine = (unit @ unit_vocab.T).argmax(-1)
    lens = lm_head(norm(hidden.to(lm_head.weight.dtype))).float().argmax(-1)
    return {"cosine": cosine, "logit_lens": lens}


def normalise(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def token_f1(a: str, b: str) -> float:
    """Bag-of-words F1 between two texts (SQuAD's answer overlap); 1 for two empty texts."""
    x, y = normalise(a).split(), normalise(b).split()
    if not x or not y:
        return float(x == y)
    common = sum((Counter(x) & Counter(y)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(x), common / len(y)
    return 2 * precision * recall / (precision + recall)


@dataclass
class Collected:
    """Per image: matched ids per reading ([layers + 1, patches]), the answers with the real visual embeddings,
    with the replaced ones and with a blank image, and the image as the model saw it."""

    ids: dict[str, list[torch.Tensor]] = field(default_factory=lambda: {r: [] for r in READINGS})
    answers: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    blank: list[str] = field(default_factory=list)
    images: list = field(default_factory=list)


def _setting(item: Item) -> str:
    return json.dumps(item.gen_kwargs, sort_keys=True, default=str)


def run_model(llava, tasks: dict, items: list[Item], batch_size: int) -> Collected:
    """Every item's matches per layer (from the real generation's prompt pass) and its three answers (real,
    replaced embeddings, blank image), in batches of one generation setting (as the evaluation model batches),
    through the evaluation model's own prompt and encoding."""
    from basic.eval.plugin import cut_at_stops

    model, tokenizer = llava.model, llava.tokenizer
    tokenizer.padding_side = "left"  # generation follows the prompt directly, as in evaluation
    # The evaluation model reads a document's images as lmms-eval hands them over: task_dict + doc_to_visual.
    llava.task_dict = {name: {"docs": test_docs(task)} for name, task in tasks.items()}
    embeddings = model.get_input_embeddings()
    unit_vocab = torch.nn.functional.normalize(embeddings.weight.detach().float(), dim=-1)
    lm_head, norm = model.get_output_embeddings(), model.model.language_model.norm
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(_setting(item), []).append(i)
    results: dict[int, tuple[dict[str, torch.Tensor], str, str, Any]] = {}
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            batch = indices[start : start + batch_size]
            images, prompts = [], []
            for i in batch:
                visuals = llava._visuals(
                    tasks[items[i].task].doc_to_visual, items[i].task, "docs", items[i].doc_id
                )
                images += visuals
                prompts.append(llava._prompt(items[i].context, len(visuals)))
            inputs = llava._encode(prompts, images)
            mask = inputs["input_ids"] == model.config.image_token_id
            kwargs, until = llava._generate_kwargs(dict(items[batch[0]].gen_kwargs), items[batch[0]].task)
            with torch.inference_mode():
                # The hidden states are those of the evaluation's own pass over the prompt: the generation's first.
                with PrefillOutputs(model, mask) as prefill:
                    real = model.generate(**inputs, **kwargs)[:, inputs["input_ids"].shape[1] :]
                matched = [match(h, unit_vocab, lm_head, norm) for h in prefill.states]
                replaced_embeds = embeddings(inputs["input_ids"])  # as the model embeds them (Gemma: scaled)
                replaced_embeds[mask] = embeddings(matched[0]["cosine"]).to(replaced_embeds.dtype)
                replaced = model.generate(
                    inputs_embeds=replaced_embeds, attention_mask=inputs["attention_mask"], **kwargs
                )
                # The control: a blank image of the processor's mean colour (what the answer owes to no image).
                blank_inputs = llava._encode(
                    prompts, [Image.new("RGB", im.size, llava.pad_colour) for im in images]
                )
                blank = model.generate(**blank_inputs, **kwargs)[:, blank_inputs["input_ids"].shape[1] :]
            texts = [
                [
                    cut_at_stops(t, until).strip()
                    for t in tokenizer.batch_decode(ids, skip_special_tokens=True)
                ]
                for ids in (real, replaced, blank)
            ]
            for r, i in enumerate(batch):
                ids = {
                    reading: torch.stack([mt[reading].view(len(batch), -1)[r] for mt in matched])
                    for reading in READINGS
                }
                results[i] = (ids, texts[0][r], texts[1][r], texts[2][r], images[r])
    out = Collected()
    for i in range(len(items)):
        ids, answer, replaced_answer, blank_answer, image = results[i]
        for reading in READINGS:
            out.ids[reading].append(ids[reading])
        out.answers.append(answer)
        out.replaced.append(replaced_answer)
        out.blank.append(blank_answer)
        out.images.append(image)
    return out


# ---- statistics -----------------------------------------------------------------------------------------


def layer_stats(
    ids: torch.Tensor,
    meaningful: torch.Tensor,
    eos: torch.Tensor,
    words: list[str | None],
    grounding: list[list[tuple[str, frozenset[str]] | None]] | None,
    tokenizer,
) -> dict:
    """Fractions over all patches of all images for one layer and reading; ids [images, patches]."""
    flat = ids.flatten()
    stats: dict[str, Any] = {
        "meaningful_fraction": round(float(meaningful[flat].float().mean()), 6),
        "eos_fraction": round(float(eos[flat].float().mean()), 6),
    }
    if grounding is not None:
        hits = {"object": [0, 0], "background": [0, 0]}
        for image_ids, patches in zip(ids.tolist(), grounding):
            for token, patch in zip(image_ids, patches):
                if patch is not None:
                    kind, allowed = patch
                    hits[kind][0] += words[token] in allowed
                    hits[kind][1] += 1
        total = hits["object"][1] + hits["background"][1]
        stats["grounded_fraction"] = (
            round((hits["object"][0] + hits["background"][0]) / total, 6) if total else None
        )
        for kind, (good, count) in hits.items():
            stats[f"grounded_{kind}_fraction"] = round(good / count, 6) if count else None
    counts = Counter(flat.tolist()).most_common(TOP_TOKENS)
    stats["top_tokens"] = [[token_text(tokenizer, t), round(c / len(flat), 6)] for t, c in counts]
    return stats


def dumps(result: dict) -> str:
    """The JSON, indented, but each example on one line: its image and token grids would take a line per token."""
    parts = []
    for key, value in result.items():
        if key == "examples":
            inner = ",\n  ".join(json.dumps(e, ensure_ascii=False) for e in value)
            text = f"[\n  {inner}\n ]" if value else "[]"
        else:
            text = json.dumps(value, indent=1, ensure_ascii=False).replace("\n", "\n ")
        parts.append(f" {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def analyse(args: argparse.Namespace) -> dict:
    """Run the analysis described by `args`; returns the JSON record (also written to `args.out`)."""
    from basic.eval.plugin import BasicLlava
    from basic.mini.scenes import patch_labels

    defaults = DEFAULTS[args.profile]
    n_images = args.images or defaults["images"]
    batch_size = args.batch_size or defaults["batch_size"]
    names = [t.strip() for t in (args.tasks or defaults["tasks"]).split(",") if t.strip()]
    if args.threads or args.profile == "mini":
        torch.set_num_threads(args.threads or 1)  # tiny models: one thread, as basic evaluate
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="basic-analyze-") as work:
        tasks = load_tasks(names, args.data, args.profile, Path(work))
    items = select_items(tasks, n_images)
    scenes = load_scenes(args.data) if args.profile == "mini" else None
    llava = BasicLlava(
        pretrained=str(args.checkpoint),
        device=args.device,
        batch_size=batch_size,
        dtype=args.dtype or ("float32" if args.profile == "mini" else "auto"),
    )
    model, tokenizer = llava.model, llava.tokenizer
    vocab_size = model.get_input_embeddings().weight.shape[0]
    words = token_words(tokenizer, vocab_size)
    meaningful = meaningful_ids(words, stop_words())
    eos = torch.zeros(vocab_size, dtype=torch.bool)
    eos[[i for i in llava.eos_ids if i < vocab_size]] = True

    collected = run_model(llava, tasks, items, batch_size)
    m = collected.ids["cosine"][0].shape[1]
    grid = round(m**0.5)
    grounding = None
    if scenes is not None:
        if grid * grid != m:
            raise AnalysisError(f"{args.checkpoint}: {m} image tokens are not a square grid of patches")
        grounding = []
        for item, image in zip(items, collected.images):
            if item.key not in scenes:
                raise AnalysisError(
                    f"{args.data}/benchmarks/scenes.jsonl: no scene for {item.task} document "
                    f"{item.doc_id} (pixel key {item.key[:12]}...)"
                )
            if image.width != image.height:  # the patch grid covers the padded square: the scene must fill it
                raise AnalysisError(
                    f"{item.task} document {item.doc_id}: a {image.width}x{image.height} image; "
                    "the patch labels assume square scenes"
                )
            item.labels = patch_labels(scenes[item.key], grid)
            grounding.append(patch_words(scenes[item.key], item.labels))
    n_layers = len(collected.ids["cosine"][0]) - 1
    layers = []
    for layer in range(n_layers + 1):
        record: dict[str, Any] = {"layer": layer, "name": "initial" if layer == 0 else f"layer {layer}"}
        for reading in READINGS:
            ids = torch.stack([per_image[layer] for per_image in collected.ids[reading]])
            record[reading] = layer_stats(ids, meaningful, eos, words, grounding, tokenizer)
        layers.append(record)

    def agreement(others: list[str], idx: list[int]) -> dict[str, float]:
        same = sum(normalise(collected.answers[i]) == normalise(others[i]) for i in idx)
        return {
            "exact_match": round(same / len(idx), 6),
            "token_f1": round(sum(token_f1(collected.answers[i], others[i]) for i in idx) / len(idx), 6),
        }

    replacement = []
    for name in ["all", *names]:
        idx = [i for i, item in enumerate(items) if name in ("all", item.task)]
        if idx:
            replacement.append(
                {
                    "task": name,
                    "questions": len(idx),
                    **agreement(collected.replaced, idx),
                    **{f"blank_{k}": v for k, v in agreement(collected.blank, idx).items()},
                }
            )
    cos = [layer["cosine"] for layer in layers]
    peak = max(range(len(cos)), key=lambda i: (cos[i]["meaningful_fraction"], -i))
    summary = {
        "initial_meaningful_fraction": cos[0]["meaningful_fraction"],
        "initial_meaningful_per_576": round(cos[0]["meaningful_fraction"] * PAPER_PATCHES, 2),
        "initial_eos_fraction": cos[0]["eos_fraction"],
        "peak_meaningful_fraction": cos[peak]["meaningful_fraction"],
        "peak_meaningful_layer": peak,
        "last_layer_eos_fraction": cos[-1]["eos_fraction"],
        "replacement_exact_match": replacement[0]["exact_match"],
        "replacement_token_f1": replacement[0]["token_f1"],
        "blank_exact_match": replacement[0]["blank_exact_match"],
        "blank_token_f1": replacement[0]["blank_token_f1"],
    }
    if grounding is not None:
        summary["initial_grounded_fraction"] = cos[0]["grounded_fraction"]
        summary["peak_grounded_fraction"] = max(c["grounded_fraction"] for c in cos)
    example_records = []
    for i, item in enumerate(items[: args.examples]):
        example_records.append(
            {
                "task": item.task,
                "doc_id": item.doc_id,
                "question": item.context,
                "target": item.target,
                "answer": collected.answers[i],
                "replaced_answer": collected.replaced[i],
                "blank_answer": collected.blank[i],
                "grid": grid,
                "image_png": _png(collected.images[i]),
                "labels": item.labels.flatten().tolist() if item.labels is not None else None,
                "matches": {
                    reading: [
                        [token_text(tokenizer, t) for t in layer.tolist()]
                        for layer in collected.ids[reading][i]
                    ]
                    for reading in READINGS
                },
            }
        )
    result = {
        "summary": summary,
        "setup": {
            "checkpoint": str(args.checkpoint),
            "profile": args.profile,
            "tasks": ",".join(names),
            "images": len(items),
            "patches_per_image": m,
            "llm_layers": n_layers,
            "vocabulary": vocab_size,
            "meaningful_tokens": int(meaningful.sum()),
            "eos_tokens": ",".join(token_text(tokenizer, i) for i in llava.eos_ids),
        },
        "layers": layers,
        "replacement": replacement,
        "examples": example_records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(dumps(result), encoding="utf-8")
    tmp.replace(args.out)
    print(
        f"basic analyze: {len(items)} images, {n_layers} layers in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="basic analyze", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="HF LLaVA checkpoint directory (stage 2)")
    p.add_argument("--out", required=True, type=Path, help="JSON to write (results/analysis/<run>.json)")
    p.add_argument("--data", type=Path, default=Path("data/mini"), help="the mini world (mini profile)")
    p.add_argument("--profile", default="mini", choices=sorted(DEFAULTS))
    p.add_argument("--images", type=int, help="held-out images (default: mini 300, full 30)")
    p.add_argument(
        "--tasks",
        help="comma-separated lmms-eval tasks whose documents are used (default: mini "
        f"{DEFAULTS['mini']['tasks']}; full {DEFAULTS['full']['tasks']})",
    )
    p.add_argument(
        "--examples", type=int, default=4, help="images kept whole (every patch's matches) for the notebook"
    )
    p.add_argument("--batch_size", type=int, help="images per batch (default: mini 64, full 8)")
    p.add_argument("--device", help="model device (default: cuda if available, else cpu)")
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="default: float32 (mini), the checkpoint's own (full)",
    )
    p.add_argument("--threads", type=int, help="CPU threads (default: 1 for the mini profile)")
    args = p.parse_args(argv)
    if args.images is not None and args.images < 1:
        p.error("--images must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = analyse(args)
    except AnalysisError as e:
        print(f"basic analyze: error: {e}", file=sys.stderr)
        return 1
    for key, value in result["summary"].items():
        print(f"{key:<30} {value}")
    print(f"basic analyze: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
