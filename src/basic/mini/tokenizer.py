"""The embedded world's tokenizer: a byte-level BPE trained on the corpora, English and Chinese, in HF format.

One vocabulary serves every mini LLM (as each real family has one of its own); `family_tokenizer`
dresses it with a family's special tokens and chat template. Chinese characters are isolated before
BPE so each becomes (at least) one token, English words become whole tokens, and byte fallback
means any text still encodes. There is deliberately no `<image>` token: the training engine adds it,
as it must for real Vicuna.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from basic.data.templates import TEMPLATES
from basic.families import FAMILIES, SPECIAL_TOKENS

MODEL_MAX_LENGTH = 2048
# CJK ideographs and CJK / full-width punctuation: one pre-token each.
_CJK = Regex(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


def template_texts() -> list[str]:
    """A sample conversation rendered in every chat template, so the templates' own words (Vicuna's
    system prompt, role names) become whole tokens like the corpus words."""
    conversation = [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hello."}]
    env = ImmutableSandboxedEnvironment()
    return [
        env.from_string(t.jinja).render(
            messages=conversation, bos_token="", eos_token="", add_generation_prompt=True
        )
        for t in TEMPLATES.values()
    ]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> Tokenizer:
    """A byte-level BPE (every family's special tokens included) trained on `texts` and the chat
    templates' text; deterministic."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(_CJK, behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(itertools.chain(template_texts(), texts), trainer=trainer)
    return tok


def family_tokenizer(base: Tokenizer | PreTrainedTokenizerFast, family: str) -> PreTrainedTokenizerFast:
    """`base`'s vocabulary with `family`'s (llama | mistral | gemma | phi3) special tokens and chat template."""
    if family not in FAMILIES:
        raise ValueError(f"unknown LLM family {family!r}; known: {', '.join(FAMILIES)}")
    backend = base.backend_tokenizer if isinstance(base, PreTrainedTokenizerFast) else base
    _, _, template, tokens = FAMILIES[family]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(backend.to_str()),
        bos_token=tokens["bos"],
        eos_token=tokens["eos"],
        unk_token=tokens["unk"],
        pad_token=tokens["pad"],
        model_max_length=MODEL_MAX_LENGTH,
    )
    fast.chat_template = TEMPLATES[template].jinja
    return fast
