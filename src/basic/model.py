"""LLaVA-1.5 on `transformers.LlavaForConditionalGeneration`: build from (LLM, vision tower), freeze, save.

`build` loads the base LLM and the vision tower each through `from_pretrained` (hub ids or local dirs;
under DeepSpeed ZeRO-3 each is partitioned as it loads, since `from_pretrained` honours the
`HfDeepSpeedConfig` that `TrainingArguments` registers) and composes them into a LLaVA model whose
skeleton is built on the meta device, so no weight is ever materialised twice. The projector is a plain
module built here with PyTorch's default initialisation, as LLaVA's is, and is partitioned by DeepSpeed
only when the engine wraps the model; loading `--pretrain_mm_mlp_adapter` into it therefore needs no
gathering (the ZeRO-3 failure of LLaVA PR #1250 cannot happen).

LLaVA-1.5 settings, expressed in Hugging Face terms:
- `mm_vision_select_layer` -> `vision_feature_layer`; `mm_vision_select_feature` `patch` drops CLIP's CLS
  token (`vision_feature_select_strategy` "default") and keeps every SigLIP patch ("full"), decided by the
  tower's model type; `cls_patch` keeps CLIP's CLS too.
- `mlp2x_gelu` = `LlavaMultiModalProjector` (linear_1, GELU, linear_2). `linear` = the same module with
  `projector_hidden_act` "linear" and linear_2 frozen at the identity, so the map is exactly linear_1 and
  vanilla transformers still loads the checkpoint.
- `<image>` is added to the tokenizer as a special token; the new embedding rows (input and output) are
  drawn around the mean of the existing ones (`mean_resizing`). Without a pad token, pad = unk (LLaVA v1),
  else eos.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector
from transformers.utils import logging as hf_logging

from basic.data.templates import IMAGE_TOKEN
from basic.distributed import gathered

logger = logging.getLogger(__name__)

# vision tower model type -> whether its sequence starts with a CLS token (LLaVA's `patch` drops it)
TOWERS_WITH_CLS = {"clip_vision_model": True, "siglip_vision_model": False}
PROJECTORS = {"mlp2x_gelu": "gelu", "linear": "linear"}
SELECT_FEATURES = ("patch", "cls_patch")
PROJECTOR_FILE = "mm_projector.safetensors"


@dataclass
class Built:
    model: LlavaForConditionalGeneration
    processor: LlavaProcessor

    @property
    def tokenizer(self):
        return self.processor.tokenizer


def load_tokenizer(name: str, model_max_length: int, cache_dir: str | None = None):
    """The LLM's fast tokenizer, right-padded, with a pad token and `<image>` added."""
    tokenizer = AutoTokenizer.from_pretrained(
        name, model_max_length=model_max_length, padding_side="right", cache_dir=cache_dir
    )
    if not tokenizer.is_fast:
        raise ValueError(
            f"--model_name_or_path {name}: a fast tokenizer is needed (character offsets for labels)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
        logger.info("tokenizer has no pad token; padding with %r (only ever masked out)", tokenizer.pad_token)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    # How it was fetched (HF_HUB_OFFLINE), not what it is: kept out of the saved tokenizer_config.json so that
    # a checkpoint's bytes do not depend on the environment it was trained in.
    tokenizer.init_kwargs.pop("local_files_only", None)
    return tokenizer


def load_vision_tower(name: str, dtype: torch.dtype, cache_dir: str | None = None):
    """The vision encoder alone, from a full CLIPModel/SiglipModel checkpoint or a bare *VisionModel one."""
    config = AutoConfig.from_pretrained(name, cache_dir=cache_dir)
    vision_config = getattr(config, "vision_config", None) or config
    if vision_config.model_type not in TOWERS_WITH_CLS:
        raise ValueError(
            f"--vision_tower {name}: unsupported vision model type {vision_config.model_type!r}; "
            f"supported: {', '.join(TOWERS_WITH_CLS)}"
        )
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a full CLIP checkpoint's text weights are expectedly unused
    try:
        return AutoModel.from_pretrained(name, config=vision_config, dtype=dtype, cache_dir=cache_dir)
    finally:
        hf_logging.set_verbosity(verbosity)


def image_tokens(vision_config, select_feature: str) -> tuple[str, int, int]:
    """(vision_feature_select_strategy, image tokens per image, extra tokens such as CLS) for a tower."""
    if select_feature not in SELECT_FEATURES:
        raise ValueError(
            f"--mm_vision_select_feature {select_feature!r} is not one of {', '.join(SELECT_FEATURES)}"
        )
    has_cls = TOWERS_WITH_CLS[vision_config.model_type]
    if select_feature == "cls_patch" and not has_cls:
        raise ValueError(f"--mm_vision_select_feature cls_patch: {vision_config.model_type} has no CLS token")
    strategy = "default" if has_cls and select_feature == "patch" else "full"
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    extra = int(has_cls)
    return strategy, patches + extra - int(strategy == "default"), extra


@contextlib.contextmanager
def outside_zero3(hf_deepspeed_config):
    """Suspend transformers' ZeRO-3 detection (so a meta-device skeleton is not built under zero.Init)."""
    from transformers.integrations.deepspeed import (
        is_deepspeed_zero3_enabled,
        set_hf_deepspeed_config,
        unset_hf_deepspeed_config,
    )

    if hf_deepspeed_config is None:
        if is_deepspeed_zero3_enabled():
            raise ValueError(
                "DeepSpeed ZeRO-3 is configured: pass its HfDeepSpeedConfig as hf_deepspeed_config"
            )
        yield
        return

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(hf_deepspeed_config)


def build(
    model_name_or_path: str,
    vision_tower: str,
    *,
    projector_type: str = "mlp2x_gelu",
    vision_select_layer: int = -2,
    vision_select_feature: str = "patch",
    model_max_length: int = 2048,
    chat_template: str | None = None,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
    cache_dir: str | None = None,
    hf_deepspeed_config=None,
    seed: int = 0,
) -> Built:
    """A LLaVA model and its processor from a base LLM and a vision tower (see the module docstring)."""
    if projector_type not in PROJECTORS:
        raise ValueError(f"--mm_projector_type {projector_type!r} is not one of {', '.join(PROJECTORS)}")
    tokenizer = load_tokenizer(model_name_or_path, model_max_length, cache_dir)
    tower = load_vision_tower(vision_tower, dtype, cache_dir)
    image_processor = AutoImageProcessor.from_pretrained(vision_tower, cache_dir=cache_dir)
    llm = AutoModelForCausalLM.from_pretrained(model_name_or_path, dtype=dtype, cache_dir=cache_dir)
    vision_config = tower.config
    n_layers = vision_config.num_hidden_layers
    if not -(n_layers + 1) <= vision_select_layer <= n_layers:
        raise ValueError(f"--mm_vision_select_layer {vision_select_layer}: the tower has {n_layers} layers")
    strategy, n_image_tokens, extra_tokens = image_tokens(vision_config, vision_select_feature)
    check_image_size(image_processor, vision_config, vision_tower)

    config = LlavaConfig(
        vision_config=vision_config,
        text_config=llm.config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        projector_hidden_act=PROJECTORS[projector_type],
        vision_feature_layer=vision_select_layer,
        vision_feature_select_strategy=strategy,
        image_seq_length=n_image_tokens,
    )
    with outside_zero3(hf_deepspeed_config), torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = tower
    model.model.language_model = llm.base_model
    model.lm_head = llm.get_output_embeddings()
    # New weights (projector: nn.Linear's default init, as LLaVA's mm_projector; the <image> embedding row)
    # depend on `seed` alone, not on how much randomness loading consumed: equal on every process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        projector = LlavaMultiModalProjector(config)
        if projector_type == "linear":
            with torch.no_grad():
                projector.linear_2.weight.copy_(torch.eye(projector.linear_2.in_features))
                projector.linear_2.bias.zero_()
        model.model.multi_modal_projector = projector.to(dtype=llm.dtype)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    model.config.pad_token_id = model.config.text_config.pad_token_id = tokenizer.pad_token_id
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=extra_tokens,
        chat_template=chat_template,
        image_token=IMAGE_TOKEN,
    )
    logger.info(
        "built LLaVA: LLM %s (%s), tower %s (%s, layer %d, %s, %d image tokens), projector %s",
        model_name_or_path,
        llm.config.model_type,
        vision_tower,
        vision_config.model_type,
        vision_select_layer,
        strategy,
        n_image_tokens,
        projector_type,
    )
    return Built(model, processor)


