"""params.yaml as typed, frozen dataclasses, validated strictly, and each stage of the study as a command line.

`load(path)` reads params.yaml into a `Study`: the active `profile`, each profile's settings (its world,
the options of the data and backbone commands, LLaVA-1.5's flags per training stage, evaluation, launch
layout), the backbones, the study's runs (encoder, LLM, seed, BASIC settings) and the tables, which name
the runs they show. An unknown key, a missing key or a wrong type is a `ConfigError` naming the key path
(`runs.basic-vicuna-7b.basic.das_weight`).

`command(study, stage, run)` resolves one stage of one run into the argv of the real command line: `basic
mini backbones` / `basic checkpoints`, `basic train` under the profile's launcher (`basic.pipeline.launch`), `basic
evaluate`. The pipeline's stage glue (`basic stage`) runs it; `basic stage --dry` prints every command.
The paths the stages share are functions here, so that dvc.yaml and the commands cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError

from basic.method.config import BasicArguments
from basic.pipeline import flags as flags_
from basic.pipeline.launch import LaunchError, LaunchSpec, batch_args, eval_command, train_command
from basic.schema import build as _build_schema
from basic.schema import check_keys
from basic.schema import check_type as _check_type

PARAMS_FILE = Path("params.yaml")
WORLDS = ("mini", "full")
STAGES = ("backbones", "pretrain", "finetune", "evaluate", "analyze")
# The paper's tables (and `depth`, the ablation it states in words), then `analysis`: the runs whose visual
# embeddings the analyze stage reads (the paper's section 3), a list of runs rather than a table of scores.
TABLES = (
    "main",
    "loss_ablation",
    "cross_model",
    "layer_weights",
    "supervision_strength",
    "depth",
    "analysis",
)
ANALYSIS_TABLE = "analysis"
BASELINE = "llava-1.5"
METHOD = "basic"

BACKBONES_DIR = Path("models/backbones")
METRICS_DIR = Path("results/metrics")
CURVES_DIR = Path("results/curves")
ANALYSIS_DIR = Path("results/analysis")
# Where each world keeps the training data of each stage: (--data_path, --image_folder) under data/<profile>/.
# mini: docs/interfaces.md (basic mini data); full: LLaVA's playground layout (docs/full_study.md).
DATA_LAYOUT = {
    "mini": {"pretrain": ("llava/pretrain.json", "images"), "finetune": ("llava/finetune.json", "images")},
    "full": {
        "pretrain": ("LLaVA-Pretrain/blip_laion_cc_sbu_558k.json", "LLaVA-Pretrain/images"),
        "finetune": ("llava_v1_5_mix665k.json", "."),
    },
}
# Training flags the pipeline sets from the run and the stage; a profile or run may not set them.
PIPELINE_FLAGS = frozenset(
    {
        "model_name_or_path",
        "vision_tower",
        "version",
        "data_path",
        "image_folder",
        "output_dir",
        "seed",
        "tune_mm_mlp_adapter",
        "pretrain_mm_mlp_adapter",
        "deepspeed",
        *(f.name for f in fields(BasicArguments)),
    }
)
GLOBAL_BATCH = (
    "global_batch_size"  # a stage key that is not a LLaVA flag: per-device batch x accumulation x GPUs
)
RUN_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a DVC key path (no dots) and a folder name


class ConfigError(ValueError):
    """params.yaml is not a study this code can run; the message names the key path."""


Value = str | int | float | bool | None
Flags = dict[str, Value | list[Value]]


@dataclass(frozen=True)
class Profile:
    """How the study runs at one scale."""

    world: str
    """mini: the generated world and mini backbones (basic.mini) | full: the real data and checkpoints."""
    data: Flags
    """mini: options of `basic mini data`; full: `manifests` whose files `basic prepare` checks."""
    backbones: Flags
    """mini: options of `basic mini backbones`; full: options of `basic checkpoints`."""
    pretrain: Flags
    """LLaVA-1.5's flags of stage 1 (scripts/v1_5/pretrain.sh), optionally with `global_batch_size`."""
    finetune: Flags
    """LLaVA-1.5's flags of stage 2 (scripts/v1_5/finetune.sh), optionally with `global_batch_size`."""
    evaluate: Flags
    """Options of `basic evaluate` (benchmarks, batch_size, ...)."""
    launch: LaunchSpec
    """Processes per run: launcher, GPUs per node, nodes, DeepSpeed config per stage (basic.pipeline.launch)."""
    env: dict[str, str]
    """Environment of the stage commands, e.g. OMP_NUM_THREADS (one thread per process on a small CPU)."""


