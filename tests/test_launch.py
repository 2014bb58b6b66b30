"""The launch command lines the full profile generates, checked against the real launchers' parsers,
and the SLURM path (sbatch script, submission chains) against a stand-in `sbatch`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from basic.pipeline import launch as L
from basic.pipeline import submit
from conftest import PARAMS

REPO = Path(__file__).resolve().parents[1]
# LLaVA-1.5's scripts/v1_5/pretrain.sh flags (7B), as the full profile passes them to the engine.
PRETRAIN_ARGS = [
    "--model_name_or_path",
    "models/backbones/vicuna-7b",
    "--version",
    "plain",
    "--data_path",
    "data/full/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json",
    "--image_folder",
    "data/full/LLaVA-Pretrain/images",
    "--vision_tower",
    "models/backbones/clip-l-336",
    "--mm_projector_type",
    "mlp2x_gelu",
    "--tune_mm_mlp_adapter",
    "True",
    "--mm_vision_select_layer",
    "-2",
    "--bf16",
    "True",
    "--output_dir",
    "models/llava-7b/pretrain",
    "--num_train_epochs",
    "1",
    "--per_device_train_batch_size",
    "32",
    "--gradient_accumulation_steps",
    "1",
    "--learning_rate",
    "1e-3",
]


def test_stage_1_on_one_8_gpu_node_is_llava_s_deepspeed_zero2_command():
    cmd = L.train_command(L.LaunchSpec(), "pretrain", PRETRAIN_ARGS)
    assert cmd == [
        "deepspeed",
        "--num_gpus",
        "8",
        "--master_port",
        "29500",
        "--module",
        "basic.train",
        *PRETRAIN_ARGS,
        "--deepspeed",
        "pipeline/zero2.json",
    ]
    stage2 = L.train_command(L.LaunchSpec(), "finetune", ["--version", "v1"])
    assert stage2[-2:] == ["--deepspeed", "pipeline/zero3.json"]


def test_every_launcher_s_own_parser_accepts_the_multi_node_command():
    from accelerate.commands.launch import launch_command_parser
    from deepspeed.launcher.runner import parse_args as deepspeed_parse
    from torch.distributed.run import get_args_parser

    def spec(launcher):
        return L.LaunchSpec(launcher=launcher, gpus_per_node=8, nodes=4, master_port=29611)

    def on_node_3(cmd):  # what the shell hands the launcher on node 3
        return [
            {"$NODE_RANK": "3", "$MASTER_ADDR": "gpu-001", "$BASIC_HOSTFILE": "/job/h"}.get(a, a) for a in cmd
        ]

    ds = on_node_3(L.train_command(spec("deepspeed"), "finetune", ["--version", "v1"]))
    a = deepspeed_parse(ds[1:])
    assert (a.num_gpus, a.num_nodes, a.node_rank, a.master_addr, a.master_port) == (8, 4, 3, "gpu-001", 29611)
    assert a.hostfile == "/job/h"  # without one DeepSpeed sees only localhost and refuses 4 nodes
    assert a.no_ssh and a.module and a.user_script == "basic.train"
    assert a.user_args == ["--version", "v1", "--deepspeed", "pipeline/zero3.json"]

    tr = on_node_3(L.train_command(spec("torchrun"), "pretrain", ["--bf16", "True"]))
    a = get_args_parser().parse_args(tr[1:])
    assert (a.nnodes, a.nproc_per_node, a.node_rank, a.master_addr, a.module) == (
        "4",
        "8",
        3,
        "gpu-001",
        True,
    )
    assert a.training_script == "basic.train" and a.training_script_args == [
        "--bf16",
        "True",
        "--deepspeed",
        "pipeline/zero2.json",
    ]

    ac = on_node_3(L.train_command(spec("accelerate"), "pretrain", []))
    assert ac[:2] == ["accelerate", "launch"]
    a = launch_command_parser().parse_args(ac[2:])
    assert (a.num_machines, a.num_processes, a.machine_rank, a.main_process_ip, a.main_process_port) == (
        4,
        32,
        3,
        "gpu-001",
        29611,
    )
    assert a.multi_gpu and a.module and a.training_script == "basic.train"


def test_shell_rendering_quotes_arguments_but_lets_the_shell_expand_rank_and_master():
    cmd = L.train_command(L.LaunchSpec(nodes=2), "pretrain", ["--run_name", "llava 7b; rm -rf /"])
    line = L.to_shell(cmd)
    assert "--node_rank $NODE_RANK --master_addr $MASTER_ADDR" in line and "'llava 7b; rm -rf /'" in line
    out = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {line}"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NODE_RANK": "1", "MASTER_ADDR": "gpu-017"},
    ).stdout.split("\n")
    assert out[out.index("--node_rank") + 1] == "1" and out[out.index("--master_addr") + 1] == "gpu-017"
    assert "llava 7b; rm -rf /" in out


def test_deepspeed_config_flag_is_not_doubled_and_can_be_switched_off():
    own = L.train_command(L.LaunchSpec(), "finetune", ["--deepspeed", "my.json"])
    assert own.count("--deepspeed") == 1 and own[-1] == "my.json"
    cpu = L.LaunchSpec(launcher="python", gpus_per_node=1, deepspeed={"pretrain": None, "finetune": None})
    assert L.train_command(cpu, "pretrain", ["--bf16", "False"]) == [
        "python",
        "-m",
        "basic.train",
        "--bf16",
        "False",
    ]


def test_evaluation_is_data_parallel_on_one_node():
    spec = L.LaunchSpec(nodes=4, gpus_per_node=8)
    args = [
        "--checkpoint",
        "models/basic-7b/finetune",
        "--out",
        "results/metrics/basic-7b.json",
        "--profile",
        "full",
    ]
    assert L.eval_command(spec, args) == ["basic", "evaluate", *args, "--num_processes", "8"]
    assert L.eval_command(spec, [*args, "--num_processes", "2"]).count("--num_processes") == 1
    cmd = L.lmms_eval_command(spec, ["--model", "basic_llava", "--tasks", "gqa"])
    assert cmd == [
        "accelerate",
        "launch",
        "--num_machines",
        "1",
        "--num_processes",
        "8",
        "--main_process_port",
        "29500",
        "--multi_gpu",
        "-m",
        "lmms_eval",
        "--model",
        "basic_llava",
        "--tasks",
        "gqa",
    ]
    cpu = L.LaunchSpec(launcher="python", gpus_per_node=1)
    assert L.lmms_eval_command(cpu, ["--x"]) == ["python", "-m", "lmms_eval", "--x"]
    assert L.eval_command(cpu, ["--x"]) == ["basic", "evaluate", "--x", "--num_processes", "1"]


def test_global_batch_is_kept_on_any_number_of_gpus():
    assert L.batch_args(256, 32, 8) == [
        "--per_device_train_batch_size",
        "32",
        "--gradient_accumulation_steps",
        "1",
    ]
    assert L.batch_args(128, 16, 2) == [
        "--per_device_train_batch_size",
        "16",
        "--gradient_accumulation_steps",
        "4",
    ]
    with pytest.raises(L.LaunchError, match="not a multiple of per-device batch 32 x 16 GPUs"):
        L.batch_args(256, 32, 16)


def test_bad_specs_are_refused_naming_the_field():
    with pytest.raises(L.LaunchError, match="launcher 'mpirun'"):
        L.LaunchSpec(launcher="mpirun")
    with pytest.raises(L.LaunchError, match="nodes must be a positive integer"):
        L.LaunchSpec(nodes=0)
    with pytest.raises(L.LaunchError, match="launcher 'python' runs one process"):
        L.LaunchSpec(launcher="python", gpus_per_node=8)
    with pytest.raises(L.LaunchError, match=r"launch\.full\.gpus: unknown key"):
        L.LaunchSpec.from_dict({"gpus": 8}, where="launch.full")
    with pytest.raises(L.LaunchError, match="stage 'sft'"):
        L.train_command(L.LaunchSpec(), "sft", [])
    spec = L.LaunchSpec.from_dict(
        {"launcher": "torchrun", "nodes": 2, "deepspeed": {"finetune": "pipeline/zero3_offload.json"}}
    )
    assert spec.deepspeed == {"pretrain": "pipeline/zero2.json", "finetune": "pipeline/zero3_offload.json"}


# ---------------------------------------------------------------------------------------------------------
# SLURM


def slurm_spec(tmp_path: Path, **kw) -> L.SlurmSpec:
    return L.SlurmSpec(
        partition="gpu",
        account="proj",
        log_dir=str(tmp_path / "logs"),
        template=str(REPO / L.SBATCH_TEMPLATE),
        setup=("source .venv/bin/activate",),
        **kw,
    )


def test_sbatch_script_runs_one_launcher_per_node_with_its_rank(tmp_path):
    spec = L.LaunchSpec(nodes=2)
    script = L.sbatch_script(
        L.train_command(spec, "pretrain", ["--output_dir", "models/a b"]),
        spec,
        slurm_spec(tmp_path, directives=("--constraint=h100",)),
        "llava-7b.pretrain",
        tmp_path,
    )
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gpus-per-node=8" in script
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --constraint=h100" in script
    assert "#SBATCH --exclusive" in script and "source .venv/bin/activate" in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # valid shell

    # Run the script with stand-ins for scontrol, srun (two "nodes") and deepspeed: each node's launcher
    # gets its own rank and node 0's host.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {
        "scontrol": "echo gpu-001; echo gpu-002",
        "srun": 'for n in 0 1; do SLURM_NODEID=$n "${@: -3}"; done',  # last three args: bash -c CMD
        "deepspeed": f'echo "$@" >> {tmp_path}/launched',
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    (tmp_path / ".venv/bin").mkdir(parents=True)
    (tmp_path / ".venv/bin/activate").write_text("")
    # the venv's `basic` on PATH, as the setup line's `source .venv/bin/activate` would put it
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "gpu-[001-002]",
        "SLURM_JOB_ID": "7",
        "SLURM_JOB_NAME": "t",
        "SLURM_CPUS_ON_NODE": "64",
    }
    env.pop("SLURM_CPUS_PER_TASK", None)
    (bin_dir / "srun").write_text(
        f'#!/bin/bash\necho "$@" > {tmp_path}/srun\nfor n in 0 1; do SLURM_NODEID=$n "${{@: -3}}"; done\n'
    )
    subprocess.run(["bash", "-c", script], env=env, check=True, capture_output=True, text=True)
    hostfile = tmp_path / "logs" / "7.hostfile"
    assert hostfile.read_text() == "gpu-001 slots=8\ngpu-002 slots=8\n"  # the allocation, node-rank order
    lines = (tmp_path / "launched").read_text().splitlines()
    assert len(lines) == 2
    for rank, line in enumerate(lines):
        assert (
            f"--hostfile {hostfile} --num_nodes 2 --node_rank {rank} --master_addr gpu-001 --no_ssh "
            "--module basic.train"
        ) in line
        assert line.endswith("--output_dir models/a b --deepspeed pipeline/zero2.json")
    # every node's task gets the node's CPUs (Slurm >= 22.05 does not pass sbatch's --cpus-per-task on)
    assert "--cpus-per-task=64" in (tmp_path / "srun").read_text()
    env["SLURM_CPUS_PER_TASK"] = "12"
    subprocess.run(["bash", "-c", script], env=env, check=True, capture_output=True, text=True)
    assert "--cpus-per-task=12" in (tmp_path / "srun").read_text()


def test_hostfile_from_a_list_or_the_slurm_allocation(tmp_path, monkeypatch, capsys):
    spec = L.LaunchSpec(nodes=2, gpus_per_node=4)
    assert L.hostfile_text(spec, ["a", "b"]) == "a slots=4\nb slots=4\n"
    with pytest.raises(L.LaunchError, match="1 hosts .a. for nodes=2"):
        L.hostfile_text(spec, ["a"])
    with pytest.raises(L.LaunchError, match="distinct"):
        L.hostfile_text(spec, ["a", "a"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(
        '#!/bin/bash\n[ "$1 $2 $3" = "show hostnames gpu-[7-8]" ] && echo gpu-7 && echo gpu-8\n'
    )
    (bin_dir / "scontrol").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu-[7-8]")
    path = L.write_hostfile(tmp_path / "h" / "hostfile", spec)
    assert path.read_text() == "gpu-7 slots=4\ngpu-8 slots=4\n"
    assert L.main(["hostfile", "--nodes", "2", "--gpus-per-node", "1", "--hosts", "x", "y"]) == 0
    assert capsys.readouterr().out == "x slots=1\ny slots=1\n"
    monkeypatch.delenv("SLURM_JOB_NODELIST")
    assert L.main(["hostfile", "--nodes", "2"]) == 2
    assert "SLURM_JOB_NODELIST is not set" in capsys.readouterr().err


@pytest.fixture
def fake_sbatch(tmp_path):
    """An `sbatch` that logs its arguments and answers job ids 100, 101, ... (fails for scripts marked REFUSE)."""
    path = tmp_path / "sbatch"
    log = tmp_path / "sbatch.log"
    log.touch()
    path.write_text(f"""#!/bin/bash
