"""`make study`: the whole study of params.yaml (mini profile by default) through DVC, from a fresh clone.

    python pipeline/study.py             # every stage of every run, then the report (dvc repro)
    python pipeline/study.py --main      # only the main table's seed-0 runs, then the report
    python pipeline/study.py --quick     # the main table on the small `quick` profile, in build/quick/
    python pipeline/study.py --jobs 1    # one stage at a time, DVC's own output streamed

Every stage is run by DVC (`dvc repro --single-item <stage>`, in dependency order), so dvc.lock, the cache
and `dvc status` are exactly what a plain `dvc repro` leaves. DVC runs one stage at a time, but it releases
its repository lock while a stage's command runs, so the runs' independent stage chains (pretrain ->
finetune -> evaluate) go side by side, `--jobs` at a time (default: one per CPU; each stage uses one
thread in the mini profile). With more than one job, each stage's output goes to logs/<stage>.log and
this script prints one line per stage start and end, with the elapsed time; a failing stage's log tail
is printed, running stages finish, and nothing new starts. Initialises DVC if the checkout has no .dvc/,
puts this interpreter's scripts first on PATH and keeps everything offline. Extra arguments go to each
`dvc repro` (e.g. `--force`). Exit code: 0, or the first failing stage's.

`--quick` leaves this checkout alone: it copies it (what git tracks or would track, without results/ and
dvc.lock) to a fresh build/quick/, sets `profile: quick` (a smaller world, the three backbones the main
table needs, fewer steps: params.yaml) and keeps only the main table's seed-0 runs there, then runs the
study in that copy: the whole path (world, backbones, both stages, lmms-eval, analysis, notebooks) in minutes, with
numbers that are a smoke reading, not the committed mini study's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUICK = ROOT / "build" / "quick"

sys.path.insert(0, str(ROOT / "src"))
from basic.pipeline import config  # noqa: E402
from basic.pipeline.submit import RUN_STAGES  # noqa: E402


def environment(root: Path) -> dict[str, str]:
    env = {**os.environ, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]), "DVC_NO_ANALYTICS": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if root != ROOT:  # a copy runs its own code
        env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def main_runs(params: dict) -> list[str]:
    """The main table's seed-0 runs."""
    return [r for r in dict.fromkeys(params["tables"].get("main", [])) if params["runs"][r].get("seed", 0) == 0]


