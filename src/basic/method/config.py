"""The BASIC method's command-line flags (`--basic_*`), parsed by the trainer beside LLaVA's own flags.

Defaults give the LLaVA-1.5 baseline (both loss weights 0): a LLaVA user's unchanged script trains
plain LLaVA-1.5. The paper's setting is `--basic_das_weight 1.0 --basic_sds_weight 0.01`.
Where the paper is silent, the choice is a flag whose default is the reading docs/method.md gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LAYER_WEIGHT_SCHEMES = ("increasing", "constant", "decreasing")
PATCH_WEIGHT_SCHEMES = ("attention", "uniform")
VOCAB_MATRICES = ("input_embeddings", "lm_head")
ATTENTION_QUERIES = ("text", "prompt", "response")


@dataclass
class BasicArguments:
    basic_das_weight: float = field(
        default=0.0, metadata={"help": "lambda_1, weight of directional alignment supervision (paper: 1.0)"}
    )
    basic_sds_weight: float = field(
        default=0.0, metadata={"help": "lambda_2, weight of semantic distribution supervision (paper: 0.01)"}
    )
    basic_layers: int | None = field(
        default=None,
        metadata={"help": "k, number of shallow LLM layers that supervise (default: half the layers)"},
    )
    basic_layer_weights: str = field(
        default="increasing", metadata={"help": "w_i over layers 1..k: " + " | ".join(LAYER_WEIGHT_SCHEMES)}
    )
    basic_patch_weights: str = field(
        default="attention", metadata={"help": "a_i over patches: " + " | ".join(PATCH_WEIGHT_SCHEMES)}
    )
    basic_vocab: str = field(
        default="input_embeddings",
        metadata={
            "help": "E of SDS: input embeddings as the model sees them (Gemma's sqrt(d) applied) or lm_head"
        },
    )
    basic_detach_target: bool = field(
        default=True,
        metadata={"help": "stop gradient through the supervision embeddings v_hat (teacher signal)"},
    )
    basic_attention_queries: str = field(
        default="text",
        metadata={
            "help": "text tokens whose attention weights the patches: text (every non-image, non-padding "
            "token after the image) | prompt (those not trained on: labels -100) | response (those "
            "trained on)"
        },
    )

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("--basic_layer_weights", self.basic_layer_weights, LAYER_WEIGHT_SCHEMES),
            ("--basic_patch_weights", self.basic_patch_weights, PATCH_WEIGHT_SCHEMES),
            ("--basic_vocab", self.basic_vocab, VOCAB_MATRICES),
            ("--basic_attention_queries", self.basic_attention_queries, ATTENTION_QUERIES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")
        if self.basic_das_weight < 0 or self.basic_sds_weight < 0:
            raise ValueError("--basic_das_weight and --basic_sds_weight must be >= 0")
        if self.basic_layers is not None and self.basic_layers < 1:
            raise ValueError(f"--basic_layers must be >= 1, got {self.basic_layers}")

    @property
    def enabled(self) -> bool:
        """Whether any BASIC term is on; when off, training does no extra work at all."""
        return self.basic_das_weight > 0 or self.basic_sds_weight > 0
