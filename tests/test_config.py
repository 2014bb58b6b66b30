"""params.yaml's strict validation and the stage commands basic.pipeline.config resolves from it."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re

import pytest
import yaml

from basic.pipeline import config
from basic.pipeline.launch import to_shell
from conftest import PARAMS, ROOT


@pytest.fixture(scope="module")
def raw() -> dict:
    return config.read(PARAMS)


@pytest.fixture(scope="module")
def study(raw) -> config.Study:
    return config.parse(raw)


def _error(raw: dict, edit) -> str:
    data = copy.deepcopy(raw)
    edit(data)
    with pytest.raises(config.ConfigError) as info:
        config.parse(data)
    return str(info.value)


def test_live_params_yaml_loads():
    """The study itself (not the tests' frozen copy) passes the strict validation, tables naming its runs."""
    study = config.load(ROOT / "params.yaml")
    assert study.profile in study.profiles
    assert study.tables and all(run in study.runs for runs in study.tables.values() for run in runs)


def test_params_yaml_is_a_valid_study(study):
    assert study.profile == "mini"
    assert set(study.profiles) >= {"mini", "full", "micro"}
    assert set(study.tables) == set(config.TABLES)
    # The shared BASIC Vicuna-7B run is one run (trained once) in the four tables that show it.
    shared = [t for t, runs in study.tables.items() if "basic-vicuna-7b" in runs]
    assert sorted(shared) == [
        "analysis",
        "depth",
        "layer_weights",
        "loss_ablation",
        "main",
        "supervision_strength",
    ]
    assert study.runs["llava-vicuna-7b"].method == config.BASELINE
    assert study.runs["basic-vicuna-7b"].basic_args.basic_sds_weight == 0.01
    # Each run has a distinct definition (a duplicate would be trained twice for nothing).
    defs = [(r.settings, r.seed) for r in study.runs.values()]
    assert all(defs.count(d) == 1 for d in defs)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(colour="red"), "colour: unknown key"),
        (lambda d: d.update(tabels={}), "tabels: unknown key; did you mean tables?"),
        (
            lambda d: d["profiles"]["mini"]["pretrain"].update(learnig_rate=1e-3),
            "profiles.mini.pretrain.learnig_rate: unknown key; did you mean learning_rate?",
        ),
        (
            lambda d: d["profiles"]["mini"]["finetune"].update(batchsize=4),
            "profiles.mini.finetune.batchsize: unknown key",
        ),
        (
            lambda d: d["profiles"]["mini"]["pretrain"].update(max_steps="many"),
            "profiles.mini.pretrain.max_steps: expected int",
        ),
        (
            lambda d: d["profiles"]["mini"]["data"].update({"bench-questionz": 3}),
            "profiles.mini.data.bench-questionz: unknown key; did you mean bench-questions?",
        ),
        (
            lambda d: d["profiles"]["mini"]["backbones"].update({"llm-step": 3}),
            "profiles.mini.backbones.llm-step: unknown key; did you mean llm-steps?",
        ),
        (
            lambda d: d["profiles"]["mini"]["evaluate"].update(batchsize=3),
            "profiles.mini.evaluate.batchsize: unknown key; did you mean batch_size?",
        ),
        (
            lambda d: d["profiles"]["full"]["data"].update(manifest=["full"]),
            "profiles.full.data.manifest: unknown key; did you mean manifests?",
        ),
        (
            lambda d: d["profiles"]["full"]["backbones"].update(onli=["siglip"]),
            "profiles.full.backbones.onli: unknown key; did you mean only?",
        ),
        (
            lambda d: d["profiles"]["mini"]["launch"].update(launchr="torchrun"),
            "profiles.mini.launch.launchr: unknown key; did you mean launcher?",
        ),
        (
            lambda d: d["runs"]["basic-vicuna-7b"].update(finetune={"learning_rat": 1e-3}),
            "runs.basic-vicuna-7b.finetune.learning_rat: unknown key; did you mean learning_rate?",
        ),
        (lambda d: d.pop("tables"), "tables: missing"),
        (lambda d: d.update(profile="huge"), "profile: 'huge' is not one of the profiles"),
        (
            lambda d: d["runs"]["basic-vicuna-7b"].update(sede=1),
            "runs.basic-vicuna-7b.sede: unknown key; did you mean seed?",
        ),
        (
            lambda d: d["runs"]["basic-vicuna-7b"].update(seed="one"),
            "runs.basic-vicuna-7b.seed: expected int",
        ),
        (lambda d: d["runs"]["basic-vicuna-7b"].update(seed=True), "runs.basic-vicuna-7b.seed: expected int"),
        (lambda d: d["runs"]["basic-vicuna-7b"].pop("llm"), "runs.basic-vicuna-7b.llm: missing"),
        (
            lambda d: d["runs"]["basic-vicuna-7b"].update(llm="llama-70b"),
            "runs.basic-vicuna-7b.llm: 'llama-70b' is not in",
        ),
        (
            lambda d: d["runs"]["basic-vicuna-7b"]["basic"].update(das=1.0),
            "runs.basic-vicuna-7b.basic.das: unknown key",
        ),
        (
            lambda d: d["runs"]["basic-vicuna-7b"]["basic"].update(layer_weights="cubic"),
            "runs.basic-vicuna-7b.basic: --basic_layer_weights 'cubic' is not one of",
        ),
        (
            lambda d: d["runs"]["basic-vicuna-7b"].update(finetune={"output_dir": "x"}),
            "runs.basic-vicuna-7b.finetune: output_dir are set by the pipeline",
        ),
        (
            lambda d: (
                d["profiles"]["full"]["pretrain"].update(learning_rate=[1])
                or d["profiles"]["full"]["pretrain"].update(learning_rate={"a": 1})
            ),
            "profiles.full.pretrain.learning_rate: expected",
        ),
        (
            lambda d: d["profiles"]["mini"].update(world="huge"),
            "profiles.mini.world: 'huge' is not one of mini, full",
        ),
        (lambda d: d["profiles"]["mini"]["launch"].update(gpus=2), "profiles.mini.launch.gpus: unknown key"),
        (
            lambda d: d["profiles"]["mini"]["evaluate"].update(benchmarks=["vqav2", "imagenet"]),
            "profiles.mini.evaluate.benchmarks: imagenet not in the mini benchmark map",
        ),
        (
            lambda d: d["profiles"]["full"]["finetune"].update(gradient_accumulation_steps=2),
            "profiles.full.finetune.global_batch_size: give per_device_train_batch_size with it",
        ),
        (
            lambda d: d["tables"]["main"].append("llava-vicuna-70b"),
            "tables.main[8]: no run named 'llava-vicuna-70b'",
        ),
        (lambda d: d["tables"].update(table9=[]), "tables.table9: unknown table"),
        (
            lambda d: d["runs"].update({"basic-phi3-3.8b": d["runs"]["basic-phi3"]}),
            "runs.basic-phi3-3.8b: a run name is",
        ),
        (
            lambda d: d["runs"]["basic-phi3"].update(benchmarks=["mmb_en", "pope"]),
            "runs.basic-phi3.benchmarks: pope not in the mini benchmark map",
        ),
        (
            lambda d: d["runs"]["basic-phi3"].update(benchmarks=[]),
            "runs.basic-phi3.benchmarks: give at least one",
        ),
    ],
)
def test_bad_params_name_the_key(raw, edit, message):
    error = _error(raw, edit)
    assert error.startswith("params.yaml: ")
    assert message in error, error


