"""From a LLaVA conversation to `input_ids` and `labels`: render with the template, supervise answer spans.

The conversation is rendered once with the template's Jinja (`basic.data.templates`), with each assistant
answer wrapped in private-use sentinel characters. Removing the sentinels gives the exact text and the
character span of every answer; each span is extended by the template's end-of-turn text, which is
supervised with the answer (LLaVA supervises `</s>`), and back over the text the template writes between
its generation prompt and the answer (`answer_lead`: v1's space after "ASSISTANT:"). A model prompted for
generation has to produce that text itself, and where the tokenizer keeps it a token of its own (a
byte-level BPE writes " B" as "Ġ", "B"), leaving it unsupervised would show the model, as input, a token
that tells answers apart (after "Ġ" the letter is never "A", which is "ĠA"). The full text is then
tokenized once with `return_offsets_mapping`, and a token is supervised exactly when its characters
overlap an answer span.
Because text and labels come from the same tokenization, LLaVA's "tokenization mismatch" failure (whole
samples silently masked when per-round token counts disagree) cannot occur.

The single `<image>` token of an image sample is expanded to one placeholder per image patch, as
`LlavaProcessor` does; placeholders are never supervised. Over-long samples are cut from the end, never
through the image placeholders; a sample left without any supervised token is skipped (`SkipSample`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from basic.data.templates import IMAGE_TOKEN, ChatTemplate

IGNORE_INDEX = -100  # label of tokens not trained on (transformers' cross-entropy ignore_index)
ANSWER_OPEN, ANSWER_CLOSE = "\ue000", "\ue001"  # Unicode private-use characters: never in real text
ROLES = {"human": "user", "gpt": "assistant"}


class SkipSample(Exception):
    """A record that is valid but cannot be trained on (found when it is loaded): counted and logged."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


def to_messages(conversations: list[dict], has_image: bool) -> list[dict]:
    """LLaVA turns -> chat messages, with answers wrapped in sentinels.

    As LLaVA's `preprocess_multimodal`, the turn holding `<image>` becomes the image followed by its text
    with the placeholder removed and whitespace stripped; the template decides how the image renders.
    """
    messages = []
    for turn in conversations:
        value = turn["value"]
        role = ROLES[turn["from"]]
        if role == "assistant":
            content: str | list = ANSWER_OPEN + value + ANSWER_CLOSE
        elif has_image and IMAGE_TOKEN in value:
            content = [{"type": "image"}, {"type": "text", "text": value.replace(IMAGE_TOKEN, "").strip()}]
        else:
            content = value
        messages.append({"role": role, "content": content})
    return messages


@functools.lru_cache(maxsize=16)  # one per (template, tokenizer): render() asks for it on every sample
def answer_lead(template: ChatTemplate, tokenizer) -> str:
    """The text `template` writes after its generation prompt and before an answer ('' for most templates)."""
    user = [{"role": "user", "content": "?"}]
    prompt = tokenizer.apply_chat_template(
        user, chat_template=template.jinja, add_generation_prompt=True, tokenize=False
    )
    turn = tokenizer.apply_chat_template(
        user + [{"role": "assistant", "content": ANSWER_OPEN}], chat_template=template.jinja, tokenize=False
    )
    before = turn[: turn.index(ANSWER_OPEN)]
    if not before.startswith(prompt):
        raise ValueError(
            f"template {template.name!r}: its generation prompt {prompt[-30:]!r} is not how it "
            f"renders an answer's turn ({before[-30:]!r})"
        )
    return before[len(prompt) :]


def render(
    template: ChatTemplate, tokenizer, conversations: list[dict], has_image: bool
) -> tuple[str, list[tuple[int, int]]]:
    """The conversation's text under `template` and the character spans to supervise (lead + answer + end of turn)."""
    marked = tokenizer.apply_chat_template(
        to_messages(conversations, has_image), chat_template=template.jinja, tokenize=False
    )
    end_of_turn = template.end_of_turn_for(tokenizer)
    pieces, spans, length, start = [], [], 0, None
    cursor = 0
    for position, char in enumerate(marked):
        if char not in (ANSWER_OPEN, ANSWER_CLOSE):
            continue
        pieces.append(marked[cursor:position])
        length += position - cursor
        cursor = position + 1
        if char == ANSWER_OPEN:
            start = length
        else:
            spans.append((start, length))
    pieces.append(marked[cursor:])
    text = "".join(pieces)
    n_answers = sum(turn["from"] == "gpt" for turn in conversations)
    if len(spans) != n_answers:
        raise ValueError(f"template {template.name!r} rendered {len(spans)} of {n_answers} answers")
    lead = answer_lead(template, tokenizer)
    supervised = []
    for start, end in spans:
        if text[start - len(lead) : start] != lead:
            raise ValueError(
                f"template {template.name!r} does not put {lead!r} before an answer: "
                f"found {text[max(0, start - len(lead) - 10) : start]!r}"
            )
        if text[end : end + len(end_of_turn)] != end_of_turn:
            raise ValueError(
                f"template {template.name!r} does not end an answer with its end_of_turn {end_of_turn!r}: "
                f"found {text[end : end + len(end_of_turn) + 10]!r}"
            )
        supervised.append((start - len(lead), end + len(end_of_turn)))
    return text, supervised


def supervised_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[bool]:
    """Whether each token (by character offsets) overlaps one of the sorted, disjoint `spans`."""
    mask, k = [], 0
    for start, end in offsets:
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        mask.append(end > start and k < len(spans) and spans[k][0] < end)
    return mask


def encode(
    conversations: list[dict],
    template: ChatTemplate,
    tokenizer,
    *,
    has_image: bool,
    image_token_id: int,
    image_seq_length: int,
    max_length: int,
) -> Encoded:
    """Token ids and labels for one validated record (see the module docstring)."""
    text, spans = render(template, tokenizer, conversations, has_image)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    labels = [
        token if keep else IGNORE_INDEX
        for token, keep in zip(ids, supervised_mask(encoding["offset_mapping"], spans))
    ]
    image_positions = [i for i, token in enumerate(ids) if token == image_token_id]
    if len(image_positions) != int(has_image):
        raise ValueError(
            f"the rendered text holds {len(image_positions)} {IMAGE_TOKEN} tokens, expected {int(has_image)}"
        )
    image_end = 0
    if has_image:
        (p,) = image_positions
        ids[p : p + 1] = [image_token_id] * image_seq_length
        labels[p : p + 1] = [IGNORE_INDEX] * image_seq_length
        image_end = p + image_seq_length
    if len(ids) > max_length:
        if image_end > max_length:
            raise SkipSample(
                f"its {image_seq_length} image tokens end at position {image_end}, beyond model_max_length {max_length}"
            )
        total = len(ids)
        ids, labels = ids[:max_length], labels[:max_length]
        if all(label == IGNORE_INDEX for label in labels[1:]):
            raise SkipSample(
                f"all answers are truncated away ({total} tokens > model_max_length {max_length})"
            )
    return Encoded(ids, labels)
