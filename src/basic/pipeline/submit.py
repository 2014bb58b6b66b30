"""`basic submit`: the whole study on a SLURM cluster at once, each run's stages as chained jobs.

    basic submit --print                              # the plan: every job and the launch line it resolves to
    basic submit --partition gpu --time 48:00:00 --setup "source .venv/bin/activate" [--runs ...]

Each job runs `basic stage <stage> <run>` (what dvc.yaml runs: basic.pipeline.config resolves the launch line,
the stage writes its training curves) on the nodes its profile's launch spec asks for; stages of a run are
chained with `afterok`, runs are independent, so SLURM places them side by side. Data and backbones must be
in place (`dvc repro backbones` first); afterwards `dvc commit` records the outputs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from basic.pipeline import config
from basic.pipeline.launch import Job, LaunchError, add_slurm_arguments, slurm_spec, submit_runs, to_shell

RUN_STAGES = ("pretrain", "finetune", "evaluate")


def study_jobs(params: str | Path = "params.yaml", runs: Sequence[str] | None = None) -> dict[str, list[Job]]:
    """Every run of params.yaml (or `runs`) as SLURM jobs, in its active profile: the run's pretrain, finetune
    and evaluate stages, each running `basic stage <stage> <run>` (what dvc.yaml runs: basic.pipeline.config resolves
    the launch line, and the stage writes its training curves). Data and backbones must be in place."""
    study = config.load(params)
    spec = study.active.launch
    jobs = {}
    for run in runs or list(study.runs):
        study.run(run)  # unknown names fail here, naming the runs there are
        jobs[run] = [
            Job(
                stage,
                ("basic", "stage", stage, run, "--params", str(params)),
                spec if stage != "evaluate" else replace(spec, nodes=1),
                gpus=spec.launcher != "python",
            )
            for stage in RUN_STAGES
        ]
    return jobs


def submit_study(args: argparse.Namespace) -> int:
    try:
        jobs = study_jobs(args.params, args.runs)
        if args.print:  # the plan: each job's command and the launch line it resolves to
            study = config.load(args.params)
            for run, stages in jobs.items():
                for job in stages:
                    print(
                        f"# {run}.{job.name} ({study.profile}): {job.spec.nodes} node(s) x {job.spec.gpus_per_node} GPUs"
                    )
                    print(f"{to_shell(job.command)}\n#   -> {to_shell(config.command(study, job.name, run))}")
            return 0
    except config.ConfigError as e:
        raise LaunchError(str(e)) from None
    slurm = slurm_spec(args)
    ids = submit_runs(jobs, slurm)
    for run, stages in jobs.items():
        print(f"{run}: " + ", ".join(f"{job.name} {job_id}" for job, job_id in zip(stages, ids[run])))
    names = " ".join(f"{stage}@{run}" for run in jobs for stage in RUN_STAGES)
    print(
        "When the jobs have finished (squeue -u $USER), record their outputs in DVC and make the tables:\n"
        f"  dvc commit -f {names}\n  dvc repro report"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="basic submit", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--params",
        default=str(config.PARAMS_FILE),
        help="the study's params, in their active profile (default %(default)s)",
    )
    p.add_argument("--runs", nargs="+", help="only these runs")
    p.add_argument("--print", action="store_true", help="print the plan and exit")
    add_slurm_arguments(p)
    args = p.parse_args(argv)
    try:
        return submit_study(args)
    except LaunchError as e:
        print(f"basic submit: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