def test_training_commands_mini(study):
    pre = config.command(study, "pretrain", "basic-vicuna-13b")
    fine = config.command(study, "finetune", "basic-vicuna-13b")
    # both cores: two data-parallel processes, the global batch kept by halving the per-device one
    assert pre[: pre.index("basic.train") + 1] == [
        "torchrun",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "basic.train",
    ]
    pre, fine = pre[pre.index("basic.train") + 1 :], fine[fine.index("basic.train") + 1 :]
    flags = dict(zip(pre[0::2], pre[1::2]))
    assert (flags["--per_device_train_batch_size"], flags["--gradient_accumulation_steps"]) == ("16", "1")
    assert flags["--version"] == "plain" and flags["--tune_mm_mlp_adapter"] == "True"
    assert flags["--model_name_or_path"] == "models/backbones/vicuna-13b"
    assert flags["--vision_tower"] == "models/backbones/clip-l-336"
    assert (
        flags["--data_path"] == "data/mini/llava/pretrain.json"
        and flags["--image_folder"] == "data/mini/images"
    )
    assert flags["--output_dir"] == "models/basic-vicuna-13b/pretrain"
    assert flags["--basic_das_weight"] == "1.0" and flags["--basic_sds_weight"] == "0.01"
    assert "--deepspeed" not in flags
    fine_flags = dict(zip(fine[0::2], fine[1::2]))
    assert fine_flags["--version"] == "v1"
    assert (
        fine_flags["--pretrain_mm_mlp_adapter"] == "models/basic-vicuna-13b/pretrain/mm_projector.safetensors"
    )
    assert fine_flags["--image_aspect_ratio"] == "pad"
    evaluate = config.command(study, "evaluate", "basic-decreasing-vicuna-7b")
    assert evaluate[evaluate.index("--benchmarks") + 1] == "vqav2,mmb_en,mmvet"  # the run's own list
    evaluate = config.command(study, "evaluate", "basic-vicuna-13b")
    assert (
        evaluate[evaluate.index("--benchmarks") + 1] == "vqav2,gqa,sqa_img,mmb_en,mmb_cn,mmvet,vizwiz,textvqa"
    )
    baseline = config.command(study, "finetune", "llava-gemma-2b")
    assert not any(a.startswith("--basic_") for a in baseline)
    assert baseline[baseline.index("--version") + 1] == "gemma"