def check_image_size(image_processor, vision_config, name: str) -> None:
    """The processor must produce the tower's input size, or the placeholder count would be wrong."""
    pixels = image_processor(images=Image.new("RGB", (37, 23)), return_tensors="pt")["pixel_values"]
    if tuple(pixels.shape[-2:]) != (vision_config.image_size, vision_config.image_size):
        raise ValueError(
            f"--vision_tower {name}: its image processor yields {tuple(pixels.shape[-2:])} pixels but the "
            f"model expects {vision_config.image_size}x{vision_config.image_size}"
        )


def projector_of(model: LlavaForConditionalGeneration) -> LlavaMultiModalProjector:
    return model.model.multi_modal_projector


def is_linear(model: LlavaForConditionalGeneration) -> bool:
    return model.config.projector_hidden_act == "linear"


def set_trainable(
    model: LlavaForConditionalGeneration, *, projector_only: bool, freeze_projector: bool = False
) -> None:
    """Stage 1: projector only. Stage 2: projector + LLM. The vision tower always stays frozen."""
    model.requires_grad_(False)
    projector = projector_of(model)
    if not freeze_projector:
        projector.requires_grad_(True)
    if is_linear(model):
        projector.linear_2.requires_grad_(False)  # the identity that makes `linear` a single map
    if not projector_only:
        model.model.language_model.requires_grad_(True)
        model.lm_head.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "trainable: %s (%d of %d parameters)",
        "projector" if projector_only else "projector + LLM",
        trainable,
        total,
    )