@dataclass(frozen=True)
class FullData:
    """The full world's `data` block: the manifests whose files `basic prepare` checks (basic.full.download)."""

    manifests: list[str]


@dataclass(frozen=True)
class Backbones:
    encoders: list[str]
    llms: dict[str, str]
    """LLM name -> conversation template of stage 2 (basic.data.templates)."""


@dataclass(frozen=True)
class Run:
    """One trained model of the study: its backbones, seed and BASIC settings (none: the LLaVA-1.5 baseline)."""

    name: str
    encoder: str
    llm: str
    seed: int = 0
    basic: Flags = field(default_factory=dict)
    """BASIC settings: BasicArguments' fields without the `basic_` prefix; missing ones take its defaults."""
    pretrain: Flags = field(default_factory=dict)
    """Stage-1 flags of this run only, over the profile's."""
    finetune: Flags = field(default_factory=dict)
    """Stage-2 flags of this run only, over the profile's."""
    benchmarks: list[str] | None = None
    """What to evaluate this run on (default: the profile's `evaluate.benchmarks`), e.g. only its tables' columns."""

    @property
    def basic_args(self) -> BasicArguments:
        return BasicArguments(**{f"basic_{k}": v for k, v in self.basic.items()})

    @property
    def method(self) -> str:
        return METHOD if self.basic_args.enabled else BASELINE

    @property
    def settings(self) -> dict[str, Any]:
        """Everything that defines the model except the seed: runs equal here are seeds of one setting."""
        args = self.basic_args
        return {
            "encoder": self.encoder,
            "llm": self.llm,
            "method": self.method,
            **({k.removeprefix("basic_"): v for k, v in vars(args).items()} if args.enabled else {}),
            "pretrain": dict(sorted(self.pretrain.items())),
            "finetune": dict(sorted(self.finetune.items())),
        }


@dataclass(frozen=True)
class Study:
    profile: str
    profiles: dict[str, Profile]
    backbones: Backbones
    runs: dict[str, Run]
    tables: dict[str, list[str]]

    @property
    def active(self) -> Profile:
        return self.profiles[self.profile]

    @property
    def data_dir(self) -> Path:
        return Path("data") / self.profile

    def run(self, name: str) -> Run:
        if name not in self.runs:
            raise ConfigError(f"runs: no run named {name!r} (runs: {', '.join(self.runs)})")
        return self.runs[name]


# ---------------------------------------------------------------------------------------------------------
# Strict loading


def check(value: Any, tp: Any, path: str) -> Any:
    return _check_type(value, tp, path, ConfigError)


def build(cls: type, data: Any, path: str, **given: Any) -> Any:
    return _build_schema(cls, data, path, ConfigError, **given)


def _stage_flags(flags: Flags, path: str) -> None:
    """A training block: `basic train`'s flags (plus `global_batch_size`), none the pipeline sets itself."""
    flags_.check(
        {k: v for k, v in flags.items() if k != GLOBAL_BATCH}, flags_.train_options(), path, ConfigError
    )
    check(flags.get(GLOBAL_BATCH), int | None, f"{path}.{GLOBAL_BATCH}")
    reserved = sorted(set(flags) & PIPELINE_FLAGS)
    if reserved:
        raise ConfigError(
            f"{path}: {', '.join(reserved)} are set by the pipeline from the run (see basic.pipeline.config)"
        )
    if GLOBAL_BATCH in flags and (
        "per_device_train_batch_size" not in flags or "gradient_accumulation_steps" in flags
    ):
        raise ConfigError(
            f"{path}.{GLOBAL_BATCH}: give per_device_train_batch_size with it, and no "
            "gradient_accumulation_steps (it follows from the GPUs)"
        )


