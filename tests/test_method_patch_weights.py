"""Patch weights through the BASIC attention function against eager attention probabilities.

The reference is transformers' own eager attention with `output_attentions=True` (allowed here, in the
test only), reduced by a direct loop over images, layers, heads and text queries in float64. Every LLM
family is covered (GQA everywhere, Gemma's multi-head layout, Mistral's and Phi-3's 24-token sliding window,
which the 50-token sequences exceed), with left and right padding and a text-only row in the batch.
"""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from basic.method import attention, patch_weights
from basic.method.attention import image_attention
from basic.method.capture import locate
from basic.testing.backbones import tiny_llava

FAMILIES = ("llama", "mistral", "gemma", "phi3")
# Float32 models: eager attention takes its softmax in float32 anyway, and in float64 its additive mask turns
# left-padding rows into NaN that then reach the real tokens through the values.
EAGER_TOL = {"rtol": 1e-5, "atol": 1e-7}
IMAGE = "<image>"
PROMPTS = (
    f"{IMAGE}\nwhat colour is the shape ? answer the question using a single word or phrase .",
    "how many objects are there ? two three four",  # text only
    f"describe the image . {IMAGE}\nthe green triangle is small .",
)


def images(n: int) -> list[Image.Image]:
    colours = [(200, 10, 10), (10, 150, 30), (20, 20, 220), (240, 240, 0)]
    return [Image.new("RGB", (20 + 3 * i, 12 + 5 * i), colours[i % 4]) for i in range(n)]


def batch(processor, padding_side: str, prompts=PROMPTS):
    processor.tokenizer.padding_side = padding_side
    n_images = sum(p.count(IMAGE) for p in prompts)
    return processor(images=images(n_images), text=list(prompts), return_tensors="pt", padding=True)


def eager_reference(model, inputs, k: int, labels=None, queries: str = "text") -> torch.Tensor:
    """a[j, i] = mean over layers < k, heads, and the text tokens after image j of P(query -> token i)."""
    reference = copy.deepcopy(model)
    reference.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = reference(**inputs, output_attentions=True).attentions
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    image = ids == model.config.image_token_id
    m = model.config.image_seq_length
    weights = []
    for b in range(ids.shape[0]):
        positions = image[b].nonzero().squeeze(1).tolist()
        for start in range(0, len(positions), m):
            tokens = positions[start : start + m]
            text = [
                q
                for q in range(tokens[-1] + 1, ids.shape[1])
                if not image[b, q]
                and mask[b, q]
                and (queries == "text" or (labels[b, q] == -100) == (queries == "prompt"))
            ]
            a = torch.zeros(m, dtype=torch.float64)
            for layer in range(k):
                att = attentions[layer][b].double()  # [heads, S, S]
                a += att[:, text][:, :, tokens].sum((0, 1)) / (att.shape[0] * len(text))
            weights.append(a / k)
    return torch.stack(weights)


@pytest.fixture(params=["kernel", "rows"])
def path(request, monkeypatch):
    """`kernel`: SDPA's kernel called for its row logsumexp; `rows`: whole rows scored (flash attention's path)."""
    if request.param == "rows":
        monkeypatch.setattr(attention, "sdpa_with_log_norm", lambda *args, **kwargs: None)
    return request.param


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("family", FAMILIES)
def test_patch_weights_equal_eager_attention(family, padding_side, path):
    encoder = "clip" if family in ("llama", "gemma") else "siglip"
    model, processor = tiny_llava(family, encoder)
    inputs = batch(processor, padding_side)
    assert inputs["input_ids"].shape[1] > 24 + 16  # the sliding window bites after the image
    for k in (1, 3):
        expected = eager_reference(model, inputs, k)
        got = patch_weights(model, inputs, k=k)
        assert got.shape == (2, 16) and got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, **EAGER_TOL)
    # the model is left as it was
    assert model.config.text_config._attn_implementation == "sdpa"


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_one_unpadded_row(family, path):
    """No padding: SDPA gets no mask at all (Llama: causal only) or a sliding-window one (Mistral)."""
    model, processor = tiny_llava(family)
    inputs = batch(processor, "right", PROMPTS[:1])
    torch.testing.assert_close(
        patch_weights(model, inputs, k=2).double(), eager_reference(model, inputs, 2), **EAGER_TOL
    )


