"""BasicObjective on tiny LLaVA models: the terms from one training forward pass, against direct formulas.

v_hat is checked against `output_hidden_states` (layers 1..k < L are the raw residual stream), the loss
terms against the float64 formulas of docs/method.md, the LM loss against the model's own, and the gradients:
with a detached target BASIC reaches only the projector. Gradient checkpointing (whose backward recomputes
every layer's attention) must give the same terms and gradients.
"""

from __future__ import annotations

import pytest
import torch

from basic.method import attention, layer_weights, patch_weights
from basic.method.capture import Capture
from basic.method.config import BasicArguments
from basic.method.objective import BasicObjective, ObjectiveOutput
from basic.testing.backbones import tiny_llava
from test_method_patch_weights import FAMILIES, batch

PAPER = {"basic_das_weight": 1.0, "basic_sds_weight": 0.01}


def training_batch(processor, padding_side="right"):
    inputs = dict(batch(processor, padding_side))
    labels = inputs["input_ids"].clone()
    labels[
        (inputs["attention_mask"] == 0) | (labels == processor.tokenizer.convert_tokens_to_ids("<image>"))
    ] = -100
    return {**inputs, "labels": labels}


def direct_terms(model, inputs, k, E) -> tuple[torch.Tensor, torch.Tensor]:
    """DAS and SDS by the formulas, in float64, from output_hidden_states and the eager-free patch weights."""
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    image = inputs["input_ids"] == model.config.image_token_id
    images = len(inputs["pixel_values"])
    w = layer_weights(k)
    v = out.image_hidden_states.double().view(images, -1, out.image_hidden_states.shape[-1])
    v_hat = sum(w[i] * out.hidden_states[i + 1][image].double() for i in range(k)).view(v.shape)
    a = patch_weights(model, inputs, k=k).double()
    das = (
        (a * ((v / v.norm(dim=-1, keepdim=True) - v_hat / v_hat.norm(dim=-1, keepdim=True)) ** 2).sum(-1))
        .sum(1)
        .mean()
    )
    p, q = torch.softmax(v_hat @ E.double().T, -1), torch.softmax(v @ E.double().T, -1)
    sds = (a * (p * (p.log() - q.log())).sum(-1)).sum(1).mean()
    return das, sds


@pytest.mark.parametrize("family", FAMILIES)
def test_terms_equal_the_formulas_and_the_lm_loss_is_the_models(family):
    model, processor = tiny_llava(family, layers=4, dtype=torch.float64)
    inputs = training_batch(processor, "left" if family in ("gemma", "phi3") else "right")
    objective = BasicObjective(BasicArguments(**PAPER), model)
    assert objective.k == 2  # half the layers
    out = objective(model, inputs)
    assert isinstance(out, ObjectiveOutput)
    embeddings = model.get_input_embeddings()
    E = embeddings(
        torch.arange(embeddings.num_embeddings)
    )  # the rows as the model sees them (Gemma: x sqrt(d))
    das, sds = direct_terms(model, inputs, 2, E)
    torch.testing.assert_close(out.logs["das"], das, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.logs["sds"], sds, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.extra_loss, das + 0.01 * sds, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        assert torch.equal(out.outputs.loss, model(**inputs).loss)


def test_lm_head_vocabulary_and_the_other_schemes():
    model, processor = tiny_llava("llama", layers=6, dtype=torch.float64)
    inputs = training_batch(processor)
    args = BasicArguments(
        basic_das_weight=0.5,
        basic_sds_weight=2.0,
        basic_layers=4,
        basic_vocab="lm_head",
        basic_layer_weights="decreasing",
        basic_patch_weights="uniform",
    )
    out = BasicObjective(args, model)(model, inputs)
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True)
    image = inputs["input_ids"] == model.config.image_token_id
    w = layer_weights(4, "decreasing")
    v = hidden.image_hidden_states.view(2, 16, -1)
    v_hat = sum(w[i] * hidden.hidden_states[i + 1][image] for i in range(4)).view(v.shape)
    a = patch_weights(model, inputs, k=4, scheme="uniform")
    p, q = torch.softmax(v_hat @ model.lm_head.weight.T, -1), torch.softmax(v @ model.lm_head.weight.T, -1)
    sds = (a * (p * (p.log() - q.log())).sum(-1)).sum(1).mean()
    torch.testing.assert_close(out.logs["sds"], sds, rtol=1e-10, atol=1e-12)
    assert out.extra_loss.item() == pytest.approx(0.5 * out.logs["das"].item() + 2.0 * sds.item(), rel=1e-12)


