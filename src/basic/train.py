"""`basic train`: LLaVA-1.5's two training stages with LLaVA's own command-line flags, on transformers' Trainer.

Stage 1 (`--tune_mm_mlp_adapter True`) trains the projector alone and writes `mm_projector.safetensors`
and `config.json`; stage 2 (`--pretrain_mm_mlp_adapter <file>`) trains projector + LLM and writes a plain
Hugging Face LLaVA checkpoint with its processor. Both write `trainer_state.json`. Run it as `basic train`,
`python -m basic.train`, `torchrun -m basic.train`, `accelerate launch -m basic.train` or
`deepspeed --module basic.train`, with the flags of LLaVA's `scripts/v1_5/pretrain.sh` / `finetune.sh`.
A value this engine does not support is refused with a message naming the flag. See docs/engine.md.

With the BASIC flags off, the loss is Trainer's own `compute_loss` (the LLaVA-1.5 baseline). With them
on, `basic.method.objective.BasicObjective` runs the forward pass and its extra loss is added, weighted
so that gradient accumulation and data parallelism average it over the images of the global batch,
exactly as Trainer's `num_items_in_batch` averages the LM loss over the tokens of the global batch.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import HfArgumentParser, Trainer, set_seed

from basic.data.collator import LlavaCollator
from basic.data.dataset import LazySupervisedDataset
from basic.data.images import ASPECT_RATIOS, ImageTransform
from basic.data.labels import IGNORE_INDEX
from basic.data.sampler import ModalityLengthGroupedSampler
from basic.data.templates import get_template
from basic.distributed import free_port
from basic.method.config import BasicArguments
from basic.model import PROJECTOR_FILE, build, load_projector, projector_of, projector_state, set_trainable

logger = logging.getLogger("basic.train")

DATA_CHECK_FILE = "data_check.json"


@dataclass
class ModelArguments:
    """LLaVA's `ModelArguments`, same names, meanings and defaults (unsupported values are refused)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "base LLM: hub id or local directory"}
    )
    version: str = field(
        default="v1", metadata={"help": "conversation template: plain (stage 1), v1, gemma, phi3, mistral"}
    )
    freeze_backbone: bool = field(default=False, metadata={"help": "unsupported (must be False)"})
    tune_mm_mlp_adapter: bool = field(default=False, metadata={"help": "stage 1: train only the projector"})
    vision_tower: str | None = field(
        default=None, metadata={"help": "CLIP or SigLIP: hub id or local directory"}
    )
    mm_vision_select_layer: int = field(
        default=-1, metadata={"help": "vision layer whose features are projected (LLaVA-1.5: -2)"}
    )
    pretrain_mm_mlp_adapter: str | None = field(
        default=None,
        metadata={"help": "stage-1 projector: mm_projector.safetensors or LLaVA's mm_projector.bin"},
    )
    mm_projector_type: str = field(default="linear", metadata={"help": "linear | mlp2x_gelu (LLaVA-1.5)"})
    mm_use_im_start_end: bool = field(
        default=False, metadata={"help": "unsupported (must be False, as in LLaVA-1.5)"}
    )
    mm_use_im_patch_token: bool = field(
        default=False, metadata={"help": "unsupported (must be False, as in LLaVA-1.5)"}
    )
    mm_patch_merge_type: str = field(default="flat", metadata={"help": "only flat"})
    mm_vision_select_feature: str = field(
        default="patch", metadata={"help": "patch (CLIP: drop CLS) | cls_patch"}
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "attention kernel (e.g. sdpa, flash_attention_2); default: transformers' choice"},
    )


