"""The five mini LLMs: real transformers architectures, pretrained here on scenes described in words.

Each stands in for one of the paper's LLMs with that LLM's architecture class, special tokens and chat
template (vicuna-7b / vicuna-13b: Llama, vicuna-13b deeper and wider; gemma-2b: Gemma, tied and
sqrt(d)-scaled embeddings, multi-query attention; phi3-3.8b: Phi-3; mistral-7b: Mistral, grouped-query
attention). They are pretrained on `text_docs` (a scene in words, then question-answer turns)
rendered in the family's chat format.

Training is built to learn much in little CPU time: the loss (and the LM head) only at the tokens a
model generates (answers and end of turn, supervised as the LLaVA stages supervise them), right-padded
length-grouped batches with no attention mask (under causal attention real tokens never see the padding
after them), bf16 autocast, a short warmup and cosine decay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerFast

from basic.data.labels import render, supervised_mask
from basic.data.templates import get_template
from basic.families import FAMILIES
from basic.mini.optim import EAGER, adamw_warmup_cosine


@dataclass(frozen=True)
class LLMSpec:
    family: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int

    def __post_init__(self):
        if self.layers % 2:
            raise ValueError(
                f"{self}: the number of layers must be even (BASIC supervises with half of them)"
            )


# Shapes keep each real model's proportions: MLP ratio, attention grouping, vicuna-13b > vicuna-7b. The
# Vicunas carry the study's BASIC ablations, so they keep four and six layers: k = half the layers must be
# at least 2 for the layer-weight schedules (Table 4) to differ. The others have two: in this budget four
# layers learned no more (text-QA accuracy about 0.4-0.55 either way) at twice the CPU time.
LLM_SPECS: dict[str, LLMSpec] = {
    "vicuna-7b": LLMSpec("llama", layers=4, hidden=128, heads=4, kv_heads=4, intermediate=344),
    "vicuna-13b": LLMSpec("llama", layers=6, hidden=160, heads=5, kv_heads=5, intermediate=432),
    "gemma-2b": LLMSpec("gemma", layers=2, hidden=128, heads=4, kv_heads=1, intermediate=512),
    "phi3-3.8b": LLMSpec("phi3", layers=2, hidden=128, heads=4, kv_heads=4, intermediate=344),
    "mistral-7b": LLMSpec("mistral", layers=2, hidden=128, heads=4, kv_heads=2, intermediate=448),
}


def build_llm(spec: LLMSpec, tokenizer: PreTrainedTokenizerFast, seed: int) -> PreTrainedModel:
    """A freshly initialised causal LM of `spec`'s family and shape for `tokenizer`'s vocabulary."""
    config_cls, model_cls, _, _ = FAMILIES[spec.family]
    kwargs = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "max_position_embeddings": tokenizer.model_max_length,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": spec.family == "gemma",
    }
    if spec.family == "gemma":
        kwargs["head_dim"] = spec.hidden // spec.heads
    if spec.family == "mistral":
        kwargs["sliding_window"] = None  # Mistral-7B-Instruct-v0.2 (the template's version) has none
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs))
    model.set_attn_implementation(EAGER)
    return model


def generation_config(tokenizer: PreTrainedTokenizerFast, family: str) -> GenerationConfig:
    """Greedy decoding that stops at eos or at the template's end-of-turn token."""
    _, _, template, _ = FAMILIES[family]
    eot = tokenizer.convert_tokens_to_ids(get_template(template).end_of_turn_for(tokenizer))
    eos = sorted({tokenizer.eos_token_id, eot})
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0],
        do_sample=False,
    )


@dataclass
class Encoded:
    """Token ids of one conversation and the positions of its supervised tokens (answers + end of turn)."""

    ids: list[int]
    targets: list[int]
    kinds: list[str]  # question kind of each answer (evaluation breaks accuracy down by it)
    styles: list[str]  # prompt style of each answer's question (short, mc, vizwiz), likewise
    lang: str
    objects: int = 0  # objects in the scene (0: too dark or blurry to tell)