def projector_state(model: LlavaForConditionalGeneration) -> dict[str, torch.Tensor]:
    """The projector's weights under their HF names (`linear_1.*`, and `linear_2.*` unless `linear`)."""
    projector = projector_of(model)
    with gathered(projector.parameters()):
        state = {k: v.detach().cpu().clone().contiguous() for k, v in projector.state_dict().items()}
    return {k: v for k, v in state.items() if not (is_linear(model) and k.startswith("linear_2."))}


def _projector_key(key: str) -> str:
    """Map LLaVA's names (`model.mm_projector.0.weight`, `model.mm_projector.weight` for linear) and
    HF's (`model.multi_modal_projector.linear_1.weight`) to the projector module's own."""
    for prefix in ("mm_projector.", "multi_modal_projector."):
        if prefix in key:
            key = key.split(prefix, 1)[1]
    return {
        "0.weight": "linear_1.weight",
        "0.bias": "linear_1.bias",
        "2.weight": "linear_2.weight",
        "2.bias": "linear_2.bias",
        "weight": "linear_1.weight",
        "bias": "linear_1.bias",
    }.get(key, key)


def load_projector(model: LlavaForConditionalGeneration, path: str | Path) -> None:
    """Load a stage-1 projector: our `.safetensors` or a released LLaVA `mm_projector.bin`.

    `.bin` files are read with `torch.load(weights_only=True)`, which refuses arbitrary pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--pretrain_mm_mlp_adapter {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw = load_file(str(path))
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"--pretrain_mm_mlp_adapter {path}: not a plain tensor state dict ({error})"
            ) from error
    state = {_projector_key(k): v for k, v in raw.items()}
    expected = {k: v.shape for k, v in projector_state(model).items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != {k: tuple(s) for k, s in expected.items()}:
        raise ValueError(
            f"--pretrain_mm_mlp_adapter {path}: its projector {got} does not fit this model's "
            f"{ {k: tuple(s) for k, s in expected.items()} } (same vision tower, LLM and --mm_projector_type?)"
        )
    projector = projector_of(model)
    with gathered(projector.parameters(), modifier_rank=0), torch.no_grad():
        params = dict(projector.named_parameters())
        for key, value in state.items():
            params[key].copy_(value.to(params[key].dtype))
    logger.info("loaded projector weights from %s", path)