@dataclass
class DataArguments:
    data_path: str | None = field(default=None, metadata={"help": "LLaVA conversation JSON (or JSON-lines)"})
    lazy_preprocess: bool = field(
        default=False, metadata={"help": "accepted for LLaVA scripts; data is always lazy"}
    )
    image_folder: str | None = field(
        default=None, metadata={"help": "directory the records' image paths are relative to"}
    )
    image_aspect_ratio: str = field(default="square", metadata={"help": "square | pad (LLaVA-1.5 stage 2)"})
    max_skip_fraction: float = field(
        default=0.001,
        metadata={"help": "largest fraction of records that may be skipped as unusable; more is an error"},
    )


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """transformers' TrainingArguments with LLaVA's additions and defaults."""

    cache_dir: str | None = field(default=None)
    optim: str = field(default="adamw_torch")
    remove_unused_columns: bool = field(default=False)
    freeze_mm_mlp_adapter: bool = field(default=False, metadata={"help": "keep the projector frozen"})
    model_max_length: int = field(
        default=512, metadata={"help": "longest sample in tokens, image tokens included"}
    )
    bits: int = field(default=16, metadata={"help": "only 16 (no quantized training)"})
    lora_enable: bool = field(default=False, metadata={"help": "unsupported (must be False)"})
    mm_projector_lr: float | None = field(
        default=None, metadata={"help": "separate learning rate for the projector"}
    )
    group_by_modality_length: bool = field(default=False, metadata={"help": "one modality per step (LLaVA)"})
    evaluation_strategy: str | None = field(
        default=None, metadata={"help": "old spelling of --eval_strategy"}
    )
    warmup_ratio: float | None = field(
        default=None, metadata={"help": "old spelling of a float --warmup_steps < 1"}
    )

    def __post_init__(self):
        # LLaVA's scripts use transformers 4.x spellings; map them onto their 5.x names.
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1 or self.warmup_steps:
                raise ValueError(
                    f"--warmup_ratio {self.warmup_ratio}: must be in [0, 1), without --warmup_steps"
                )
            self.warmup_steps = self.warmup_ratio
        for old, new in (
            ("gradient_checkpointing", "activation_checkpointing"),
            ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
        ):
            if getattr(self, new) is None and getattr(self, old) is not None:
                setattr(self, new, getattr(self, old))
        if self.deepspeed and "WORLD_SIZE" not in os.environ:
            # One process without a launcher (plain `basic train`): give DeepSpeed the environment a launcher
            # would, instead of letting it go looking for MPI.
            os.environ.update(
                RANK="0",
                LOCAL_RANK="0",
                WORLD_SIZE="1",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(free_port()),
            )
        if not torch.cuda.is_available():
            if self.bf16 or self.fp16 or self.tf32:
                logger.warning("no CUDA device: ignoring --bf16/--fp16/--tf32 and training in float32")
                self.bf16 = self.fp16 = self.tf32 = False
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                self.use_cpu = True  # accelerate runs several CPU processes (gloo) only in its CPU mode
        super().__post_init__()
        if self.use_cpu and self.deepspeed and self.world_size > 1:
            import deepspeed

            # accelerate's CPU mode sets up torch.distributed only; ZeRO-3 partitions while the model loads,
            # before the engine exists, and needs DeepSpeed's own view of the process group by then.
            deepspeed.init_distributed(dist_backend="gloo")


def unsupported(
    model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments, basic_args: BasicArguments
) -> list[str]:
    """Every flag value this engine refuses, each naming its flag."""
    problems = [
        f"--{name} is required"
        for name, value in (
            ("model_name_or_path", model_args.model_name_or_path),
            ("vision_tower", model_args.vision_tower),
            ("data_path", data_args.data_path),
        )
        if value is None
    ]
    for flag, value, allowed in (
        ("freeze_backbone", model_args.freeze_backbone, False),
        ("mm_use_im_start_end", model_args.mm_use_im_start_end, False),
        ("mm_use_im_patch_token", model_args.mm_use_im_patch_token, False),
        ("mm_patch_merge_type", model_args.mm_patch_merge_type, "flat"),
        ("bits", args.bits, 16),
        ("lora_enable", args.lora_enable, False),
    ):
        if value != allowed:
            problems.append(f"--{flag} {value} is not supported (only {allowed}, as LLaVA-1.5 trains)")
    if data_args.image_aspect_ratio not in ASPECT_RATIOS:
        problems.append(
            f"--image_aspect_ratio {data_args.image_aspect_ratio} is not supported (only "
            f"{' or '.join(ASPECT_RATIOS)})"
        )
    if not 0 <= data_args.max_skip_fraction <= 1:
        problems.append(f"--max_skip_fraction {data_args.max_skip_fraction} is not in [0, 1]")
    if model_args.tune_mm_mlp_adapter and args.freeze_mm_mlp_adapter:
        problems.append(
            "--tune_mm_mlp_adapter True with --freeze_mm_mlp_adapter True leaves nothing to train"
        )
    if basic_args.enabled and args.n_gpu > 1:
        problems.append(
            "BASIC losses need one process per GPU: launch with torchrun, accelerate or deepspeed"
        )
    try:
        get_template(model_args.version)
    except ValueError as error:
        problems.append(str(error))
    return problems