def test_default_k_is_half_the_layers_and_uniform_spreads_the_same_mass():
    model, processor = tiny_llava("llama", layers=6)
    inputs = batch(processor, "right")
    attention = patch_weights(model, inputs)
    torch.testing.assert_close(attention.double(), eager_reference(model, inputs, 3), **EAGER_TOL)
    uniform = patch_weights(model, inputs, scheme="uniform")
    torch.testing.assert_close(uniform.sum(1), attention.sum(1))
    assert torch.all(uniform == uniform[:, :1])


def test_several_images_in_a_row_count_only_the_text_after_each(path):
    model, processor = tiny_llava("mistral", "siglip")
    prompts = (f"{IMAGE} left . {IMAGE}\nwhich one is red ? the first", f"{IMAGE}\nwhat is it ?")
    inputs = batch(processor, "left", prompts)
    torch.testing.assert_close(
        patch_weights(model, inputs, k=2).double(), eager_reference(model, inputs, 2), **EAGER_TOL
    )


def test_prompt_and_response_queries_follow_the_labels():
    model, processor = tiny_llava("phi3", "siglip")
    inputs = batch(processor, "right")
    labels = torch.full_like(inputs["input_ids"], -100)
    for row, mask in enumerate(inputs["attention_mask"]):
        response = mask.nonzero().squeeze(1)[-6:]  # each row's last 6 tokens are its "response"
        labels[row, response] = inputs["input_ids"][row, response]
    for queries in ("prompt", "response"):
        got = patch_weights(model, {**inputs, "labels": labels}, k=2, queries=queries)
        torch.testing.assert_close(
            got.double(), eager_reference(model, inputs, 2, labels, queries), **EAGER_TOL
        )
    with pytest.raises(ValueError, match="need labels"):
        patch_weights(model, inputs, k=2, queries="prompt")


def test_bfloat16_model_is_close_to_eager():
    model, processor = tiny_llava("gemma", dtype=torch.bfloat16)
    inputs = batch(processor, "left")
    got = patch_weights(model, inputs, k=2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), eager_reference(model, inputs, 2), rtol=2e-2, atol=1e-4)


def test_eager_models_are_refused_with_a_clear_message():
    model, processor = tiny_llava("llama")
    model.set_attn_implementation("eager")
    with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
        patch_weights(model, batch(processor, "right"), k=2)


def test_mismatched_image_tokens_are_an_error():
    model, processor = tiny_llava("llama")
    inputs = batch(processor, "right")
    with pytest.raises(ValueError, match="image tokens in input_ids for 3 images"):
        patch_weights(model, {**inputs, "pixel_values": torch.cat([inputs["pixel_values"]] * 2)[:3]}, k=2)


@pytest.mark.parametrize("sliding_window", [None, 5])
def test_flash_style_padding_mask_matches_the_four_dimensional_mask(sliding_window):
    """Flash attention hands the function a [B, S] padding mask and the window; SDPA a 4-D boolean mask."""
    torch.manual_seed(0)
    B, heads, kv_heads, S, hd = 3, 4, 2, 12, 8
    query = torch.randn(B, heads, S, hd, dtype=torch.float64)
    key = torch.randn(B, kv_heads, S, hd, dtype=torch.float64)
    ids = torch.full((B, S), 7)
    ids[0, 1:4] = ids[1, 5:8] = ids[2, 2:5] = 9  # 3 images of 3 tokens
    padding = torch.ones(B, S, dtype=torch.long)
    padding[1, :2] = 0  # left padding
    padding[2, -3:] = 0  # right padding
    positions = torch.arange(S)
    four_d = (positions[None, :] <= positions[:, None])[None, None] & padding.bool()[:, None, None, :]
    if sliding_window is not None:
        four_d &= (positions[None, :] > positions[:, None] - sliding_window)[None, None]
    p = locate(ids, padding, None, image_token_id=9, images=3, m=3)
    kwargs = {"scaling": hd**-0.5, "sliding_window": sliding_window}
    flash = image_attention(query, key, padding, p, **kwargs)
    sdpa = image_attention(query, key, four_d, p, **kwargs, block_elements=1)  # one query per block
    torch.testing.assert_close(flash, sdpa, rtol=1e-12, atol=1e-14)
    additive = torch.zeros(four_d.shape, dtype=torch.float64).masked_fill(
        ~four_d, torch.finfo(torch.float64).min
    )
    torch.testing.assert_close(
        image_attention(query, key, additive, p, **kwargs), sdpa, rtol=1e-12, atol=1e-14
    )
    # given the rows' log-normalisers, only query x image-key scores are needed: same result, any mask form
    scores = (query @ key.repeat_interleave(2, 1).transpose(-1, -2)) * hd**-0.5
    log_norm = scores.masked_fill(~four_d, -torch.inf).logsumexp(-1)
    for mask in (padding, four_d, additive, four_d.expand(-1, heads, -1, -1)):
        for block_elements in (1, 2**25):
            torch.testing.assert_close(
                image_attention(
                    query, key, mask, p, **kwargs, log_norm=log_norm, block_elements=block_elements
                ),
                sdpa,
                rtol=1e-12,
                atol=1e-14,
            )
    # direct formula for one image token: row 1, token at position 6, queries after position 7
    probs = scores[1].masked_fill(~four_d[1], -torch.inf).softmax(-1)
    torch.testing.assert_close(sdpa[1, 1], probs[:, 8:, 6].sum(1).mean())


