"""`make study`: the whole study of params.yaml (mini profile by default) through DVC, from a fresh clone.

    python pipeline/study.py           # dvc repro: every stage of every run, then the report
    python pipeline/study.py --quick   # only the main table's runs, then the report (other tables: missing)

Initialises DVC if the checkout has no .dvc/ (e.g. an exported tarball), puts this interpreter's scripts
first on PATH (the stages call `basic ...`), keeps everything offline, and shows which stage of how many
is running and the time so far above DVC's and each command's own output. Extra arguments go to `dvc
repro` (e.g. `--force`, `-k`). Exit code: DVC's.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGE_LINE = re.compile(rb"(Running stage|Stage) '([^']+)'")


def environment() -> dict[str, str]:
    return {**os.environ, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]), "DVC_NO_ANALYTICS": "1",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def dvc(*args: str) -> list[str]:
    return [str(BIN / "dvc") if (BIN / "dvc").exists() else "dvc", *args]


def ensure_dvc(env: dict[str, str]) -> None:
    if (ROOT / ".dvc").is_dir():
        return
    scm = (ROOT / ".git").exists()
    print(f"study: no .dvc/ here: dvc init{'' if scm else ' --no-scm'}", flush=True)
    subprocess.run(dvc("init", *([] if scm else ["--no-scm"])), cwd=ROOT, env=env, check=True)


def plan(quick: bool) -> tuple[list[str], int]:
    """dvc repro targets and how many stages they span."""
    sys.path.insert(0, str(ROOT / "src"))
    from basic import config

    study = config.load(ROOT / config.PARAMS_FILE)
    runs = list(dict.fromkeys(study.tables.get("main", []))) if quick else list(study.runs)
    return ([f"evaluate@{run}" for run in runs] if quick else []), 3 + 3 * len(runs)


def repro(args: list[str], total: int, env: dict[str, str], started: float, seen: set[str]) -> int:
    """`dvc repro ARGS`, its output passed through as it comes, with a progress line at each new stage."""
    process = subprocess.Popen(dvc("repro", *args), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    pending = b""
    while chunk := os.read(process.stdout.fileno(), 65536):  # type: ignore[union-attr]
        sys.stdout.buffer.write(chunk)
        pending += chunk
        *lines, pending = re.split(rb"[\r\n]", pending)
        for line in lines:
            match = STAGE_LINE.match(line)
            if match and match.group(2).decode() not in seen:
                seen.add(match.group(2).decode())
                elapsed = time.strftime("%H:%M:%S", time.gmtime(time.time() - started))
                verb = "running" if match.group(1) == b"Running stage" else "up to date"
                sys.stdout.buffer.write(f"study: [{len(seen)}/{total}] {match.group(2).decode()} {verb} "
                                        f"({elapsed} elapsed)\n".encode())
        sys.stdout.flush()
    return process.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="only the runs of the main table, then the report")
    args, extra = p.parse_known_args(argv)
    env = environment()
    started = time.time()
    ensure_dvc(env)
    targets, total = plan(args.quick)
    seen: set[str] = set()
    code = repro([*extra, *targets], total, env, started, seen)
    if code == 0 and args.quick:  # the report alone, over whatever metrics exist
        code = repro([*extra, "--single-item", "report"], total, env, started, seen)
    elapsed = time.strftime("%H:%M:%S", time.gmtime(time.time() - started))
    print(f"study: {'done' if code == 0 else f'failed (dvc repro exit {code})'} in {elapsed}; tables in "
          "results/tables/, notebooks in results/notebooks/", flush=True)
    if code == 0 and not args.quick:
        subprocess.run(dvc("status"), cwd=ROOT, env=env)
    return code


if __name__ == "__main__":
    sys.exit(main())