def parse_args(
    argv: list[str] | None,
) -> tuple[ModelArguments, DataArguments, TrainingArguments, BasicArguments]:
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, TrainingArguments, BasicArguments), prog="basic train"
    )
    try:
        parsed = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # unknown flags and refused --basic_* values
        raise SystemExit(f"basic train: {error}") from error
    problems = unsupported(*parsed)
    if problems:
        raise SystemExit("basic train: " + "\n  ".join(["refusing these arguments:", *problems]))
    return parsed


class IdleProjector:
    """LLaVA's dummy image for batches without images: `+ 0 x projector(0)` on the token embeddings.

    LLaVA passes a blank image through the projector for text-only samples and splices in none of its
    features, so the projector is in every step's graph with zero gradients. Without it, processes whose
    batches differ in modality produce different sets of gradients in a different order, which DeepSpeed
    ZeRO-2 turns into mismatched collectives and DDP into an unused-parameter error. Added as an output
    hook on the embedding layer (active only while the trainer says so), it enters the graph where the
    image features would, leaves the model's outputs unchanged, and is not part of the saved model.
    """

    def __init__(self, model):
        self.projector = projector_of(model)
        self.active = False
        model.get_input_embeddings().register_forward_hook(self)

    def __call__(self, module, args, output):
        if not self.active:
            return None
        zeros = torch.zeros(
            1,
            self.projector.linear_1.in_features,
            device=output.device,
            dtype=self.projector.linear_1.weight.dtype,
        )
        return output + self.projector(zeros).sum().to(output.dtype) * 0.0


def labelled_logits_only(inputs: dict) -> dict:
    """`inputs` with the LM head applied only where a label follows (the positions that enter the loss).

    The system prompt, the image tokens and the questions carry no label, and the vocabulary projection of
    their hidden states is most of the LM head's work; transformers' `logits_to_keep` (a boolean mask) and
    `shift_labels` give the same loss and gradients without it. The outputs' logits are then those of the
    labelled positions only, flattened."""
    shifted = torch.nn.functional.pad(inputs["labels"], (0, 1), value=IGNORE_INDEX)[..., 1:]
    keep = shifted != IGNORE_INDEX
    return {**inputs, "logits_to_keep": keep, "shift_labels": shifted[keep]}