@pytest.mark.parametrize("masked", [False, True])
def test_the_kernel_returns_sdpas_output_and_the_row_log_normalisers(masked):
    torch.manual_seed(0)
    B, heads, kv_heads, S, hd = 2, 4, 2, 9, 8
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = heads // kv_heads, True
    query = torch.randn(B, heads, S, hd)
    key, value = torch.randn(B, kv_heads, S, hd), torch.randn(B, kv_heads, S, hd)
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    mask = causal[None, None].repeat(B, 1, 1, 1)
    mask[1, :, :, :3] = False  # left padding
    mask[1, :, :3, 0] = True
    output, log_norm = attention.sdpa_with_log_norm(
        module, query, key, value, mask if masked else None, scaling=0.3
    )
    k, v = key.repeat_interleave(2, 1), value.repeat_interleave(2, 1)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, k, v, attn_mask=mask if masked else None, is_causal=not masked, scale=0.3
    )
    torch.testing.assert_close(output, expected.transpose(1, 2))
    scores = (query @ k.transpose(-1, -2) * 0.3).masked_fill(~(mask if masked else causal), -torch.inf)
    torch.testing.assert_close(log_norm, scores.logsumexp(-1))


def test_a_refusing_kernel_falls_back_to_scoring_rows_with_a_warning(monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise RuntimeError("no kernel for these inputs")

    monkeypatch.setattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", refuse)
    model, processor = tiny_llava("mistral", "siglip")
    inputs = batch(processor, "left")
    got = patch_weights(model, inputs, k=2)
    assert "no kernel for these inputs" in caplog.text
    torch.testing.assert_close(got.double(), eager_reference(model, inputs, 2), **EAGER_TOL)


def test_scoring_at_7b_shapes_computes_only_the_text_query_by_image_key_block():
    """One supervised layer of LLaVA-1.5-7B (batch 8, 576 image tokens after a 35-token prefix, 2048 tokens,
    32 heads of 128), on the meta device: the products are the [queries after the image x image keys] block
    per head (with the kernel's log-normalisers), within 5 % (two log-normaliser columns, padded to 132)."""
    from torch.utils.flop_counter import FlopCounterMode

    B, heads, S, hd, m = 8, 32, 2048, 128, 576
    ids = torch.zeros(B, S, dtype=torch.long)
    ids[:, 35 : 35 + m] = 9
    p = locate(ids.to("meta"), torch.ones(B, S, dtype=torch.long, device="meta"), None, 9, images=B, m=m)
    query = torch.empty(B, heads, S, hd, dtype=torch.bfloat16, device="meta")
    log_norm = torch.empty(B, heads, S, device="meta")
    with FlopCounterMode(display=False) as counter:
        totals = image_attention(query, query, None, p, scaling=hd**-0.5, log_norm=log_norm)
    assert totals.shape == (B, m)
    block = 2 * B * heads * (S - m) * m * hd  # every query slot after an image against its keys
    assert block <= counter.get_total_flops() <= 1.05 * block
    assert (S - m) / (S - 35 - m) < 1.03  # the query slots: the positions after the image, few more