def test_training_flags_are_the_engines(study):
    """Every flag a profile passes to `basic train` is one of its dataclass fields (a typo fails here, not at run time)."""
    from basic.method.config import BasicArguments
    from basic.train import DataArguments, ModelArguments, TrainingArguments

    known = {
        f.name
        for cls in (ModelArguments, DataArguments, TrainingArguments, BasicArguments)
        for f in dataclasses.fields(cls)
    }
    for profile in study.profiles:
        s = dataclasses.replace(study, profile=profile)
        for stage in ("pretrain", "finetune"):
            argv = config.command(s, stage, "basic-decreasing-vicuna-7b")
            names = {a[2:] for a in argv[argv.index("basic.train") + 1 :] if a.startswith("--")}
            assert names <= known, (profile, stage, names - known)


def test_full_profile_launches(study):
    full = dataclasses.replace(study, profile="full")
    pre = to_shell(config.command(full, "pretrain", "basic-vicuna-7b"))
    fine = to_shell(config.command(full, "finetune", "basic-vicuna-7b"))
    assert pre.startswith("deepspeed --num_gpus 8 --master_port 29500 --module basic.train ")
    assert pre.endswith("--deepspeed pipeline/zero2.json") and fine.endswith(
        "--deepspeed pipeline/zero3.json"
    )
    # LLaVA-1.5's global batches (256, 128) on 8 GPUs, its learning rates and data layout.
    assert "--per_device_train_batch_size 32 --gradient_accumulation_steps 1" in pre
    assert "--per_device_train_batch_size 16 --gradient_accumulation_steps 1" in fine
    assert "--learning_rate 0.001 " in pre and "--learning_rate 2e-05 " in fine
    assert "--data_path data/full/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json" in pre
    assert "--data_path data/full/llava_v1_5_mix665k.json --image_folder data/full " in fine
    assert "--bf16 True" in pre and "--mm_projector_type mlp2x_gelu" in fine
    evaluate = to_shell(config.command(full, "evaluate", "basic-vicuna-7b"))
    assert evaluate.startswith("basic evaluate --checkpoint models/basic-vicuna-7b/finetune ")
    assert "--profile full" in evaluate and evaluate.endswith("--num_processes 8")
    assert config.command(full, "backbones")[:4] == ["basic", "checkpoints", "--dest", "models/backbones"]
    # Fewer GPUs keep the global batch through gradient accumulation.
    four = dataclasses.replace(
        full,
        profiles={
            **full.profiles,
            "full": dataclasses.replace(
                full.profiles["full"],
                launch=dataclasses.replace(full.profiles["full"].launch, gpus_per_node=4),
            ),
        },
    )
    assert "--per_device_train_batch_size 32 --gradient_accumulation_steps 2" in to_shell(
        config.command(four, "pretrain", "basic-vicuna-7b")
    )