class LlavaTrainer(Trainer):
    """Trainer with LLaVA's sampler and optimizer groups, the BASIC objective, window logs and skip counts."""

    def __init__(self, *args, objective=None, skip_budget: int = 0, skipped_before: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.skip_budget, self.skipped_before = skip_budget, skipped_before
        self._late_skips: set[str] = set()
        self._window: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.args.device))
        self._images_in_step: torch.Tensor | None = None
        self._idle_projector = IdleProjector(self.model)

    # Trainer has no public hook for the training sampler (get_train_dataloader hands this method to its
    # private _get_dataloader); LLaVA overrides the same method. Only the index order changes: batching,
    # sharding across processes, and skipping on resume stay Trainer's.
    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.group_by_modality_length:
            return ModalityLengthGroupedSampler(
                dataset.modality_lengths,
                batch_size=self.args.train_batch_size,
                world_size=self.args.world_size * self.args.gradient_accumulation_steps,
                seed=self.args.seed,
            )
        return super()._get_train_sampler(train_dataset)

    def create_optimizer(self, model=None):
        """LLaVA's groups: no weight decay on biases and norms; `--mm_projector_lr` for the projector."""
        if self.args.mm_projector_lr is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        projector = {id(p) for p in projector_of(self.model).parameters()}
        groups: dict[tuple[bool, bool], list] = defaultdict(list)
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                groups[(name in decay, id(param) in projector)].append(param)
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if decays else 0.0,
                **({"lr": self.args.mm_projector_lr} if in_projector else {}),
            }
            for (decays, in_projector), params in groups.items()
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints for resuming keep the model's own parameter names.

        In transformers 5.23 `save_pretrained` writes LLaVA's hub key layout (`language_model.model.*`), but
        Trainer's resume loads `model.safetensors` with a plain `load_state_dict`, which then matches no key and
        silently keeps the initial weights. DeepSpeed and FSDP resume from their own checkpoints and are left
        to Trainer; final outputs (not `_internal_call`) keep the hub layout.
        """
        if not _internal_call or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        self.model.save_pretrained(
            output_dir, save_original_format=False, is_main_process=self.args.should_save
        )
        if self.args.should_save:
            self.processing_class.save_pretrained(output_dir)
            torch.save(self.args, Path(output_dir) / "training_args.bin")

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Also count the images of this optimizer step (all processes), to average BASIC's loss over them."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.objective is not None:
            images = torch.tensor(sum(len(b.get("pixel_values", ())) for b in batch_samples), device=device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                images = self.accelerator.gather(images).sum()
            self._images_in_step = images
        return batch_samples, num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._late_skips.update(inputs.pop("skipped", ()))
        # Trainer's label smoother (--label_smoothing_factor) wants every position's logits.
        if model.training and "labels" in inputs and self.label_smoother is None:
            inputs = labelled_logits_only(inputs)
        self._idle_projector.active = model.training and "pixel_values" not in inputs
        try:
            if self.objective is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return self._objective_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self._idle_projector.active = False

    def _objective_loss(self, model, inputs, return_outputs, num_items_in_batch):
        if not self.model_accepts_loss_kwargs:
            num_items_in_batch = None
        out = self.objective(
            model,
            inputs if num_items_in_batch is None else {**inputs, "num_items_in_batch": num_items_in_batch},
        )
        # Mirror Trainer: with num_items_in_batch the LM loss is a sum over this micro-batch's tokens divided
        # by the step's token count (all processes when averaging across devices, hence the x processes that
        # undoes DDP's gradient mean); without it, a per-micro-batch mean that training_step divides by the
        # accumulation steps. The extra loss, a mean over this micro-batch's images, gets the same treatment.
        scaled_for_steps = num_items_in_batch is not None
        processes = (
            self.accelerator.num_processes
            if scaled_for_steps and self.args.average_tokens_across_devices
            else 1
        )
        loss = out.outputs.loss * processes
        images = len(inputs.get("pixel_values", ()))
        if out.extra_loss is not None and images:
            step_images = (
                self._images_in_step if model.training else images
            )  # evaluation: one batch at a time
            weight = images / step_images * processes if scaled_for_steps else 1.0
            loss = loss + out.extra_loss * weight
        if model.training:
            tokens = (inputs["labels"][..., 1:] != IGNORE_INDEX).sum()
            self._window["lm_loss_sum"] += out.outputs.loss.detach() * (
                num_items_in_batch if scaled_for_steps else tokens
            )
            self._window["tokens"] += tokens
            self._window["images"] += images
            for key, value in out.logs.items():
                self._window[f"{key}_sum"] += value.detach().float() * images
        return (loss, out.outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs (every process reaches them at the same step) get `lm_loss`, the objective's terms
        averaged over the window's images, and the count of skipped samples, checked against the limit."""
        if "loss" in logs:
            keys = sorted(self._window)
            if self.args.world_size > 1 and self.objective is not None:
                everyone = [None] * self.args.world_size
                torch.distributed.all_gather_object(everyone, keys)
                keys = sorted(set().union(*everyone))
            values = torch.stack(
                [torch.tensor(float(len(self._late_skips)), device=self.args.device)]
                + [self._window[k].float() for k in keys]
            )
            if self.args.world_size > 1:
                values = self.accelerator.reduce(values, reduction="sum")
            totals = dict(zip(keys, values[1:].tolist()))
            self._window.clear()
            if self.objective is None:
                logs["lm_loss"] = logs["loss"]
            else:
                logs["lm_loss"] = totals["lm_loss_sum"] / max(totals["tokens"], 1)
                for key in keys:
                    if key.endswith("_sum") and key != "lm_loss_sum" and totals["images"]:
                        logs[key[: -len("_sum")]] = totals[key] / totals["images"]
            skipped = self.skipped_before + int(values[0].item())
            if skipped:
                logs["skipped_samples"] = skipped
            if skipped > self.skip_budget:
                raise RuntimeError(
                    f"{skipped} samples could not be used ({self.skipped_before} before training), more than "
                    f"--max_skip_fraction allows ({self.skip_budget}); skipped by this process:\n  "
                    + "\n  ".join(sorted(self._late_skips))
                )
        super().log(logs, start_time)