def _profile(data: Any, path: str) -> Profile:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {data!r}")
    launch = data.get("launch")
    try:
        spec = LaunchSpec.from_dict(launch, where=f"{path}.launch") if isinstance(launch, dict) else None
    except LaunchError as e:
        raise ConfigError(str(e)) from None
    except TypeError as e:
        raise ConfigError(f"{path}.launch: {e}") from None
    if spec is None:
        raise ConfigError(
            f"{path}.launch: expected a mapping (launcher, gpus_per_node, nodes, ...), got {launch!r}"
        )
    profile = build(Profile, {k: v for k, v in data.items() if k != "launch"}, path, launch=spec)
    if profile.world not in WORLDS:
        raise ConfigError(f"{path}.world: {profile.world!r} is not one of {', '.join(WORLDS)}")
    for stage in ("pretrain", "finetune"):
        _stage_flags(getattr(profile, stage), f"{path}.{stage}")
    _command_flags(profile, path)
    benchmarks = profile.evaluate.get("benchmarks")
    if not isinstance(benchmarks, list) or not benchmarks:
        raise ConfigError(f"{path}.evaluate.benchmarks: expected a non-empty list of benchmark names")
    unknown = [b for b in benchmarks if b not in _benchmark_names(profile.world)]
    if unknown:
        raise ConfigError(
            f"{path}.evaluate.benchmarks: {', '.join(map(str, unknown))} not in the {profile.world} "
            f"benchmark map ({', '.join(_benchmark_names(profile.world))})"
        )
    return profile


def _command_flags(profile: Profile, path: str) -> None:
    """The data, backbones and evaluate blocks: the options of the commands they are passed to."""
    from basic.eval.options import build_parser as evaluate_parser  # argparse and yaml only: cheap

    if profile.world == "mini":
        flags_.check(profile.data, flags_.mini_data_options(), f"{path}.data", ConfigError)
        flags_.check(profile.backbones, flags_.mini_backbones_options(), f"{path}.backbones", ConfigError)
    else:
        from basic.full.checkpoints import build_parser as checkpoints_parser
        from basic.full.checkpoints import load_backbones

        build(FullData, profile.data, f"{path}.data")
        flags_.check(
            profile.backbones,
            flags_.parser_options(checkpoints_parser(load_backbones())),
            f"{path}.backbones",
            ConfigError,
        )
    # `benchmarks` is a list here (checked against the benchmark map below), comma-joined on the command line.
    flags_.check(
        {k: v for k, v in profile.evaluate.items() if k != "benchmarks"},
        flags_.parser_options(evaluate_parser()),
        f"{path}.evaluate",
        ConfigError,
    )


def _benchmark_names(world: str) -> list[str]:
    from basic.eval.benchmarks import benchmark_map  # yaml only: cheap

    return list(benchmark_map(world))


def _run(name: str, data: Any, backbones: Backbones) -> Run:
    path = f"runs.{name}"
    if not RUN_NAME.fullmatch(name):
        raise ConfigError(
            f"{path}: a run name is letters, digits, '-' and '_' only (it is a DVC key path and a folder)"
        )
    run = build(Run, data, path, name=name)
    if run.encoder not in backbones.encoders:
        raise ConfigError(
            f"{path}.encoder: {run.encoder!r} is not in backbones.encoders ({', '.join(backbones.encoders)})"
        )
    if run.llm not in backbones.llms:
        raise ConfigError(f"{path}.llm: {run.llm!r} is not in backbones.llms ({', '.join(backbones.llms)})")
    check_keys(
        run.basic,
        [f.name.removeprefix("basic_") for f in fields(BasicArguments)],
        f"{path}.basic",
        error=ConfigError,
    )
    try:
        _ = run.basic_args  # builds and validates the method's arguments
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}.basic: {e}") from None
    for stage in ("pretrain", "finetune"):
        _stage_flags(getattr(run, stage), f"{path}.{stage}")
    if run.benchmarks is not None and not run.benchmarks:
        raise ConfigError(
            f"{path}.benchmarks: give at least one benchmark, or leave it out for the profile's"
        )
    return run


