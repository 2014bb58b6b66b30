"""BASIC as the trainer's objective: loss = LM loss + lambda_das * DAS + lambda_sds * SDS, from one forward pass.

`BasicObjective(args, model)` is built by the trainer when a BASIC weight is > 0 (never otherwise, so the
baseline does no extra work) and switches the LLM to the BASIC attention. Each call runs the training
forward pass with a `Capture`, which yields the supervision embeddings v_hat (layers 1..k, weighted) and
the patch weights a from that same pass; v is the projector's output as the model returns it
(`image_hidden_states`, which carries the projector's graph). Only the terms whose weight is > 0 are
computed, and each is logged unweighted (`das`, `sds`). The trainer (`basic.train`) computes the
LLaVA-1.5 loss itself when no objective is set, so the baseline is Trainer's own code path; an objective
returns an `ObjectiveOutput`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from basic.distributed import gathered
from basic.method import attention
from basic.method.capture import Capture, SilentImages, decoder_layers, default_layers
from basic.method.config import BasicArguments
from basic.method.losses import das_loss, layer_weights, sds_loss

logger = logging.getLogger(__name__)


@dataclass
class ObjectiveOutput:
    """What an objective returns to the trainer from one forward pass it ran itself."""

    outputs: Any
    """The model's forward outputs; `outputs.loss` is the LM loss as the model computed it."""
    extra_loss: torch.Tensor | None
    """Weighted sum of the extra terms for this micro-batch (a mean over its images), or None.
    The trainer scales it so that accumulation and data parallelism average it over the global batch."""
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    """Detached scalars to log (unweighted terms, e.g. `das`, `sds`), averaged by the trainer per window."""


class BasicObjective:
    def __init__(self, args: BasicArguments, model):
        if not args.enabled:
            raise ValueError("BasicObjective needs --basic_das_weight or --basic_sds_weight > 0")
        self.args, self.model = args, model
        self.k = default_layers(model) if args.basic_layers is None else args.basic_layers
        if self.k > len(decoder_layers(model)):
            raise ValueError(f"--basic_layers {self.k}: the LLM has {len(decoder_layers(model))} layers")
        self.layer_weights = layer_weights(self.k, args.basic_layer_weights)
        self.silent_images = SilentImages()
        base = attention.enable(model)
        logger.info(
            "BASIC: das %g, sds %g, k = %d of %d layers (%s), patch weights %s from %s queries, SDS vocabulary %s, "
            "target %s; attention %s -> %s",
            args.basic_das_weight,
            args.basic_sds_weight,
            self.k,
            len(decoder_layers(model)),
            args.basic_layer_weights,
            args.basic_patch_weights,
            args.basic_attention_queries,
            args.basic_vocab,
            "detached" if args.basic_detach_target else "with gradient",
            base,
            attention.text_implementation(model),
        )

    def vocabulary(self) -> tuple[torch.nn.Parameter, float]:
        """E of SDS and the scale the model applies to it (Gemma's sqrt(d) on its input embeddings)."""
        if self.args.basic_vocab == "lm_head":
            return self.model.get_output_embeddings().weight, 1.0
        embeddings = self.model.get_input_embeddings()
        scale = getattr(embeddings, "embed_scale", None)
        return embeddings.weight, 1.0 if scale is None else float(scale.to(embeddings.weight.dtype))

    def __call__(self, model: torch.nn.Module, inputs: dict[str, Any]) -> ObjectiveOutput:
        pixel_values = inputs.get("pixel_values")
        if pixel_values is None or len(pixel_values) == 0:
            return ObjectiveOutput(model(**inputs), None, {})
        args = self.args
        capture = Capture(
            self.model,
            inputs,
            self.k,
            layer_weights=self.layer_weights,
            detach_target=args.basic_detach_target,
            queries=args.basic_attention_queries,
        )
        with capture:
            outputs = model(**inputs, **capture.forward_kwargs)
        v_hat = capture.supervision()
        v = outputs.image_hidden_states.view(v_hat.shape)
        a = capture.patch_weights(args.basic_patch_weights)
        self.silent_images.add(capture.silent, capture.images)  # logged once the device has counted them
        terms: dict[str, torch.Tensor] = {}
        if args.basic_das_weight > 0:
            terms["das"] = das_loss(v, v_hat, a)
        if args.basic_sds_weight > 0:
            E, scale = self.vocabulary()
            if scale != 1.0:
                v, v_hat = v * scale, v_hat * scale
            with gathered([E]):
                terms["sds"] = sds_loss(v, v_hat, a, E)
        extra = sum(getattr(args, f"basic_{name}_weight") * term for name, term in terms.items())
        return ObjectiveOutput(outputs, extra, {name: term.detach() for name, term in terms.items()})