def test_analyze_command(study):
    assert config.command(study, "analyze", "basic-k3-vicuna-7b") == [
        "basic",
        "analyze",
        "--checkpoint",
        "models/basic-k3-vicuna-7b/finetune",
        "--data",
        "data/mini",
        "--out",
        "results/analysis/basic-k3-vicuna-7b.json",
        "--profile",
        "mini",
    ]
    full = dataclasses.replace(study, profile="full")
    assert to_shell(config.command(full, "analyze", "basic-vicuna-7b")).endswith(
        "--data data/full --out results/analysis/basic-vicuna-7b.json --profile full"
    )


def test_depth_runs_are_a_quarter_half_three_quarters_and_all_of_the_stand_ins_layers(study):
    from basic.mini.llms import LLM_SPECS

    depth = [study.runs[r] for r in study.tables["depth"] if study.runs[r].method == config.METHOD]
    assert {r.llm for r in depth} == {"vicuna-7b"}
    layers = LLM_SPECS["vicuna-7b"].layers
    ks = sorted({r.basic_args.basic_layers or layers // 2 for r in depth})
    assert ks == [layers // 4, layers // 2, 3 * layers // 4, layers]
    assert set(study.tables["main"]) <= set(
        study.tables["analysis"]
    )  # every Table 1 run with its seeds is analysed


def test_stage_requests_are_checked(study):
    with pytest.raises(config.ConfigError, match="no run named 'nope'"):
        config.command(study, "pretrain", "nope")
    with pytest.raises(config.ConfigError, match="runs per run"):
        config.command(study, "evaluate")
    with pytest.raises(config.ConfigError, match="unknown stage"):
        config.command(study, "deploy", "basic-vicuna-7b")


def test_argv_rendering():
    flags = {"a": True, "b": False, "c": None, "d": [1, "x"], "e": 1e-05, "f": "no"}
    assert config.hf_argv(flags) == [
        "--a",
        "True",
        "--b",
        "False",
        "--d",
        "1",
        "x",
        "--e",
        "1e-05",
        "--f",
        "no",
    ]
    assert config.cli_argv(flags) == ["--a", "--d", "1", "x", "--e", "1e-05", "--f", "no"]


def test_dvc_yaml_paths_are_configs():
    """dvc.yaml declares the paths basic.pipeline.config writes (so a stage cannot write where DVC does not look)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

    def render(path: str) -> str:
        return path.replace("${key}", "RUN").replace("${profile}", "mini")

    assert render(next(iter(stages["evaluate"]["do"]["metrics"][0]))) == str(config.metrics_file("RUN"))
    for stage in ("pretrain", "finetune"):
        do = stages[stage]["do"]
        assert render(next(iter(do["plots"][0]))) == str(config.curves_file("RUN", stage))
        assert render(do["outs"][0]) == str(config.run_dir("RUN") / stage)
        assert do["cmd"] == f"basic stage {stage} ${{key}}"
    analyze = stages["analyze"]
    assert (
        analyze["foreach"] == "${tables.analysis}" and analyze["do"]["cmd"] == "basic stage analyze ${item}"
    )
    assert next(iter(analyze["do"]["metrics"][0])).replace("${item}", "RUN") == str(
        config.analysis_file("RUN")
    )
    assert next(iter(stages["backbones"]["outs"][0])) == str(config.BACKBONES_DIR)
    assert render(next(iter(stages["prepare"]["outs"][0]))) == "data/mini"
    # Every params.yaml key a stage tracks exists, in every profile (DVC fails on a missing one).
    study = config.load(ROOT / "params.yaml")
    raw = config.read(ROOT / "params.yaml")
    for (name, stage), profile in itertools.product(stages.items(), study.profiles):
        for key in (stage.get("do") or stage)["params"]:
            for run in study.runs.values() if "foreach" in stage else [None]:
                path = render(key).replace("mini", profile).replace("RUN", run.name if run else "RUN")
                if run:
                    path = re.sub(r"\$\{item\.(\w+)\}", lambda m, run=run: getattr(run, m.group(1)), path)
                    path = path.replace("${item}", run.name)  # foreach over a list of runs (analyze)
                node = raw
                for part in path.split("."):
                    assert isinstance(node, dict) and part in node, f"{name}: {path}"
                    node = node[part]


def test_stage_dry_prints_every_command(tmp_path, raw, capsys):
    from basic.pipeline import stage

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**raw, "profile": "full"}))
    assert stage.main(["--dry", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert out.count("deepspeed --num_gpus 8") == 2 * len(raw["runs"])
    assert "# evaluate@basic-siglip-vicuna-13b (profile full)" in out
    assert stage.main(["pretrain", "nope", "--params", str(params)]) == 2


def test_full_prepare_names_what_is_missing(tmp_path, raw, monkeypatch, capsys):
    """Until the data is downloaded, the full profile's prepare stage fails saying what is missing and how to get it."""
    from basic.pipeline import prepare

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**raw, "profile": "full"}))
    assert prepare.main([]) == 1
    err = capsys.readouterr().err
    assert "the full profile's data is not complete in data/full/" in err
    assert "[full] LLaVA-Pretrain/blip_laion_cc_sbu_558k.json: not downloaded and verified" in err
    assert "fetch it with: basic download --manifest full --dest data/full" in err
    assert not (tmp_path / "data" / "full").exists()  # checked, never created or deleted


