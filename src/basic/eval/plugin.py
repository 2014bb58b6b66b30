"""`basic_llava`: this project's lmms-eval model, registered through the `lmms_eval.models` entry point.

After installing the project, `python -m lmms_eval --model basic_llava --model_args pretrained=<dir>` works
with no other step: pyproject.toml declares `basic_llava = "basic.eval.plugin:MANIFEST"`, which lmms-eval
(>= 0.6, `ModelRegistryV2`) loads when it builds its model registry.

The model is any plain Hugging Face LLaVA checkpoint (docs/interfaces.md): LlavaForConditionalGeneration +
AutoProcessor. Prompts go through the checkpoint's own chat template (an image item, then the task's text),
images are padded to a square with the image processor's mean colour when the config says
`image_aspect_ratio: pad` (as in training), and decoding is greedy until an eos id of the generation config
(the end-of-turn token included), a task's `until` string (checked on the decoded text, so any tokenizer
works), or `max_new_tokens`. Batches are left-padded
(generation) or right-padded (log-likelihood), so in float32 batch size does not change answers (16-bit
rounding depends on the batch shape). Under
`accelerate launch --num_processes N` each process loads the model on its own device and lmms-eval shards
the documents by rank.

`blind=True` is the blind baseline (`basic evaluate --blind`): every image is replaced by a blank one of the
same size in the image processor's mean colour, so the prompt and the number of image tokens are unchanged
and only the visual content is gone; what a model still answers right then comes from the question alone.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence

import torch
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from basic.data.images import background_color, expand2square


def manifest():
    """The lmms-eval registration of `basic_llava` (a simple model: loglikelihood works)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="basic_llava", simple_class_path=f"{__name__}.BasicLlava")


# The entry-point payload. A callable, not a ModelManifest: building one imports lmms_eval.models, whose
# registry build loads this entry point, so a process that imported this module first would find it unset.
MANIFEST = manifest

