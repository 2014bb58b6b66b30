"""A two-node DeepSpeed launch, for real: the command `basic stage --dry` prints for `nodes: 2` is started as
two "nodes" of one CPU process each on loopback (gloo), each with its own NODE_RANK, the same MASTER_ADDR
and the hostfile `basic launch hostfile` writes (the SLURM template writes the same from the allocation), and
its losses equal a one-process run of the same global batch (as tests/test_distributed.py checks for the
engine). The backbones are the tiny ones of tests/conftest.py, laid out where the micro profile expects its
backbones and data.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from basic.pipeline import config
from conftest import PARAMS

ROOT = Path(__file__).resolve().parents[1]
RUN = "llava-vicuna-7b"  # a micro run: vicuna-7b + clip-l-336, stage 1

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _project(tmp: Path, backbones: dict, tiny_data: dict, launch: dict, per_device: int) -> Path:
    """A working directory with the micro profile's layout and a params.yaml whose micro profile has `launch`."""
    (tmp / "models" / "backbones").mkdir(parents=True)
    (tmp / "models" / "backbones" / "vicuna-7b").symlink_to(backbones["llama"])
    (tmp / "models" / "backbones" / "clip-l-336").symlink_to(backbones["clip"])
    (tmp / "data" / "micro" / "llava").mkdir(parents=True)
    (tmp / "data" / "micro" / "llava" / "pretrain.json").symlink_to(tiny_data["pretrain"])
    (tmp / "data" / "micro" / "images").symlink_to(tiny_data["images"])
    (tmp / "pipeline").symlink_to(ROOT / "pipeline")
    params = yaml.safe_load(PARAMS.read_text())
    params["profile"] = "micro"
    micro = params["profiles"]["micro"]
    micro["launch"] = launch
    micro["pretrain"].update(
        max_steps=3, per_device_train_batch_size=per_device, lr_scheduler_type="constant"
    )
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp


def _dry(work: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "basic.cli", "stage", "--dry", "pretrain", RUN],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == f"# pretrain@{RUN} (profile micro)"
    return out[1]


def _losses(work: Path) -> list[tuple[int, float]]:
    history = json.loads((work / "models" / RUN / "pretrain" / "trainer_state.json").read_text())[
        "log_history"
    ]
    return [(h["step"], h["loss"]) for h in history if "loss" in h]


def test_two_node_deepspeed_command_starts_and_trains_like_one_process(backbones, tiny_data, tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }

    one = _project(
        tmp_path / "one",
        backbones,
        tiny_data,
        per_device=4,
        launch={
            "launcher": "python",
            "gpus_per_node": 1,
            "nodes": 1,
            "deepspeed": {"pretrain": None, "finetune": None},
        },
    )
    line = _dry(one)
    assert line.startswith("python -m basic.train ")
    subprocess.run(
        ["bash", "-c", line.replace("python", sys.executable, 1)],
        cwd=one,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )

    two = _project(
        tmp_path / "two",
        backbones,
        tiny_data,
        per_device=2,
        launch={
            "launcher": "deepspeed",
            "gpus_per_node": 1,
            "nodes": 2,
            "master_port": _free_port(),
            "deepspeed": {"pretrain": "pipeline/zero2.json", "finetune": None},
        },
    )
    line = _dry(two)
    assert line.startswith("deepspeed --num_gpus 1 --master_port ")
    assert (
        " --hostfile $BASIC_HOSTFILE --num_nodes 2 --node_rank $NODE_RANK --master_addr $MASTER_ADDR --no_ssh "
        in line
    )
    assert config.load(two / "params.yaml").active.launch.world_size == 2
    hostfile = two / "hostfile"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "basic.cli",
            "launch",
            "hostfile",
            "--nodes",
            "2",
            "--gpus-per-node",
            "1",
            "--hosts",
            "node-a",
            "node-b",
            "--out",
            str(hostfile),
        ],
        cwd=two,
        env=env,
        check=True,
    )
    nodes = [
        subprocess.Popen(
            ["bash", "-c", line],
            cwd=two,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**env, "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "BASIC_HOSTFILE": str(hostfile)},
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for rank, (node, output) in enumerate(zip(nodes, outputs)):
        assert node.returncode == 0, f"node {rank}:\n{output[-5000:]}"
        # each node started its own worker, rank `rank` of a world of two
        assert f"nnodes=2, num_local_procs=1, node_rank={rank}" in output and "dist_world_size=2" in output

    a, b = _losses(one), _losses(two)
    assert [step for step, _ in a] == [step for step, _ in b] == [1, 2, 3]
    assert [loss for _, loss in b] == pytest.approx([loss for _, loss in a], rel=2e-5)
