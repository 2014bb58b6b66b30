"""The LLM families the engine trains: each family's transformers classes, stage-2 chat template and
special tokens. The mini LLMs (basic.mini) and the test fixtures (basic.testing) build their models and
tokenizers from it, so both cover exactly the families a user can bring."""

from __future__ import annotations

from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
)

# family -> (config class, model class, chat template, special tokens: bos, eos, unk, pad)
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, "v1", dict(bos="<s>", eos="</s>", unk="<unk>", pad=None)),
    "mistral": (
        MistralConfig,
        MistralForCausalLM,
        "mistral",
        dict(bos="<s>", eos="</s>", unk="<unk>", pad=None),
    ),
    "gemma": (
        GemmaConfig,
        GemmaForCausalLM,
        "gemma",
        dict(bos="<bos>", eos="<eos>", unk="<unk>", pad="<pad>"),
    ),
    "phi3": (
        Phi3Config,
        Phi3ForCausalLM,
        "phi3",
        dict(bos="<s>", eos="<|endoftext|>", unk="<unk>", pad="<|endoftext|>"),
    ),
}
SPECIAL_TOKENS = [
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "<bos>",
    "<eos>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<|endoftext|>",
    "[INST]",
    "[/INST]",
]