def test_stage_never_deletes_full_checkpoints(tmp_path, study, monkeypatch):
    """The mini backbones stage rebuilds models/backbones, but refuses to delete what `basic checkpoints` fetched."""
    from basic.pipeline import stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models/backbones/vicuna-7b").mkdir(parents=True)
    (tmp_path / "models/backbones/checkpoints.json").write_text("{}")
    with pytest.raises(SystemExit, match="holds the full study's checkpoints"):
        stage.clean_backbones(study)
    stage.clean_backbones(dataclasses.replace(study, profile="full"))  # the full profile keeps them
    assert (tmp_path / "models/backbones/vicuna-7b").is_dir()
    (tmp_path / "models/backbones/checkpoints.json").unlink()
    stage.clean_backbones(study)
    assert not (tmp_path / "models/backbones").exists()
    assert stage.executable(["basic", "train"])[1:] == ["-m", "basic.cli", "train"]


def test_flags_read_from_source_are_the_commands_own():
    """basic.pipeline.flags reads the dataclass fields without importing them; they must be exactly what the
    commands' parsers accept (HfArgumentParser for `basic train`, argparse for the mini commands)."""
    from transformers import HfArgumentParser

    from basic.method.config import BasicArguments
    from basic.mini.cli import backbones_parser, data_parser
    from basic.pipeline import flags
    from basic.train import DataArguments, ModelArguments, TrainingArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments, BasicArguments))
    assert set(flags.train_options()) == {a.dest for a in parser._actions if a.option_strings} - {"help"}
    assert flags.train_options()["learning_rate"].types == (float,)
    assert set(flags.train_options()["basic_layers"].types) == {int, type(None)}
    for read, real in (
        (flags.mini_data_options(), data_parser()),
        (flags.mini_backbones_options(), backbones_parser()),
    ):
        assert read.keys() == flags.parser_options(real).keys()


def test_a_stage_logs_its_output_and_repeats_the_end_of_it_when_it_fails(study, tmp_path, monkeypatch, capfd):
    from basic.pipeline import stage

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        config, "command", lambda *a: ["python", "-c", "print('step 1'); import sys; sys.exit(3)"]
    )
    assert stage.run_stage(study, "evaluate", "llava-vicuna-7b") == 3
    out, err = capfd.readouterr()
    assert "evaluate@llava-vicuna-7b starts" in out and "step 1" in out
    assert "failed (exit 3)" in err and "step 1" in err
    assert (tmp_path / "logs/evaluate@llava-vicuna-7b.log").read_text() == "step 1\n"