def conversation(doc: dict) -> list[dict]:
    """`doc` as LLaVA conversation turns: the description opens the first question."""
    out = []
    for i, turn in enumerate(doc["turns"]):
        user = f"{doc['description']}\n{turn['prompt']}" if i == 0 else turn["prompt"]
        out += [{"from": "human", "value": user}, {"from": "gpt", "value": turn["answer"]}]
    return out


def encode(docs: list[dict], tokenizer: PreTrainedTokenizerFast, family: str) -> list[Encoded]:
    """Render `docs` in `family`'s chat format and mark the tokens to generate (answers with end of turn) as
    targets, exactly as the LLaVA stages supervise them (`basic.data.labels`)."""
    template = get_template(FAMILIES[family][2])
    texts, spans = zip(*(render(template, tokenizer, conversation(doc), has_image=False) for doc in docs))
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for doc, ids, offsets, doc_spans in zip(docs, enc["input_ids"], enc["offset_mapping"], spans):
        targets = [t for t, keep in enumerate(supervised_mask(offsets, doc_spans)) if keep and t > 0]
        out.append(
            Encoded(
                ids,
                targets,
                [t["kind"] for t in doc["turns"]],
                [t["style"] for t in doc["turns"]],
                doc["lang"],
                doc.get("objects", 0),
            )
        )
    return out


def length_grouped_batches(
    items: list[Encoded], batch_size: int, rng: np.random.Generator, group: int = 32
) -> list[list[int]]:
    """Shuffled batches of similar length: sort each window of `group` batches by length, then shuffle."""
    order = rng.permutation(len(items))
    window = batch_size * group
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: len(items[i].ids))
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    return [batches[int(i)] for i in rng.permutation(len(batches))]


def collate(items: list[Encoded], pad_id: int):
    """Right-padded ids plus the (row, position) of every prediction and its target id."""
    width = max(len(it.ids) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    rows, cols, targets = [], [], []
    for r, it in enumerate(items):
        ids[r, : len(it.ids)] = torch.tensor(it.ids)
        rows += [r] * len(it.targets)
        cols += [t - 1 for t in it.targets]  # position t is predicted from position t-1
        targets += [it.ids[t] for t in it.targets]
    return ids, torch.tensor(rows), torch.tensor(cols), torch.tensor(targets)


def train_llm(
    model: PreTrainedModel,
    items: list[Encoded],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    pad_id: int,
    warmup: float = 0.06,
    desc: str = "llm",
    position: int = 0,
    aux_loss: Callable | None = None,
) -> list[float]:
    """Train on the answer tokens of `items` for `steps` AdamW steps; returns the answer loss per step.
    `aux_loss(model, batch_items, output)`, if given, is added to it, with the base model's output carrying
    hidden states and attentions (benchmarks/llm_binding.py's circuit terms)."""
    rng = np.random.default_rng(seed)
    opt, sched = adamw_warmup_cosine(model, lr, steps, warmup, weight_decay=0.01)
    model.train()
    losses: list[float] = []
    batches: list[list[int]] = []
    bar = tqdm(range(steps), desc=desc, position=position, leave=True, mininterval=2.0)
    for _ in bar:
        if not batches:
            batches = length_grouped_batches(items, batch_size, rng)
        batch = [items[i] for i in batches.pop()]
        ids, rows, cols, targets = collate(batch, pad_id)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.model(
                input_ids=ids,
                output_hidden_states=aux_loss is not None,
                output_attentions=aux_loss is not None,
            )
        logits = model.lm_head(out.last_hidden_state[rows, cols].float())
        loss = torch.nn.functional.cross_entropy(logits, targets)
        (loss + aux_loss(model, batch, out) if aux_loss else loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    return losses


def spec_dict(name: str) -> dict:
    return {"name": name, **asdict(LLM_SPECS[name])}
