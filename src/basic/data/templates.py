"""Conversation templates as Jinja chat templates: one registry, used for training and saved with checkpoints.

Each template is the single source of truth for how a conversation becomes text: the trainer renders
training samples with it, the saved checkpoint carries it as its `chat_template`, and evaluation prompts
through it. `plain` and `v1` reproduce LLaVA-1.5's `conv_llava_plain` and `conv_vicuna_v1` exactly; the
family templates follow each model's published instruct format.

Messages are Hugging Face style: `{"role": "system"|"user"|"assistant", "content": str | list}`, where a
list holds `{"type": "image"}` and `{"type": "text", "text": ...}` items. An image item renders as the
`<image>` placeholder followed by a newline (LLaVA puts `<image>\\n` before the first question).

`end_of_turn` is the text a template appends after each assistant answer; it is supervised together
with the answer (LLaVA supervises `</s>`; `plain` supervises the caption's trailing newline).
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_TOKEN = "<image>"

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# Renders a message's content, string or list of typed items, into `text`.
_CONTENT = (
    "{%- macro render(content, image_text) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item['type'] == 'image' -%}{{ image_text }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)

_PLAIN = _CONTENT + (
    # LLaVA's preprocess_plain: the human turn becomes the image alone; text is "<image>" + caption + "\n".
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if message['content'] is string -%}"
    "{{ '<image>' * (message['content'].count('<image>')) }}"
    "{%- else -%}{%- for item in message['content'] if item['type'] == 'image' -%}<image>{%- endfor -%}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}{{ render(message['content'], '') }}{{ '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

_VICUNA_V1 = _CONTENT + (
    # conv_vicuna_v1 (SeparatorStyle.TWO, sep=" ", sep2="</s>"):
    # "{system} USER: {q} ASSISTANT: {a}</s>USER: {q} ASSISTANT:"
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{ render(messages[0]['content'], '<image>\\n') }}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{{ '" + VICUNA_SYSTEM.replace("'", "\\'") + "' }}{%- set loop_messages = messages -%}"
    "{%- endif -%}{{ ' ' }}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'user' -%}{{ 'USER: ' }}{{ render(message['content'], '<image>\\n') }}{{ ' ' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'ASSISTANT: ' }}{{ render(message['content'], '') }}"
    "{{ eos_token }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

_GEMMA = _CONTENT + (
    # gemma-it: a system message is prepended to the first user turn (Gemma has no system role).
    "{{ bos_token }}"
    "{%- set system = '' -%}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system = render(messages[0]['content'], '') + '\\n\\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ '<start_of_turn>user\\n' }}{%- if loop.first -%}{{ system }}{%- endif -%}"
    "{{ render(message['content'], '<image>\\n') }}{{ '<end_of_turn>\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '<start_of_turn>model\\n' }}{{ render(message['content'], '') }}{{ '<end_of_turn>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

_PHI3 = _CONTENT + (
    # Phi-3-mini-instruct: "<|user|>\n{q}<|end|>\n<|assistant|>\n{a}<|end|>\n"
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ '<|system|>\\n' }}{{ render(message['content'], '') }}{{ '<|end|>\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ '<|user|>\\n' }}{{ render(message['content'], '<image>\\n') }}"
    "{{ '<|end|>\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '<|assistant|>\\n' }}{{ render(message['content'], '') }}"
    "{{ '<|end|>\\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)

_MISTRAL = _CONTENT + (
    # Mistral-7B-Instruct-v0.2: "<s>[INST] {q} [/INST]{a}</s>[INST] {q} [/INST]"; a system message
    # is prepended to the first user turn.
    "{{ bos_token }}"
    "{%- set system = '' -%}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system = render(messages[0]['content'], '') + '\\n\\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ '[INST] ' }}{%- if loop.first -%}{{ system }}{%- endif -%}"
    "{{ render(message['content'], '<image>\\n') }}{{ ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ render(message['content'], '') }}{{ eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


@dataclass(frozen=True)
class ChatTemplate:
    """A conversation format: its Jinja source and the text that ends (and is supervised with) an answer.

    `end_of_turn` may reference the tokenizer's special tokens as `{eos_token}`; resolve it with
    `end_of_turn_for(tokenizer)`.
    """

    name: str
    jinja: str
    end_of_turn: str
    description: str

    def end_of_turn_for(self, tokenizer) -> str:
        return self.end_of_turn.format(eos_token=tokenizer.eos_token)


TEMPLATES: dict[str, ChatTemplate] = {
    t.name: t
    for t in (
        ChatTemplate("plain", _PLAIN, "\n", "LLaVA stage 1: '<image>' + caption + newline"),
        ChatTemplate("v1", _VICUNA_V1, "{eos_token}", "LLaVA-1.5 conv_vicuna_v1 (Vicuna and Llama LLMs)"),
        ChatTemplate("gemma", _GEMMA, "<end_of_turn>", "Gemma instruct turns"),
        ChatTemplate("phi3", _PHI3, "<|end|>", "Phi-3 instruct turns"),
        ChatTemplate("mistral", _MISTRAL, "{eos_token}", "Mistral instruct [INST] turns"),
    )
}
# LLaVA's own names for the same templates.
ALIASES = {"vicuna_v1": "v1", "llava_v1": "v1"}


def get_template(name: str) -> ChatTemplate:
    """The template registered under `name` (or a LLaVA alias of it); unknown names are an error."""
    key = ALIASES.get(name, name)
    if key not in TEMPLATES:
        known = ", ".join(sorted([*TEMPLATES, *ALIASES]))
        raise ValueError(f"unknown conversation template (--version) {name!r}; known: {known}")
    return TEMPLATES[key]
