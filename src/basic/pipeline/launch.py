"""Launch command lines for the study's stages, from a small typed spec; optional SLURM submission.

`train_command(spec, stage, args)` and `eval_command(spec, args)` are pure functions from a `LaunchSpec`
(launcher, GPUs per node, nodes, DeepSpeed config per stage) to an argv list; `to_shell` renders one for a
shell (DVC's `cmd`, an sbatch script), leaving `$NODE_RANK` and `$MASTER_ADDR` for the shell to expand.
Training follows LLaVA-1.5: DeepSpeed ZeRO-2 for stage 1 (`pipeline/zero2.json`), ZeRO-3 for stage 2
(`pipeline/zero3.json`), passed as the training script's `--deepspeed` flag so that every launcher
(`deepspeed`, `torchrun`, `accelerate launch`) runs the same Trainer code path. Evaluation runs data
parallel on one node: `basic evaluate --num_processes N` (which starts `accelerate launch -m lmms_eval`
itself and writes the metrics JSON), or plain lmms-eval through `lmms_eval_command`.

On more than one node, every node runs the same command with its own `NODE_RANK` (0..nodes-1) and the
same `MASTER_ADDR` (node 0's host). The DeepSpeed launcher also needs the job's nodes as a hostfile
(`host slots=<GPUs>` per line, node-rank order): its command reads `--hostfile $BASIC_HOSTFILE` and, with
`--no_ssh`, starts only its own node's workers (without a hostfile it sees only localhost and refuses more
than one node). `write_hostfile` writes one from an explicit host list or from SLURM's allocation
(`scontrol show hostnames`); `basic launch hostfile` is its command line. torchrun and accelerate need no
hostfile. `sbatch_script` wraps a command in `pipeline/slurm/stage.sbatch` (one task per node with all
its CPUs, `NODE_RANK`, `MASTER_ADDR` and `BASIC_HOSTFILE` set from SLURM) and `submit` hands it to
`sbatch`, chaining a run's stages with `afterok` dependencies, so independent runs of the study run on
different nodes at once.

Command line: `basic launch train --stage pretrain --launcher deepspeed --gpus-per-node 8 -- <train flags>`
prints (`--print`), runs, or submits (`--slurm ...`) the command; `basic submit` (basic.pipeline.submit)
submits every run of params.yaml at once.
`basic launch hostfile --nodes 2 --gpus-per-node 8 [--hosts gpu-1 gpu-2] [--out FILE]` writes a hostfile.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from string import Template
from typing import Any

from basic.schema import check_keys

LAUNCHERS = ("deepspeed", "torchrun", "accelerate", "python")
STAGES = ("pretrain", "finetune")
DEEPSPEED_CONFIGS = {"pretrain": "pipeline/zero2.json", "finetune": "pipeline/zero3.json"}
TRAIN_MODULE = "basic.train"
EVAL_MODULE = "lmms_eval"
NODE_RANK = "$NODE_RANK"
MASTER_ADDR = "$MASTER_ADDR"
HOSTFILE_ENV = "BASIC_HOSTFILE"
HOSTFILE = f"${HOSTFILE_ENV}"
SBATCH_TEMPLATE = Path("pipeline/slurm/stage.sbatch")


class LaunchError(ValueError):
    """A launch spec or request that cannot work; the message names the field."""


@dataclass(frozen=True)
class LaunchSpec:
    """How one run's processes are laid out: launcher, GPUs per node, nodes, DeepSpeed config per stage."""

    launcher: str = "deepspeed"
    gpus_per_node: int = 8
    nodes: int = 1
    master_port: int = 29500
    deepspeed: Mapping[str, str | None] = field(default_factory=lambda: dict(DEEPSPEED_CONFIGS))
    """Stage -> DeepSpeed config passed as `--deepspeed` (None: plain DDP / one process)."""

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise LaunchError(f"launcher {self.launcher!r} is not one of {', '.join(LAUNCHERS)}")
        for name in ("gpus_per_node", "nodes", "master_port"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LaunchError(f"{name} must be a positive integer, got {value!r}")
        if self.launcher == "python" and (self.nodes, self.gpus_per_node) != (1, 1):
            raise LaunchError(
                "launcher 'python' runs one process: use gpus_per_node 1 and nodes 1, "
                "or deepspeed / torchrun / accelerate for more"
            )
        unknown = set(self.deepspeed) - set(STAGES)
        if unknown:
            raise LaunchError(
                f"deepspeed: unknown stage(s) {', '.join(sorted(unknown))} (stages: {', '.join(STAGES)})"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "launch") -> LaunchSpec:
        """From params (e.g. params.yaml's launch section); unknown keys are errors."""
        data = dict(data)
        if "deepspeed" in data:
            data["deepspeed"] = {**DEEPSPEED_CONFIGS, **(data["deepspeed"] or {})}
        return cls(**check_keys(data, [f.name for f in fields(cls)], where, error=LaunchError))

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


def launcher_argv(spec: LaunchSpec, module: str) -> list[str]:
    """The launcher's part of a command: everything before the module's own flags."""
    multi = spec.nodes > 1
    if spec.launcher == "python":
        return ["python", "-m", module]
    if spec.launcher == "deepspeed":
        argv = ["deepspeed", "--num_gpus", str(spec.gpus_per_node), "--master_port", str(spec.master_port)]
        if (
            multi
        ):  # each node launches its own workers (no ssh/pdsh from node 0), the hostfile says how many nodes
            argv += [
                "--hostfile",
                HOSTFILE,
                "--num_nodes",
                str(spec.nodes),
                "--node_rank",
                NODE_RANK,
                "--master_addr",
                MASTER_ADDR,
                "--no_ssh",
            ]
        return argv + ["--module", module]
    if spec.launcher == "torchrun":
        argv = ["torchrun", "--nnodes", str(spec.nodes), "--nproc_per_node", str(spec.gpus_per_node)]
        if multi:
            argv += [
                "--master_port",
                str(spec.master_port),
                "--node_rank",
                NODE_RANK,
                "--master_addr",
                MASTER_ADDR,
            ]
        else:  # a free local port of its own, so that runs side by side on one machine cannot collide
            argv.append("--standalone")
        return argv + ["-m", module]
    argv = [
        "accelerate",
        "launch",
        "--num_machines",
        str(spec.nodes),
        "--num_processes",
        str(spec.world_size),
        "--main_process_port",
        str(spec.master_port),
    ]
    if spec.world_size > 1:
        argv.append("--multi_gpu")
    if multi:
        argv += ["--machine_rank", NODE_RANK, "--main_process_ip", MASTER_ADDR]
    return argv + ["-m", module]


def slurm_hosts(nodelist: str | None = None) -> list[str]:
    """The hosts of the SLURM allocation (`$SLURM_JOB_NODELIST` expanded by `scontrol show hostnames`)."""
    nodelist = nodelist or os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise LaunchError(
            "no hosts given and SLURM_JOB_NODELIST is not set: pass the hosts (--hosts) or run "
            "inside a SLURM allocation"
        )
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        raise LaunchError(f"scontrol show hostnames {nodelist} failed: {e}") from None
    return out.stdout.split()


def hostfile_text(spec: LaunchSpec, hosts: Sequence[str] | None = None) -> str:
    """DeepSpeed's hostfile of `spec`'s nodes: one `host slots=<GPUs per node>` line each, in node-rank order;
    the hosts are `hosts`, else SLURM's allocation, and must be `spec.nodes` distinct names."""
    hosts = list(hosts) if hosts else slurm_hosts()
    if len(hosts) != spec.nodes or len(set(hosts)) != len(hosts):
        raise LaunchError(
            f"hostfile: {len(hosts)} hosts ({', '.join(hosts)}) for nodes={spec.nodes}; "
            "give one distinct host per node"
        )
    return "".join(f"{host} slots={spec.gpus_per_node}\n" for host in hosts)


def write_hostfile(path: str | Path, spec: LaunchSpec, hosts: Sequence[str] | None = None) -> Path:
    """Write `hostfile_text(spec, hosts)` to `path`, through a temporary name, so that nodes writing it at
    once cannot tear it."""
    text = hostfile_text(spec, hosts)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def train_command(
    spec: LaunchSpec, stage: str, train_args: Sequence[str], module: str = TRAIN_MODULE
) -> list[str]:
    """argv that trains `stage` (pretrain | finetune) with `train_args` (LLaVA's flags) under `spec`."""
    if stage not in STAGES:
        raise LaunchError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
    args = list(train_args)
    config = spec.deepspeed.get(stage)
    if config and not any(a == "--deepspeed" or a.startswith("--deepspeed=") for a in args):
        args += ["--deepspeed", config]
    return launcher_argv(spec, module) + args


def eval_command(spec: LaunchSpec, eval_args: Sequence[str]) -> list[str]:
    """argv of `basic evaluate` data parallel over one node's GPUs: it runs lmms-eval under
    `accelerate launch --num_processes N` itself (one process on CPU) and writes the metrics JSON."""
    args = list(eval_args)
    if not any(a == "--num_processes" or a.startswith("--num_processes=") for a in args):
        args += ["--num_processes", str(spec.gpus_per_node)]
    return ["basic", "evaluate", *args]


def lmms_eval_command(spec: LaunchSpec, lmms_eval_args: Sequence[str]) -> list[str]:
    """argv of plain lmms-eval (`accelerate launch -m lmms_eval`), data parallel over one node's GPUs."""
    if spec.launcher == "python":
        return ["python", "-m", EVAL_MODULE, *lmms_eval_args]
    one_node = LaunchSpec(
        launcher="accelerate",
        gpus_per_node=spec.gpus_per_node,
        nodes=1,
        master_port=spec.master_port,
        deepspeed={},
    )
    return launcher_argv(one_node, EVAL_MODULE) + list(lmms_eval_args)


def batch_args(global_batch: int, per_device: int, world_size: int) -> list[str]:
    """Per-device batch and accumulation that keep LLaVA's global batch on `world_size` GPUs (its README:
    global batch = per_device x accumulation x GPUs; 256 for stage 1, 128 for stage 2)."""
    if global_batch % (per_device * world_size):
        raise LaunchError(
            f"global batch {global_batch} is not a multiple of per-device batch {per_device} x "
            f"{world_size} GPUs; choose a per-device batch that divides {global_batch // world_size}"
            if global_batch % world_size == 0
            else f"global batch {global_batch} cannot be split over {world_size} GPUs"
        )
    return [
        "--per_device_train_batch_size",
        str(per_device),
        "--gradient_accumulation_steps",
        str(global_batch // (per_device * world_size)),
    ]


_ENV_REF = re.compile(r"\$(\w+|\{\w+\})")


def to_shell(argv: Sequence[str]) -> str:
    """One shell line: tokens quoted, except bare `$VAR` references, which the running shell expands."""
    return " ".join(a if _ENV_REF.fullmatch(a) else shlex.quote(a) for a in argv)


# ---------------------------------------------------------------------------------------------------------
# SLURM


@dataclass(frozen=True)
class SlurmSpec:
    """Cluster settings for sbatch; None leaves a directive to the cluster's default."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "24:00:00"
    cpus_per_task: int | None = None
    mem: str | None = None
    exclusive: bool = True
    log_dir: str = "logs/slurm"
    directives: tuple[str, ...] = ()
    """Extra `#SBATCH` options, e.g. `--constraint=a100` (without the `#SBATCH` prefix)."""
    setup: tuple[str, ...] = ()
    """Shell lines run before the command on the first node, e.g. `source .venv/bin/activate`."""
    template: str = str(SBATCH_TEMPLATE)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "slurm") -> SlurmSpec:
        data = dict(data)
        for key in ("directives", "setup"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**check_keys(data, [f.name for f in fields(cls)], where, error=LaunchError))


class _Template(Template):
    delimiter = "@@"


def sbatch_script(
    command: Sequence[str],
    spec: LaunchSpec,
    slurm: SlurmSpec,
    job_name: str,
    workdir: str | Path = ".",
    gpus: bool = True,
) -> str:
    """The sbatch script that runs `command` on `spec.nodes` nodes, one launcher task per node."""
    template = Path(slurm.template)
    if not template.is_file():
        raise LaunchError(
            f"sbatch template {template} not found (run from the repository root or pass --template)"
        )
    directives = [f"--gpus-per-node={spec.gpus_per_node}"] if gpus else []
    directives += [
        f"--{key}={value}"
        for key, value in (
            ("partition", slurm.partition),
            ("account", slurm.account),
            ("qos", slurm.qos),
            ("cpus-per-task", slurm.cpus_per_task),
            ("mem", slurm.mem),
        )
        if value is not None
    ]
    directives += ["--exclusive"] * slurm.exclusive + [
        d.removeprefix("#SBATCH ").strip() for d in slurm.directives
    ]
    per_node = f"export NODE_RANK=$SLURM_NODEID; exec {to_shell(command)}"
    try:
        return _Template(template.read_text()).substitute(
            job_name=job_name,
            nodes=spec.nodes,
            slots=spec.gpus_per_node,
            time=slurm.time,
            log_dir=slurm.log_dir,
            hostfile_dir=shlex.quote(str(Path(workdir).resolve() / slurm.log_dir)),
            directives="\n".join(f"#SBATCH {d}" for d in directives),
            workdir=shlex.quote(str(Path(workdir).resolve())),
            setup="\n".join(slurm.setup),
            command=shlex.quote(per_node),
        )
    except (KeyError, ValueError) as e:
        raise LaunchError(f"sbatch template {template}: unknown or malformed placeholder {e}") from None


def submit(
    script: str,
    job_name: str,
    slurm: SlurmSpec,
    after: Sequence[str] = (),
    wait: bool = False,
    sbatch: str = "sbatch",
) -> str:
    """Write the script under `slurm.log_dir` and submit it; return the job id. `after`: job ids that must
    succeed first (`afterok`); `wait`: block until the job ends and fail if it failed (for a DVC stage)."""
    log_dir = Path(slurm.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{job_name}.sbatch"
    path.write_text(script)
    argv = [sbatch, "--parsable"]
    if after:
        argv.append("--dependency=afterok:" + ":".join(after))
    if wait:
        argv.append("--wait")
    proc = subprocess.run([*argv, str(path)], capture_output=True, text=True, check=False)
    job_id = proc.stdout.strip().splitlines()[0].split(";")[0] if proc.stdout.strip() else ""
    if proc.returncode != 0:
        raise LaunchError(
            f"{job_name}: {' '.join(argv)} {path} failed (exit {proc.returncode}"
            f"{', job ' + job_id if job_id else ''}): {proc.stderr.strip()}; log in {log_dir}"
        )
    if not job_id.isdigit():
        raise LaunchError(f"{job_name}: sbatch answered {proc.stdout!r}, expected a job id")
    return job_id


@dataclass(frozen=True)
class Job:
    """One stage of one run, for `submit_runs`."""

    name: str
    command: tuple[str, ...]
    spec: LaunchSpec
    gpus: bool = True


def submit_runs(
    runs: Mapping[str, Sequence[Job]], slurm: SlurmSpec, sbatch: str = "sbatch", workdir: str | Path = "."
) -> dict[str, list[str]]:
    """Submit every run's stages at once: stages of a run are chained (`afterok`), runs are independent,
    so SLURM places them on different nodes side by side. Returns run -> job ids."""
    ids: dict[str, list[str]] = {}
    for run, jobs in runs.items():
        ids[run] = []
        for job in jobs:
            script = sbatch_script(job.command, job.spec, slurm, f"{run}.{job.name}", workdir, job.gpus)
            ids[run].append(submit(script, f"{run}.{job.name}", slurm, after=ids[run][-1:], sbatch=sbatch))
    return ids


# ---------------------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="basic launch",
        description=__doc__.split("\n\n")[0],
        epilog="Everything after `--` goes to the launched module.",
    )
    p.add_argument(
        "what",
        choices=("train", "evaluate", "lmms-eval", "hostfile"),
        help="train: basic.train; evaluate: basic evaluate; lmms-eval: accelerate launch -m lmms_eval; "
        "hostfile: write the DeepSpeed hostfile of a multi-node run (--hosts, else the SLURM allocation)",
    )
    p.add_argument("--stage", choices=STAGES, help="training stage (train only)")
    p.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="deepspeed",
        help="train: process launcher (lmms-eval: accelerate, or python for one process)",
    )
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--master-port", type=int, default=29500)
    p.add_argument(
        "--deepspeed-config",
        help="this stage's DeepSpeed config (default: LLaVA's zero2/zero3 under pipeline/); 'none' for none",
    )
    p.add_argument("--module", default=TRAIN_MODULE, help=f"training module (default {TRAIN_MODULE})")
    p.add_argument("--print", action="store_true", help="print the command (or sbatch script) and exit")
    p.add_argument(
        "--hosts", nargs="+", help="hostfile: the nodes in node-rank order (default: scontrol show hostnames)"
    )
    p.add_argument("--out", help="hostfile: where to write it (default: print it)")
    g = add_slurm_arguments(p)
    g.add_argument("--slurm", action="store_true", help="submit instead of running here")
    g.add_argument("--job-name")
    g.add_argument(
        "--after", action="append", default=[], metavar="JOB_ID", help="start after these jobs succeed"
    )
    g.add_argument("--no-wait", action="store_true", help="return once submitted (default: wait for the job)")
    return p


def add_slurm_arguments(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The cluster options of `SlurmSpec` (shared by `basic launch --slurm` and `basic submit`)."""
    g = p.add_argument_group("SLURM")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--time", default="24:00:00")
    g.add_argument("--cpus-per-task", type=int)
    g.add_argument("--mem")
    g.add_argument("--sbatch-directive", action="append", default=[], metavar="OPTION")
    g.add_argument("--setup", action="append", default=[], metavar="SHELL_LINE")
    g.add_argument("--log-dir", default="logs/slurm")
    g.add_argument("--template", default=str(SBATCH_TEMPLATE))
    return g


def slurm_spec(args: argparse.Namespace) -> SlurmSpec:
    return SlurmSpec(
        args.partition,
        args.account,
        args.qos,
        args.time,
        args.cpus_per_task,
        args.mem,
        log_dir=args.log_dir,
        directives=tuple(args.sbatch_directive),
        setup=tuple(args.setup),
        template=args.template,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:split])
    rest = argv[split + 1 :]
    try:
        if args.what == "hostfile":
            spec = LaunchSpec("deepspeed", args.gpus_per_node, args.nodes, args.master_port)
            if args.out:
                print(write_hostfile(args.out, spec, args.hosts))
            else:
                print(hostfile_text(spec, args.hosts), end="")
            return 0
        if args.what == "train":
            if not args.stage:
                raise LaunchError("train needs --stage pretrain|finetune")
            deepspeed = dict(DEEPSPEED_CONFIGS)
            if args.deepspeed_config:
                deepspeed[args.stage] = None if args.deepspeed_config == "none" else args.deepspeed_config
            spec = LaunchSpec(args.launcher, args.gpus_per_node, args.nodes, args.master_port, deepspeed)
            command = train_command(spec, args.stage, rest, args.module)
        else:  # evaluation runs on one node
            spec = LaunchSpec(
                "python" if args.launcher == "python" else "accelerate",
                args.gpus_per_node,
                1,
                args.master_port,
                {},
            )
            command = (eval_command if args.what == "evaluate" else lmms_eval_command)(spec, rest)
        if not args.slurm:
            if args.print:
                print(to_shell(command))
                return 0
            if spec.nodes > 1:
                raise LaunchError(
                    "more than one node: run this on every node with NODE_RANK and MASTER_ADDR set "
                    f"(and, for deepspeed, {HOSTFILE_ENV}: `basic launch hostfile`; see --print), "
                    "or submit with --slurm"
                )
            return subprocess.call(command)
        slurm = slurm_spec(args)
        name = args.job_name or (f"basic-{args.stage}" if args.what == "train" else f"basic-{args.what}")
        script = sbatch_script(command, spec, slurm, name)
        if args.print:
            print(script)
            return 0
        job = submit(script, name, slurm, after=args.after, wait=not args.no_wait)
        print(job)
    except LaunchError as e:
        print(f"basic launch: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