def scratch_copy(dest: Path, profile: str, runs: list[str], tables: dict[str, list[str]]) -> Path:
    """A fresh copy of this checkout in `dest` (what git tracks or would track, but results/ and dvc.lock) as
    a git repository of its own, whose params.yaml has `profile`, only `runs` and `tables`; returns `dest`."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    if dest.exists():
        shutil.rmtree(dest)
    for name in files:
        source = ROOT / name
        if source.is_file() and not name.startswith(("results/", "dvc.lock")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    params = config.read(ROOT / config.PARAMS_FILE)
    params["profile"] = profile
    params["runs"] = {name: params["runs"][name] for name in runs}
    params["tables"] = tables
    (dest / config.PARAMS_FILE).write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    config.load(dest / config.PARAMS_FILE)  # fail here, naming the key, rather than in a stage
    # Its own git repository: DVC would otherwise take the enclosing checkout's, which ignores build/.
    identity = ["-c", "user.name=study", "-c", "user.email=study@localhost"]
    for args in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-qm", f"{profile} study"]):
        subprocess.run(["git", *args], cwd=dest, check=True)
    return dest


def dvc(*args: str) -> list[str]:
    return [str(BIN / "dvc") if (BIN / "dvc").exists() else "dvc", *args]


def ensure_dvc(root: Path, env: dict[str, str]) -> None:
    if (root / ".dvc").is_dir():
        return
    scm = (root / ".git").exists()
    print(f"study: no .dvc/ in {root}: dvc init{'' if scm else ' --no-scm'}", flush=True)
    subprocess.run(dvc("init", "-q", *([] if scm else ["--no-scm"])), cwd=root, env=env, check=True)


def plan(root: Path, main_only: bool) -> list[list[str]]:
    """The study's stages as chains in dependency order: [prepare], [backbones], one chain per run (its
    analyze stage last, for the runs `tables.analysis` names), [report]."""
    params = config.read(root / config.PARAMS_FILE)
    runs = main_runs(params) if main_only else list(params["runs"])
    analysed = set(params["tables"].get(config.ANALYSIS_TABLE, []))
    chains = [[f"{stage}@{run}" for stage in RUN_STAGES] + (["analyze@" + run] if run in analysed else [])
              for run in runs]
    return [["prepare"], ["backbones"], *chains, ["report"]]


class Progress:
    def __init__(self, total: int):
        self.total, self.started, self.count = total, time.time(), 0

    def clock(self, since: float | None = None) -> str:
        return time.strftime("%H:%M:%S", time.gmtime(time.time() - (since or self.started)))

    def say(self, text: str) -> None:
        print(f"study: {text}", flush=True)

    def start(self, stage: str) -> None:
        self.count += 1
        self.say(f"[{self.count}/{self.total}] {stage} ({self.clock()} elapsed)")


def repro(root: Path, stage: str, extra: list[str], env: dict[str, str], log: Path | None) -> subprocess.Popen:
    args = dvc("--wait-for-lock", "repro", "--single-item", *extra, stage)
    if log is None:
        return subprocess.Popen(args, cwd=root, env=env)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(args, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)


def run_chains(root: Path, chains: list[list[str]], jobs: int, extra: list[str], env: dict[str, str],
               progress: Progress) -> int:
    """Run the chains, `jobs` at a time; each chain's stages in order. Returns the first failure's exit code."""
    pending = [list(chain) for chain in chains]
    running: dict[subprocess.Popen, tuple[str, list[str], float, Path | None]] = {}
    failure = 0
    while pending or running:
        while pending and len(running) < jobs and not failure:
            chain = pending.pop(0)
            stage = chain.pop(0)
            progress.start(stage)
            log = None if jobs == 1 else root / "logs" / f"{stage}.log"
            running[repro(root, stage, extra, env, log)] = (stage, chain, time.time(), log)
        if failure and not running:
            break
        time.sleep(0.5)
        for process in [p for p in running if p.poll() is not None]:
            stage, rest, began, log = running.pop(process)
            if process.returncode:
                failure = failure or process.returncode
                progress.say(f"{stage} FAILED (exit {process.returncode}) after {progress.clock(began)}")
                if log:
                    tail = log.read_text(errors="replace").splitlines()[-40:]
                    print("\n".join(tail) + f"\nstudy: full log: {log}", flush=True)
            else:
                if log:
                    progress.say(f"{stage} done in {progress.clock(began)}")
                if rest:
                    pending.insert(0, rest)  # finish a started run before starting another
    return failure


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    only = p.add_mutually_exclusive_group()
    only.add_argument("--main", action="store_true", help="only the main table's seed-0 runs, then the report")
    only.add_argument("--quick", action="store_true",
                      help=f"the main table's seed-0 runs on the `quick` profile, in a fresh copy ({QUICK.relative_to(ROOT)}/)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="stages side by side (default: CPUs)")
    args, extra = p.parse_known_args(argv)
    root = ROOT
    if args.quick:
        runs = main_runs(config.read(ROOT / config.PARAMS_FILE))
        root = scratch_copy(QUICK, "quick", runs, {"main": runs, config.ANALYSIS_TABLE: runs})
        print(f"study: quick: profile quick, runs {', '.join(runs)}, in {root}", flush=True)
    env = environment(root)
    ensure_dvc(root, env)
    groups = plan(root, args.main)
    progress = Progress(sum(len(chain) for chain in groups))
    first, second, *runs, last = groups
    code = 0
    for chains, jobs in (([first], 1), ([second], 1), (runs, max(1, args.jobs)), ([last], 1)):
        code = run_chains(root, chains, jobs, extra, env, progress)
        if code:
            break
    where = "" if root == ROOT else f"{root.relative_to(ROOT)}/"
    progress.say(f"{'done' if code == 0 else f'failed (exit {code})'} in {progress.clock()}; tables in "
                 f"{where}results/tables/, notebooks in {where}results/notebooks/")
    if code == 0 and not args.main:
        subprocess.run(dvc("status"), cwd=root, env=env, check=False)
    return code


if __name__ == "__main__":
    sys.exit(main())
