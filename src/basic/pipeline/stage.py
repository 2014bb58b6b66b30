"""`basic stage`: run one stage of the study exactly as params.yaml describes it (the commands of dvc.yaml).

    basic stage backbones                      # basic mini backbones ... | basic checkpoints ...
    basic stage pretrain|finetune|evaluate RUN # basic train under the profile's launcher | basic evaluate
    basic stage analyze RUN                    # basic analyze (the paper's visual-embedding analysis)
    basic stage --dry [STAGE [RUN]]            # print the commands of the active profile, run nothing

The command comes from `basic.pipeline.config.command` (so DVC's `cmd` stays one short line per stage and
`params.yaml` stays the only place a setting lives); it is printed, then run with this Python's scripts
first on PATH and the profile's `env` set. After a training stage the run's training curves (loss, lm_loss,
das, sds per logging step) are copied from trainer_state.json to results/curves/<run>/<stage>.json, which
dvc.yaml declares as plots.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from basic.pipeline import config
from basic.pipeline.launch import to_shell

CURVE_TERMS = ("loss", "lm_loss", "das", "sds")
LOG_DIR = Path("logs")
TAIL_BYTES = 4000  # of a failing stage's output, repeated after its error


def curves_from_state(state_file: str | Path) -> list[dict]:
    """The training log lines (those with a `loss`) of a trainer_state.json: step, epoch and the loss terms."""
    path = Path(state_file)
    if not path.is_file():
        raise SystemExit(f"basic stage: {path}: no trainer state (the training stage writes it)")
    history = json.loads(path.read_text(encoding="utf-8")).get("log_history")
    if not isinstance(history, list):
        raise SystemExit(f"basic stage: {path}: no log_history list")
    keep = ("step", "epoch", *CURVE_TERMS, "learning_rate", "grad_norm")
    return [{k: line[k] for k in keep if k in line} for line in history if "loss" in line]


def write_curves(state_file: str | Path, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(curves_from_state(state_file), indent=1) + "\n", encoding="utf-8")
    return out


def executable(argv: list[str]) -> list[str]:
    """`argv` made runnable by this interpreter: `basic ...` and `python ...` without relying on PATH."""
    if argv[0] == "basic":
        return [sys.executable, "-m", "basic.cli", *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return argv


def clean_backbones(study: config.Study) -> None:
    """The mini backbones are rebuilt from scratch; never delete checkpoints `basic checkpoints` fetched."""
    out = config.BACKBONES_DIR
    if study.active.world != "mini" or not out.exists():
        return
    if (out / "checkpoints.json").exists():
        raise SystemExit(
            f"basic stage: {out} holds the full study's checkpoints (checkpoints.json); the {study.profile} "
            f"profile rebuilds mini backbones there: move them away first"
        )
    shutil.rmtree(out)


def repro_clock() -> str:
    """How long the `dvc repro` (or `dvc exp run`) this stage runs under has been running, as `; study H:MM:SS`,
    or '' outside one: the elapsed time of the whole study, in a plain `dvc repro`'s own output."""
    import psutil  # a dependency of DVC's, so always there where DVC runs stages

    for process in psutil.Process().parents():
        try:
            words = [os.path.basename(w) for w in process.cmdline()[:4]]
        except psutil.Error:
            continue
        if "dvc" in words and ("repro" in words or "exp" in words):
            return f"; study {time.strftime('%H:%M:%S', time.gmtime(time.time() - process.create_time()))}"
    return ""


def log_file(stage: str, run: str | None) -> Path:
    """Where a stage's output is kept besides the terminal: logs/<stage>[@<run>].log."""
    return LOG_DIR / f"{stage}{'@' + run if run else ''}.log"


def run_stage(study: config.Study, stage: str, run: str | None) -> int:
    name = f"{stage}{'@' + run if run else ''}"
    argv = config.command(study, stage, run)
    print(f"basic stage: {name} starts: {to_shell(argv)}", flush=True)
    started = time.perf_counter()
    if stage == "backbones":
        clean_backbones(study)
    env = {
        **os.environ,
        **study.active.env,
        "PYTHONUNBUFFERED": "1",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    log = log_file(stage, run)
    log.parent.mkdir(parents=True, exist_ok=True)
    tail = b""
    # Through the shell, so that a multi-node launch's $NODE_RANK and $MASTER_ADDR expand (basic.pipeline.launch).
    # The output goes to the terminal as it comes (progress bars redraw in place) and to the stage's log.
    with (
        open(log, "wb") as out,
        subprocess.Popen(
            to_shell(executable(argv)), shell=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as process,
    ):
        while chunk := process.stdout.read1(65536):  # type: ignore[union-attr]
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            out.write(chunk)
            tail = (tail + chunk)[-TAIL_BYTES:]
    code = process.returncode
    elapsed = time.perf_counter() - started
    if code:
        print(
            f"basic stage: {name} failed (exit {code}) after {elapsed:.0f} s: {to_shell(argv)}\n"
            f"end of {log}:\n{tail.decode(errors='replace')}",
            file=sys.stderr,
        )
        return code
    if stage in ("pretrain", "finetune") and os.environ.get("NODE_RANK", "0") == "0":  # one node writes them
        state = config.run_dir(run) / stage / "trainer_state.json"
        write_curves(state, config.curves_file(run, stage))
    print(f"basic stage: {name} done in {elapsed:.1f} s (log: {log}{repro_clock()})", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="basic stage", description=__doc__.split("\n\n")[0])
    p.add_argument("stage", nargs="?", choices=config.STAGES)
    p.add_argument("run", nargs="?", help="run name (pretrain, finetune, evaluate, analyze)")
    p.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    p.add_argument("--dry", action="store_true", help="print the command(s) of the active profile and exit")
    args = p.parse_args(argv)
    try:
        study = config.load(args.params)
        if args.dry:
            stages = [args.stage] if args.stage else list(config.STAGES)
            for stage in stages:
                runs = [None] if stage == "backbones" else [args.run] if args.run else list(study.runs)
                for run in runs:
                    print(f"# {stage}{'@' + run if run else ''} (profile {study.profile})")
                    print(to_shell(config.command(study, stage, run)))
            return 0
        if not args.stage:
            p.error("name a stage (or --dry)")
        return run_stage(study, args.stage, args.run)
    except config.ConfigError as e:
        print(f"basic stage: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