def test_only_weighted_terms_are_computed_and_text_only_batches_add_nothing():
    model, processor = tiny_llava("mistral", "siglip")
    objective = BasicObjective(BasicArguments(basic_das_weight=1.0), model)
    out = objective(model, training_batch(processor))
    assert set(out.logs) == {"das"} and out.extra_loss == out.logs["das"]
    processor.tokenizer.padding_side = "right"
    text_only = processor.tokenizer(
        ["how many objects are there ?", "two"], return_tensors="pt", padding=True
    )
    out = objective(model, {**text_only, "labels": text_only["input_ids"]})
    assert out.extra_loss is None and out.logs == {} and torch.isfinite(out.outputs.loss)
    with pytest.raises(ValueError, match="basic_das_weight or --basic_sds_weight"):
        BasicObjective(BasicArguments(), model)
    with pytest.raises(ValueError, match="--basic_layers 5: the LLM has 4 layers"):
        BasicObjective(BasicArguments(basic_das_weight=1.0, basic_layers=5), model)


def grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {
        name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None and p.grad.any()
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_basic_gradients_reach_only_the_projector(family):
    """Stage 2's trainable set (everything but the vision tower, which LLaVA always freezes)."""
    model, processor = tiny_llava(family)
    model.train()
    model.model.vision_tower.requires_grad_(False)
    objective = BasicObjective(BasicArguments(**PAPER), model)
    reached = grads(model, objective(model, training_batch(processor)).extra_loss)
    assert reached and all(name.startswith("model.multi_modal_projector.") for name in reached)


def test_an_undetached_target_also_trains_the_first_k_layers():
    model, processor = tiny_llava("llama")
    model.model.vision_tower.requires_grad_(False)
    objective = BasicObjective(BasicArguments(**PAPER, basic_detach_target=False), model)
    reached = grads(model, objective(model, training_batch(processor)).extra_loss)
    assert any(name.startswith("model.multi_modal_projector.") for name in reached)
    layers = {int(name.split(".")[3]) for name in reached if name.startswith("model.language_model.layers.")}
    assert layers == {0, 1}  # k = 2: the teacher's layers, none above


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_gradient_checkpointing_recompute_is_not_counted_twice(family, monkeypatch):
    model, processor = tiny_llava(family, dtype=torch.float64)
    model.train()
    inputs = training_batch(processor, "left")
    objective = BasicObjective(BasicArguments(**PAPER), model)
    plain = objective(model, inputs)
    plain_grads = grads(model, plain.outputs.loss + plain.extra_loss)
    model.activation_checkpointing_enable()
    attention_calls, scored = [], []
    monkeypatch.setattr(attention, "image_attention", spy(attention.image_attention, scored))
    layer0 = model.model.language_model.layers[0].self_attn
    monkeypatch.setattr(layer0, "forward", spy(layer0.forward, attention_calls))
    checkpointed = objective(model, inputs)
    checkpointed_grads = grads(model, checkpointed.outputs.loss + checkpointed.extra_loss)
    assert len(attention_calls) == 2  # the forward pass and its recompute in backward ...
    assert len(scored) == objective.k  # ... but text->image attention is scored once per layer
    for key in ("das", "sds"):
        torch.testing.assert_close(checkpointed.logs[key], plain.logs[key], rtol=1e-12, atol=1e-14)
    assert plain_grads.keys() == checkpointed_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-9, atol=1e-12)


def spy(function, calls: list):
    def counted(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return counted


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_few_optimizer_steps_lower_the_basic_terms(family, stage):
    """Stage 1 trains the projector alone, stage 2 the projector and the LLM; BASIC's terms go down."""
    model, processor = tiny_llava(family, "clip" if family in ("llama", "gemma") else "siglip")
    model.train()
    model.requires_grad_(False)
    model.model.multi_modal_projector.requires_grad_(True)
    if stage == 2:
        model.model.language_model.requires_grad_(True)
    inputs = training_batch(processor)
    objective = BasicObjective(BasicArguments(**PAPER), model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    history = []
    for _ in range(6):
        out = objective(model, inputs)
        (out.outputs.loss + out.extra_loss).backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(out.extra_loss.item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < history[0]


def test_a_forward_pass_without_the_recorder_is_an_error_not_zero_weights():
    model, processor = tiny_llava("llama")
    inputs = training_batch(processor)
    capture = Capture(model, inputs, 2, layer_weights=layer_weights(2))
    with capture:
        model(**inputs)  # hooks see the hidden states, but no recorder reaches the attention
    assert capture.supervision().shape == (2, 16, 32)
    with pytest.raises(RuntimeError, match=r"recorded the attention of layers \[\], not of all of 1..2"):
        capture.patch_weights()