# LLaVA's evaluation scripts (model_vqa*.py) default; tasks that set max_new_tokens override it.
DEFAULT_MAX_NEW_TOKENS = 128
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cut_at_stops(text: str, until: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string (lmms-eval's `until`)."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


class StopAtText(StoppingCriteria):
    """Stop a sequence once the text decoded from its new tokens contains a stop string (lmms-eval's `until`).

    Text-level, so it works with every tokenizer transformers loads: transformers' own stop-string criterion
    maps the vocabulary to strings through a byte-level decoder and fails on others (a word-level tokenizer
    raises "substring not found", which lmms-eval turns into an empty result). The answer is cut at the stop
    string after decoding as well (`cut_at_stops`)."""

    def __init__(self, tokenizer, until: Sequence[str], prompt_length: int) -> None:
        self.tokenizer, self.until, self.prompt_length = tokenizer, [s for s in until if s], prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor(
            [any(stop in text for stop in self.until) for text in texts], device=input_ids.device
        )


class BasicLlava(lmms):
    """lmms-eval "simple" model over a Hugging Face LLaVA checkpoint (generate_until and loglikelihood)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        batch_size: int | str = 1,
        dtype: str = "auto",
        max_batch_size: int | None = None,
        blind: bool | str = False,
    ) -> None:
        """`max_batch_size` is accepted because lmms-eval always passes it; it only serves `auto` batch sizes,
        which this model refuses (a fixed batch keeps runs reproducible). `blind`: blank images (module docstring)."""
        super().__init__()
        from accelerate import PartialState
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        state = PartialState()
        if state.num_processes > 1 or device is None:
            self.device = state.device  # cuda:<local rank> under accelerate, else the best local device
        else:
            self.device = torch.device(device)
        self._rank, self._world_size = state.process_index, state.num_processes
        if str(batch_size).startswith("auto"):
            raise ValueError(f"basic_llava needs an integer --batch_size, not {batch_size!r}")
        self.batch_size = int(batch_size)
        if dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"basic_llava: dtype={dtype!r}; known: auto, {', '.join(DTYPES)}")
        # auto: the checkpoint's own dtype on an accelerator, float32 on CPU (bf16 matmuls are slow there).
        torch_dtype = DTYPES.get(dtype, "auto" if self.device.type != "cpu" else torch.float32)

        self.model = LlavaForConditionalGeneration.from_pretrained(pretrained, dtype=torch_dtype)
        self.model.to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(pretrained)
        self.tokenizer = self.processor.tokenizer
        if not getattr(self.processor, "chat_template", None):
            raise ValueError(f"{pretrained}: the processor has no chat_template; basic_llava prompts with it")
        self.image_aspect_ratio = getattr(self.model.config, "image_aspect_ratio", "square")
        if self.image_aspect_ratio not in ("pad", "square"):
            raise ValueError(
                f"{pretrained}/config.json: image_aspect_ratio={self.image_aspect_ratio!r}; "
                "known: pad, square"
            )
        self.pad_colour = background_color(self.processor.image_processor)
        if str(blind).lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"basic_llava: blind={blind!r}; expected True or False")
        self.blind = str(blind).lower() in ("true", "1")
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [self.tokenizer.eos_token_id])
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        )
        self._warned: set[str] = set()

    # ---- prompts and inputs -------------------------------------------------------------------------

    def _visuals(self, doc_to_visual: Callable, task: str, split: str, doc_id: int) -> list[Image.Image]:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
        flat = [v for item in (visuals or []) for v in (item if isinstance(item, list) else [item])]
        for v in flat:
            if not isinstance(v, Image.Image):
                raise TypeError(
                    f"basic_llava takes images; task {task} doc {doc_id} gave a {type(v).__name__}"
                )
        images = [v.convert("RGB") for v in flat]
        if self.blind:
            images = [Image.new("RGB", im.size, self.pad_colour) for im in images]
        if self.image_aspect_ratio == "pad":
            images = [expand2square(im, self.pad_colour) for im in images]  # as training did
        return images

    def _prompt(self, context: str, n_images: int) -> str:
        """The chat-templated user turn: image items then the text (unless the text places `<image>`)."""
        content: list[dict] = [] if "<image>" in context else [{"type": "image"}] * n_images
        content.append({"type": "text", "text": context})
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def _encode(self, prompts: list[str], images: list[Image.Image]) -> dict:
        # The template writes bos itself, so the tokenizer must not add special tokens again.
        inputs = self.processor(
            text=prompts, images=images or None, padding=True, add_special_tokens=False, return_tensors="pt"
        )
        return {
            k: v.to(self.device, self.model.dtype) if k == "pixel_values" else v.to(self.device)
            for k, v in inputs.items()
        }

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)

    def _generate_kwargs(self, gen_kwargs: dict, task: str) -> tuple[dict, list[str]]:
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        if gen_kwargs.get("do_sample") or int(gen_kwargs.get("num_beams") or 1) > 1:
            self._warn_once(
                task, f"basic_llava decodes greedily; ignoring sampling/beam settings of task {task}"
            )
        kwargs = {
            "do_sample": False,
            "num_beams": 1,
            "temperature": None,
            "top_p": None,
            "top_k": None,
            "max_new_tokens": int(gen_kwargs.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS),
            "eos_token_id": self.eos_ids,
            "pad_token_id": self.pad_id,
        }
        return kwargs, until

    # ---- lmms interface ---------------------------------------------------------------------------

    @torch.inference_mode()
    def generate_until(self, requests: list[Instance]) -> list[str]:
        self.tokenizer.padding_side = "left"  # new tokens follow every prompt directly
        # One generation setting per batch; longest prompts first so memory problems show up at once.
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
        answers: list[str | None] = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="basic_llava generate")
        for indices in groups.values():
            indices.sort(key=lambda i: -len(requests[i].args[0]))
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                prompts, images = [], []
                for i in batch:
                    context, _, doc_to_visual, doc_id, task, split = requests[i].args
                    visuals = self._visuals(doc_to_visual, task, split, doc_id)
                    prompts.append(self._prompt(context, len(visuals)))
                    images += visuals
                task = requests[batch[0]].args[4]
                kwargs, until = self._generate_kwargs(dict(requests[batch[0]].args[1]), task)
                inputs = self._encode(prompts, images)
                prompt_length = inputs["input_ids"].shape[1]
                if until:  # stop early; the text is cut at the stop string afterwards as well
                    kwargs["stopping_criteria"] = StoppingCriteriaList(
                        [StopAtText(self.tokenizer, until, prompt_length)]
                    )
                output = self.model.generate(**inputs, **kwargs)[:, prompt_length:]
                for i, text in zip(batch, self.tokenizer.batch_decode(output, skip_special_tokens=True)):
                    answers[i] = cut_at_stops(text, until).strip()
                progress.update(len(batch))
        progress.close()
        return answers  # type: ignore[return-value]

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """(negative log-likelihood of the continuation, whether greedy) per request, as lmms-eval 0.7.3 needs.

        Two conventions of lmms-eval 0.7.3, not of its docstring: multiple-choice scoring picks the choice
        with the *lowest* value (`np.argmin`, since its own models return losses), so this returns
        -log P(continuation | context); and its evaluator turns any output other than text or a
        GenerationResult into `str(output)`, so each pair is wrapped in a GenerationResult, which it unwraps
        untouched.
        """
        return [
            GenerationResult(text=(-logprob, greedy))  # type: ignore[arg-type]
            for logprob, greedy in self.loglikelihoods(requests)
        ]

    @torch.inference_mode()
    def loglikelihoods(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Sum of log-probabilities of each continuation after the templated context, and whether greedy."""
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i].args[0]))
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="basic_llava loglikelihood")
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            rows, pixels, spans = [], [], []
            for i in batch:
                context, target, doc_to_visual, doc_id, task, split = requests[i].args
                continuation = (
                    target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
                )
                visuals = self._visuals(doc_to_visual, task, split, doc_id)
                encoded = self._encode([self._prompt(context, len(visuals))], visuals)
                cont_ids = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
                if not cont_ids:
                    raise ValueError(f"task {task} doc {doc_id}: empty continuation {continuation!r}")
                context_ids = encoded["input_ids"][0].tolist()
                rows.append(context_ids + cont_ids)
                spans.append((len(context_ids), len(cont_ids)))
                if "pixel_values" in encoded:
                    pixels.append(encoded["pixel_values"])
            # Right padding: padded positions come after every scored token, so they cannot change it.
            width = max(map(len, rows))
            input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            for r, row in enumerate(rows):
                input_ids[r, : len(row)] = torch.tensor(row)
                attention[r, : len(row)] = 1
            inputs = {"input_ids": input_ids.to(self.device), "attention_mask": attention.to(self.device)}
            if pixels:
                inputs["pixel_values"] = torch.cat(pixels)
            logprobs = self.model(**inputs).logits.float().log_softmax(-1)
            for r, (i, (n_context, n_cont)) in enumerate(zip(batch, spans)):
                scored = logprobs[r, n_context - 1 : n_context - 1 + n_cont]
                target_ids = input_ids[r, n_context : n_context + n_cont].to(self.device)
                total = scored.gather(-1, target_ids[:, None]).sum().item()
                results[i] = (total, bool((scored.argmax(-1) == target_ids).all()))
            progress.update(len(batch))
        progress.close()
        return results  # type: ignore[return-value]

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(
            "basic_llava does not implement multi-round generation (no LLaVA-1.5 benchmark uses it)"
        )
