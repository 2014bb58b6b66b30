"""Building LLaVA from (LLM, vision tower): LLaVA-1.5 settings per family and encoder, projectors, freezing."""

from __future__ import annotations

import collections

import pytest
import torch
from PIL import Image

from basic.data.templates import IMAGE_TOKEN
from basic.model import build, load_projector, projector_of, projector_state, set_trainable
from conftest import PAIRS


@pytest.fixture(scope="module")
def built(backbones):
    return {pair: build(backbones[pair[0]], backbones[pair[1]], vision_select_layer=-2) for pair in PAIRS}


@pytest.mark.parametrize("pair", PAIRS, ids="+".join)
def test_llava_15_settings_and_a_forward_pass_through_the_processor(pair, built, backbones):
    llm, encoder = pair
    model, processor = built[pair].model, built[pair].processor
    config = model.config
    # 16x16 images, 4x4 patches: 16 patches; CLIP's CLS is dropped ("default"), SigLIP has none ("full")
    assert config.vision_feature_select_strategy == ("default" if encoder == "clip" else "full")
    assert config.image_seq_length == 16 and config.vision_feature_layer == -2
    tokenizer = processor.tokenizer
    assert config.image_token_id == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == config.text_config.vocab_size
    assert tokenizer.pad_token is not None
    if llm == "gemma":  # tied input/output embeddings survive composition and resizing
        assert model.lm_head.weight is model.get_input_embeddings().weight
    inputs = processor(
        images=Image.new("RGB", (20, 12), (200, 10, 10)),
        text=f"{IMAGE_TOKEN}\nwhat colour ?",
        return_tensors="pt",
    )
    assert (inputs["input_ids"] == config.image_token_id).sum() == 16
    with torch.no_grad():
        out = model(**inputs)
    assert out.image_hidden_states.shape == (16, config.text_config.hidden_size)
    assert torch.isfinite(out.logits).all()


def test_image_token_embedding_starts_near_the_mean_of_the_others(built):
    model = built[("llama", "clip")].model
    weight = model.get_input_embeddings().weight.detach()
    new, old = weight[model.config.image_token_id], weight[: model.config.image_token_id]
    assert torch.isfinite(new).all()
    assert (new - old.mean(0)).norm() < (old - old.mean(0)).norm(dim=1).mean()


def test_freezing_per_stage(built):
    model = built[("mistral", "siglip")].model
    set_trainable(model, projector_only=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.multi_modal_projector.") for n in trainable)
    set_trainable(model, projector_only=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("model.vision_tower.") for n in trainable)
    assert any(n.startswith("model.language_model.") for n in trainable) and "lm_head.weight" in trainable
    assert all(p.requires_grad for p in projector_of(model).parameters())


def test_linear_projector_is_exactly_linear_1_and_stays_loadable(backbones, tmp_path):
    model = build(backbones["llama"], backbones["clip"], projector_type="linear").model
    projector = projector_of(model)
    x = torch.randn(3, projector.linear_1.in_features)
    with torch.no_grad():
        assert torch.allclose(projector(x), projector.linear_1(x), atol=1e-6)
    set_trainable(model, projector_only=True)
    assert not projector.linear_2.weight.requires_grad and projector.linear_1.weight.requires_grad
    assert set(projector_state(model)) == {"linear_1.weight", "linear_1.bias"}
    model.save_pretrained(tmp_path)
    from transformers import LlavaForConditionalGeneration

    reloaded = projector_of(LlavaForConditionalGeneration.from_pretrained(tmp_path))
    assert torch.equal(reloaded.linear_2.weight, torch.eye(reloaded.linear_2.in_features))


def test_released_llava_projector_bin_loads_with_its_key_names(built, tmp_path):
    model = built[("gemma", "clip")].model
    state = {k: torch.randn_like(v) for k, v in projector_state(model).items()}
    llava_names = {
        "linear_1.weight": "model.mm_projector.0.weight",
        "linear_1.bias": "model.mm_projector.0.bias",
        "linear_2.weight": "model.mm_projector.2.weight",
        "linear_2.bias": "model.mm_projector.2.bias",
    }
    torch.save(
        collections.OrderedDict((llava_names[k], v) for k, v in state.items()), tmp_path / "mm_projector.bin"
    )
    load_projector(model, tmp_path / "mm_projector.bin")
    assert all(torch.equal(projector_state(model)[k], v) for k, v in state.items())


class NotATensor:  # unpickling this would run project code: weights_only must refuse it
    pass


def test_projector_files_that_are_not_plain_tensors_or_do_not_fit_are_refused(built, tmp_path):
    model = built[("llama", "clip")].model
    torch.save({"model.mm_projector.0.weight": NotATensor()}, tmp_path / "evil.bin")
    with pytest.raises(ValueError, match="not a plain tensor state dict"):
        load_projector(model, tmp_path / "evil.bin")
    torch.save({"model.mm_projector.0.weight": torch.zeros(2, 2)}, tmp_path / "small.bin")
    with pytest.raises(ValueError, match="does not fit"):
        load_projector(model, tmp_path / "small.bin")
    with pytest.raises(ValueError, match="no such file"):
        load_projector(model, tmp_path / "absent.safetensors")


def test_unsupported_towers_and_settings_name_their_flag(backbones):
    with pytest.raises(ValueError, match="--vision_tower .*unsupported vision model type 'llama'"):
        build(backbones["llama"], backbones["llama"])
    with pytest.raises(ValueError, match="--mm_projector_type"):
        build(backbones["llama"], backbones["clip"], projector_type="qformer")
    with pytest.raises(ValueError, match="--mm_vision_select_feature cls_patch"):
        build(backbones["llama"], backbones["siglip"], vision_select_feature="cls_patch")
    with pytest.raises(ValueError, match="--mm_vision_select_layer 9"):
        build(backbones["llama"], backbones["clip"], vision_select_layer=9)