def parse(data: Any, where: str = str(PARAMS_FILE)) -> Study:
    """A Study from params.yaml's content; errors name `where` and the key path."""
    try:
        if not isinstance(data, dict):
            raise ConfigError(f"expected a mapping at the top, got {data!r}")
        known = [f.name for f in fields(Study)]
        check_keys(data, known, "", known, ConfigError)
        profile = check(data["profile"], str, "profile")
        profiles = {
            name: _profile(p, f"profiles.{name}")
            for name, p in check(data["profiles"], dict[str, Any], "profiles").items()
        }
        if profile not in profiles:
            raise ConfigError(f"profile: {profile!r} is not one of the profiles ({', '.join(profiles)})")
        backbones = build(Backbones, data["backbones"], "backbones")
        runs = {
            name: _run(name, r, backbones) for name, r in check(data["runs"], dict[str, Any], "runs").items()
        }
        tables = check(data["tables"], dict[str, list[str]], "tables")
        for table, names in tables.items():
            if table not in TABLES:
                raise ConfigError(f"tables.{table}: unknown table (tables: {', '.join(TABLES)})")
            for i, name in enumerate(names):
                if name not in runs:
                    raise ConfigError(f"tables.{table}[{i}]: no run named {name!r}")
        for run in runs.values():
            for name, prof in profiles.items():
                unknown = sorted(set(run.benchmarks or ()) - set(_benchmark_names(prof.world)))
                if unknown:
                    raise ConfigError(
                        f"runs.{run.name}.benchmarks: {', '.join(unknown)} not in the {prof.world} benchmark "
                        f"map (profile {name})"
                    )
        return Study(profile, profiles, backbones, runs, tables)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def read(path: str | Path = PARAMS_FILE) -> Any:
    """params.yaml's content as DVC reads it: YAML 1.2 (ruamel), where `no` is a string and `1e-3` a number."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found (run from the repository root, or pass --params)")
    try:
        return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    except YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def load(path: str | Path = PARAMS_FILE) -> Study:
    return parse(read(path), str(path))


# ---------------------------------------------------------------------------------------------------------
# Paths and commands


def run_dir(run: str) -> Path:
    return Path("models") / run


def metrics_file(run: str) -> Path:
    return METRICS_DIR / f"{run}.json"


def curves_file(run: str, stage: str) -> Path:
    return CURVES_DIR / run / f"{stage}.json"


def _text(value: Value) -> str:
    if isinstance(value, bool):
        return str(value)  # HfArgumentParser reads True / False
    return repr(value) if isinstance(value, float) else str(value)


def hf_argv(flags: Mapping[str, Value | list[Value]]) -> list[str]:
    """`--name value` for HfArgumentParser (basic train); lists as several values, null flags left out."""
    argv: list[str] = []
    for name, value in flags.items():
        if value is None:
            continue
        argv += [f"--{name}", *map(_text, value)] if isinstance(value, list) else [f"--{name}", _text(value)]
    return argv


def cli_argv(flags: Mapping[str, Value | list[Value]]) -> list[str]:
    """argparse style (basic mini ..., basic evaluate): keys are the flags' own names, true booleans bare flags,
    lists several values (nargs), null and false left out."""
    argv: list[str] = []
    for name, value in flags.items():
        if value is None or value is False:
            continue
        argv += (
            [f"--{name}"]
            if value is True
            else [f"--{name}", *map(_text, value if isinstance(value, list) else [value])]
        )
    return argv


def train_flags(study: Study, stage: str, run: Run) -> list[str]:
    """`basic train`'s flags for one stage of one run: the profile's, the run's, then what the run defines."""
    profile = study.active
    flags: Flags = {**getattr(profile, stage), **getattr(run, stage)}
    argv = []
    if GLOBAL_BATCH in flags:
        global_batch = flags.pop(GLOBAL_BATCH)
        per_device = flags.pop("per_device_train_batch_size")
        try:
            argv += batch_args(int(global_batch), int(per_device), profile.launch.world_size)
        except LaunchError as e:
            raise ConfigError(f"profiles.{study.profile}.{stage}.{GLOBAL_BATCH}: {e}") from None
    data_path, image_folder = DATA_LAYOUT[profile.world][stage]
    out = run_dir(run.name)
    pipeline: Flags = {
        "model_name_or_path": str(BACKBONES_DIR / run.llm),
        "vision_tower": str(BACKBONES_DIR / run.encoder),
        "version": "plain" if stage == "pretrain" else study.backbones.llms[run.llm],
        "data_path": str(study.data_dir / data_path),
        "image_folder": str(study.data_dir / image_folder),
        "output_dir": str(out / stage),
        "seed": run.seed,
    }
    if stage == "pretrain":
        pipeline["tune_mm_mlp_adapter"] = True
    else:
        pipeline["pretrain_mm_mlp_adapter"] = str(out / "pretrain" / "mm_projector.safetensors")
    basic = {f"basic_{k}": v for k, v in run.basic.items()}
    return hf_argv(pipeline) + hf_argv(flags) + argv + hf_argv(basic)