n=$(wc -l < {log})
echo "$@" >> {log}
if grep -q REFUSE "${{@: -1}}"; then echo "sbatch: error: invalid partition" >&2; exit 1; fi
echo $((100 + n))
""")
    path.chmod(stat.S_IRWXU)
    return path, log


def test_runs_are_submitted_at_once_with_each_run_s_stages_chained(tmp_path, fake_sbatch):
    sbatch, log = fake_sbatch
    spec = L.LaunchSpec(gpus_per_node=8)

    def run(name):
        return [
            L.Job(
                "pretrain",
                tuple(L.train_command(spec, "pretrain", ["--output_dir", f"models/{name}/pretrain"])),
                spec,
            ),
            L.Job(
                "finetune",
                tuple(L.train_command(spec, "finetune", ["--output_dir", f"models/{name}/finetune"])),
                spec,
            ),
            L.Job("evaluate", tuple(L.eval_command(spec, ["--checkpoint", f"models/{name}/finetune"])), spec),
        ]

    ids = L.submit_runs(
        {"llava-7b": run("llava-7b"), "basic-7b": run("basic-7b")},
        slurm_spec(tmp_path),
        sbatch=str(sbatch),
        workdir=tmp_path,
    )
    assert ids == {"llava-7b": ["100", "101", "102"], "basic-7b": ["103", "104", "105"]}
    calls = log.read_text().splitlines()
    assert "--dependency" not in calls[0] and "--dependency" not in calls[3]  # runs start side by side
    assert "--dependency=afterok:100" in calls[1] and "--dependency=afterok:101" in calls[2]
    assert "--dependency=afterok:103" in calls[4]
    assert (tmp_path / "logs/basic-7b.finetune.sbatch").read_text().count("zero3.json") == 1


def test_a_failed_submission_names_the_job(tmp_path, fake_sbatch):
    sbatch, _ = fake_sbatch
    with pytest.raises(
        L.LaunchError, match=r"bad-run\.pretrain: .* failed \(exit 1\): sbatch: error: invalid partition"
    ):
        L.submit("#!/bin/bash\n# REFUSE\n", "bad-run.pretrain", slurm_spec(tmp_path), sbatch=str(sbatch))


def test_command_line_prints_the_command_and_the_script(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert (
        L.main(
            [
                "train",
                "--stage",
                "finetune",
                "--launcher",
                "torchrun",
                "--gpus-per-node",
                "4",
                "--print",
                "--",
                "--version",
                "v1",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == (
        "torchrun --nnodes 1 --nproc_per_node 4 --standalone -m basic.train "
        "--version v1 --deepspeed pipeline/zero3.json"
    )
    assert (
        L.main(["train", "--stage", "pretrain", "--nodes", "2", "--slurm", "--partition", "a100", "--print"])
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "#SBATCH --nodes=2" in out and "#SBATCH --partition=a100" in out and "--node_rank $NODE_RANK" in out
    )
    assert L.main(["train", "--nodes", "2", "--", "--x"]) == 2
    assert "train needs --stage" in capsys.readouterr().err


def test_the_whole_study_is_submitted_at_once_through_basic_stage(tmp_path, fake_sbatch, capsys, monkeypatch):
    """`basic submit`: every run of params.yaml (here switched to the full profile) as three chained
    jobs that run what dvc.yaml runs (`basic stage`), all runs side by side."""
    sbatch, log = fake_sbatch
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.read_text().replace("\nprofile: mini", "\nprofile: full"))
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PATH", f"{sbatch.parent}:{os.environ['PATH']}")
    assert (
        submit.main(["--params", str(params), "--partition", "gpu", "--log-dir", str(tmp_path / "logs")]) == 0
    )
    from basic.pipeline import config

    runs = list(config.load(params).runs)
    calls = log.read_text().splitlines()
    assert len(calls) == 3 * len(runs)
    assert sum("--dependency" not in c for c in calls) == len(runs)  # one chain per run, started together
    first = runs[0]
    pretrain = (tmp_path / f"logs/{first}.pretrain.sbatch").read_text()
    assert (
        f"basic stage pretrain {first} --params {params}" in pretrain
        and "#SBATCH --gpus-per-node=8" in pretrain
    )
    assert "#SBATCH --nodes=1" in (tmp_path / f"logs/{first}.evaluate.sbatch").read_text()
    out = capsys.readouterr().out
    assert f"dvc commit -f pretrain@{first} finetune@{first} evaluate@{first}" in out

    assert submit.main(["--params", str(params), "--runs", "no-such-run", "--print"]) == 2
    assert "no run named 'no-such-run'" in capsys.readouterr().err