def _setup_logging(args: TrainingArguments | None = None) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    main_process = args is None or args.should_log
    logging.getLogger("basic").setLevel(logging.INFO if main_process else logging.WARNING)


def _end_of_turn_ids(tokenizer, template) -> list[int]:
    ids = tokenizer.encode(template.end_of_turn_for(tokenizer), add_special_tokens=False)
    return ids if len(ids) == 1 else []


def train(
    model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments, basic_args: BasicArguments
) -> LlavaTrainer:
    """Run one stage and write its outputs to `args.output_dir`."""
    _setup_logging(args)
    projector_only = model_args.tune_mm_mlp_adapter
    template = get_template(model_args.version)
    logger.info(
        "stage %d (%s), template %s",
        1 if projector_only else 2,
        "projector only" if projector_only else "projector + LLM",
        template.name,
    )
    set_seed(args.seed)
    built = build(
        model_args.model_name_or_path,
        model_args.vision_tower,
        projector_type=model_args.mm_projector_type,
        vision_select_layer=model_args.mm_vision_select_layer,
        vision_select_feature=model_args.mm_vision_select_feature,
        model_max_length=args.model_max_length,
        chat_template=template.jinja,
        dtype=torch.bfloat16 if args.bf16 else torch.float32,
        attn_implementation=model_args.attn_implementation,
        cache_dir=args.cache_dir,
        hf_deepspeed_config=getattr(args, "hf_deepspeed_config", None),
        seed=args.seed,
    )
    model, tokenizer = built.model, built.tokenizer
    if model_args.pretrain_mm_mlp_adapter:
        load_projector(model, model_args.pretrain_mm_mlp_adapter)
    set_trainable(model, projector_only=projector_only, freeze_projector=args.freeze_mm_mlp_adapter)
    model.config.image_aspect_ratio = data_args.image_aspect_ratio
    model.config.text_config.use_cache = False
    model.generation_config.eos_token_id = list(
        dict.fromkeys([tokenizer.eos_token_id, *_end_of_turn_ids(tokenizer, template)])
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    dataset = LazySupervisedDataset(
        data_args.data_path,
        data_args.image_folder,
        template,
        tokenizer,
        ImageTransform(built.processor.image_processor, data_args.image_aspect_ratio),
        image_token_id=model.config.image_token_id,
        image_seq_length=model.config.image_seq_length,
        max_length=args.model_max_length,
        require_image=projector_only,
        max_skip_fraction=data_args.max_skip_fraction,
    )
    if args.should_save:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.output_dir) / DATA_CHECK_FILE).write_text(json.dumps(dataset.report(), indent=1) + "\n")
    objective = None
    if basic_args.enabled:
        from basic.method.objective import BasicObjective

        objective = BasicObjective(basic_args, model)
    trainer = LlavaTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=LlavaCollator(tokenizer.pad_token_id),
        processing_class=built.processor,
        objective=objective,
        skip_budget=dataset.skip_budget,
        skipped_before=len(dataset.skipped),
    )
    resume = args.resume_from_checkpoint
    if resume is None and any(Path(args.output_dir).glob("checkpoint-*")):
        resume = True  # LLaVA resumes from the newest checkpoint in output_dir
        logger.info("resuming from the newest checkpoint in %s", args.output_dir)
    trainer.train(resume_from_checkpoint=resume)

    model.config.text_config.use_cache = True
    if projector_only:
        state = projector_state(model)  # every process: gathering under ZeRO-3 is collective
        if args.should_save:
            from safetensors.torch import save_file

            save_file(state, str(Path(args.output_dir) / PROJECTOR_FILE), metadata={"format": "pt"})
            model.config.save_pretrained(args.output_dir)
    else:
        trainer.save_model(args.output_dir)
    trainer.save_state()
    logger.info("wrote %s", args.output_dir)
    return trainer


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    train(*parse_args(argv))
    # Tear the process group down together before exit: a rank that exits (or destroys its group) while
    # another is still saving can abort in Gloo's threads (SIGABRT, "terminate called without an active
    # exception", pytorch/pytorch#190489), failing a finished run. Only on success: after an error the
    # other ranks may never reach the barrier.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()
    # After a finished run, skip the interpreter's teardown: a torchrun worker can still abort there in
    # Gloo's threads (the SIGABRT above) after the group is destroyed and the model written.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