def command(study: Study, stage: str, run_name: str | None = None) -> list[str]:
    """The argv of one stage (of one run, for the run stages) in the active profile."""
    profile = study.active
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    if stage == "backbones":
        if run_name is not None:
            raise ConfigError("the backbones stage is shared by every run: give no run")
        if profile.world == "mini":
            return [
                "basic",
                "mini",
                "backbones",
                "--data",
                str(study.data_dir),
                "--out",
                str(BACKBONES_DIR),
                *cli_argv(profile.backbones),
            ]
        return ["basic", "checkpoints", "--dest", str(BACKBONES_DIR), *cli_argv(profile.backbones)]
    if run_name is None:
        raise ConfigError(f"the {stage} stage runs per run: name one ({', '.join(study.runs)})")
    run = study.run(run_name)
    if stage == "analyze":
        return analyze_command(study, run.name)
    if stage == "evaluate":
        return eval_command(
            profile.launch,
            [
                "--checkpoint",
                str(run_dir(run.name) / "finetune"),
                "--out",
                str(metrics_file(run.name)),
                "--profile",
                profile.world,
                "--data",
                str(study.data_dir),
                "--log_dir",
                str(run_dir(run.name) / "evaluate"),
                *cli_argv(
                    {
                        **profile.evaluate,
                        "benchmarks": ",".join(run.benchmarks or profile.evaluate["benchmarks"]),
                    }
                ),
            ],
        )
    return train_command(profile.launch, stage, train_flags(study, stage, run))


# ---------------------------------------------------------------------------------------------------------
# The embedding analysis (the paper's section 3): `basic analyze` on a run's stage-2 checkpoint


def analysis_file(run: str) -> Path:
    return ANALYSIS_DIR / f"{run}.json"


def analyze_command(study: Study, run_name: str) -> list[str]:
    """`basic analyze` of one run's stage-2 checkpoint in the active profile (its defaults: 300 held-out mini
    images, or the paper's 30 at full scale), one process: it reads hidden states, no training launch."""
    run = study.run(run_name)
    return [
        "basic",
        "analyze",
        "--checkpoint",
        str(run_dir(run.name) / "finetune"),
        "--data",
        str(study.data_dir),
        "--out",
        str(analysis_file(run.name)),
        "--profile",
        study.active.world,
    ]
