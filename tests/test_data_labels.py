"""Label masks per template: exactly what a model generates (answer lead, answer, end of turn) is supervised."""

from __future__ import annotations

import pytest

from basic.data.labels import IGNORE_INDEX, SkipSample, answer_lead, encode, render
from basic.data.templates import IMAGE_TOKEN, VICUNA_SYSTEM, get_template
from basic.model import load_tokenizer

N_IMAGE_TOKENS = 5
ROUNDS = [
    {"from": "human", "value": "what colour is the shape ?\n<image>"},
    {"from": "gpt", "value": "red"},
    {"from": "human", "value": "how many objects are there ?"},
    {"from": "gpt", "value": "two large objects"},
]
CAPTION = [
    {"from": "human", "value": "<image>\ndescribe the image ."},
    {"from": "gpt", "value": "a red circle"},
]
# template -> tokenizer family whose special tokens it uses
CASES = {"plain": "llama", "v1": "llama", "gemma": "gemma", "phi3": "phi3", "mistral": "mistral"}


@pytest.fixture(scope="module")
def tokenizers(backbones):
    return {family: load_tokenizer(backbones[family], 2048) for family in set(CASES.values())}


def supervised_runs(encoded, tokenizer) -> list[str]:
    """The decoded text of each maximal run of supervised tokens."""
    runs, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def encode_with(template_name, tokenizer, conversations, has_image=True, max_length=2048):
    return encode(
        conversations,
        get_template(template_name),
        tokenizer,
        has_image=has_image,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=N_IMAGE_TOKENS,
        max_length=max_length,
    )


@pytest.mark.parametrize("template_name", sorted(CASES))
def test_exactly_the_answers_and_end_of_turn_are_supervised(template_name, tokenizers):
    tokenizer = tokenizers[CASES[template_name]]
    template = get_template(template_name)
    conversations = CAPTION if template_name == "plain" else ROUNDS
    encoded = encode_with(template_name, tokenizer, conversations)
    end = template.end_of_turn_for(tokenizer)
    lead = answer_lead(template, tokenizer)
    assert lead == (
        " " if template_name == "v1" else ""
    )  # v1: "ASSISTANT:" prompts, "ASSISTANT: red" answers
    answers = [lead + turn["value"] + end for turn in conversations if turn["from"] == "gpt"]
    assert supervised_runs(encoded, tokenizer) == answers
    image_token = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    image_positions = [i for i, t in enumerate(encoded.input_ids) if t == image_token]
    assert len(image_positions) == N_IMAGE_TOKENS
    assert image_positions == list(range(image_positions[0], image_positions[0] + N_IMAGE_TOKENS))
    assert all(encoded.labels[i] == IGNORE_INDEX for i in image_positions)


def test_plain_and_v1_render_llavas_exact_prompts(tokenizers):
    tokenizer = tokenizers["llama"]
    text, _ = render(get_template("plain"), tokenizer, CAPTION, has_image=True)
    assert text == "<s><image>a red circle\n"  # preprocess_plain: the human turn becomes the image alone
    text, spans = render(get_template("v1"), tokenizer, ROUNDS, has_image=True)
    assert text == (
        f"<s>{VICUNA_SYSTEM} USER: <image>\nwhat colour is the shape ? ASSISTANT: red</s>"
        "USER: how many objects are there ? ASSISTANT: two large objects</s>"
    )
    assert [text[a:b] for a, b in spans] == [" red</s>", " two large objects</s>"]


@pytest.mark.parametrize("template_name", sorted(set(CASES) - {"plain"}))
@pytest.mark.parametrize("answer", ["B", "red", "紫色", "unanswerable"])
def test_supervision_starts_where_the_generation_prompt_ends(template_name, answer, tokenizers):
    """Everything a model must generate after the prompt is a target: with v1, a byte-level tokenizer
    writes "ASSISTANT: B" as ":", "Ġ", "B", and an unsupervised "Ġ" would tell the model, as input, that
    the answer is not "ĠA" (the mini LLMs' multiple-choice accuracy was inflated so)."""
    tokenizer = tokenizers[CASES[template_name]]
    template = get_template(template_name)
    question = [{"from": "human", "value": "which option ?"}]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "which option ?"}],
        chat_template=template.jinja,
        add_generation_prompt=True,
        tokenize=False,
    )
    text, spans = render(template, tokenizer, question + [{"from": "gpt", "value": answer}], has_image=False)
    assert text.startswith(prompt) and spans[0][0] == len(prompt)
    encoded = encode_with(
        template_name, tokenizer, question + [{"from": "gpt", "value": answer}], has_image=False
    )
    prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    first = next(i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX)
    assert encoded.input_ids[:prompt_tokens] == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert first == prompt_tokens


def test_text_only_sample_has_no_image_tokens(tokenizers):
    tokenizer = tokenizers["llama"]
    conversation = [
        {"from": "human", "value": "how many objects are there ?"},
        {"from": "gpt", "value": "two"},
    ]
    encoded = encode_with("v1", tokenizer, conversation, has_image=False)
    assert tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) not in encoded.input_ids
    assert supervised_runs(encoded, tokenizer) == [" two</s>"]


def test_truncation_cuts_text_never_image_tokens(tokenizers):
    tokenizer = tokenizers["llama"]
    full = encode_with("v1", tokenizer, ROUNDS)
    supervised = [i for i, label in enumerate(full.labels) if label != IGNORE_INDEX]
    first_answer_end = next(i for i in supervised if i + 1 not in supervised)
    cut = encode_with("v1", tokenizer, ROUNDS, max_length=first_answer_end + 2)  # second answer cut away
    assert cut.input_ids == full.input_ids[: first_answer_end + 2]
    assert cut.labels == full.labels[: first_answer_end + 2]
    assert supervised_runs(cut, tokenizer) == [" red</s>"]

    image_token = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    image_end = max(i for i, t in enumerate(full.input_ids) if t == image_token) + 1
    with pytest.raises(SkipSample, match="image tokens"):
        encode_with("v1", tokenizer, ROUNDS, max_length=image_end - 1)
    with pytest.raises(SkipSample, match="all answers are truncated away"):
        encode_with("v1", tokenizer, ROUNDS, max_length=supervised[0])
