"""`basic evaluate`: run lmms-eval on one checkpoint over the configured benchmarks, write its metrics JSON.

    basic evaluate --checkpoint models/<run>/finetune --out results/metrics/<run>.json \\
        [--profile mini|full] [--benchmarks vqav2,gqa,...] [--data data/mini] [--batch_size 8] \\
        [--num_processes N] [--log_dir DIR] [--prompt_variant llava_v15|lmms_eval] [--blind]

Steps: (1) judged benchmarks whose LLM judge cannot be reached are recorded `unscored` with the reason and
not run; (2) the package's task YAMLs are copied to `<log_dir>/tasks` with the mini data paths pointing at
`--data` and the prompt variant's prompt, generation settings and scoring written in (basic.eval.prompts);
(3) lmms-eval runs once, as its own command line (`python -m basic.eval.lmms_cli`, lmms-eval's CLI
indexing only the study's tasks when they are all it needs; under `accelerate launch` for N processes) with
`--model basic_llava` and per-sample logs in `<log_dir>/lmms_eval`; (4) every requested result is checked, because lmms-eval exits 0 when evaluation
fails, and a missing one fails this command naming the task; (5) `--out` gets
`{benchmark: {score, n, split, scored_by, status, task, prompt_variant, [reason | submission]}}` with status
`scored`, `pending` (server-scored: submission file written, in the server's format, basic.eval.submissions)
or `unscored` (judge unreachable: reason), and `distinct_answers` (how many different answers the model gave).
`--blind` adds a second pass to that lmms-eval run (its `--config` list, `<log_dir>/lmms_eval_passes.yaml`;
logs in `<log_dir>/lmms_eval_blind`) with every image replaced by a blank one in the image processor's mean
colour (same size, same image tokens; `basic_llava`'s `blind` model arg) and adds `blind_score`,
`blind_distinct_answers` and `same_answer_blind` (the share of questions answered identically without the
image): a benchmark measures vision only where `score` is well above `blind_score`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from importlib import resources
from pathlib import Path

import yaml

from basic.distributed import free_port
from basic.eval import prompts, submissions
from basic.eval.benchmarks import Benchmark, select
from basic.eval.options import DEFAULT_DATA, build_parser


class EvaluationError(RuntimeError):
    """Evaluation did not produce what was asked; the message names the task and where to look."""


# ---- task YAMLs ----------------------------------------------------------------------------------------


class _Function(str):
    """A `!function` reference, kept as a tag when a task YAML is rewritten."""


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Loader.add_constructor("!function", lambda loader, node: _Function(loader.construct_scalar(node)))
_Dumper.add_representer(_Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


def _apply_variant(config: dict, variant: str) -> None:
    """Write `variant`'s prompt switch, generation settings and scoring into a task template that names its
    benchmark in lmms_eval_specific_kwargs (the tasks that include it inherit them)."""
    kwargs = (config.get("lmms_eval_specific_kwargs") or {}).get("default") or {}
    if "benchmark" not in kwargs:
        return
    kwargs["variant"] = variant
    chosen = prompts.protocol(kwargs["benchmark"], variant)
    config["generation_kwargs"] = dict(chosen.generation_kwargs)
    if chosen.process_results and "process_results" in config:
        config["process_results"] = _Function(f"basic.eval.tasks.utils.{chosen.process_results}")


def render_tasks(data_root: Path, out_dir: Path, variant: str = prompts.DEFAULT_VARIANT) -> Path:
    """Copy the package's task YAMLs to `out_dir`, pointing their `data/mini/...` files at `data_root` and
    setting the prompt `variant`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for source in resources.files("basic.eval.tasks").iterdir():
        if not source.name.endswith(".yaml"):
            continue
        config = yaml.load(source.read_text(encoding="utf-8"), Loader=_Loader)
        _apply_variant(config, variant)
        files = (config.get("dataset_kwargs") or {}).get("data_files") or {}
        for split, path in files.items():
            if not str(path).startswith(DEFAULT_DATA + "/"):
                raise EvaluationError(f"{source.name}: data file {path!r} is not under {DEFAULT_DATA}/")
            files[split] = str((data_root / str(path)[len(DEFAULT_DATA) + 1 :]).resolve())
        (out_dir / source.name).write_text(
            yaml.dump(config, Dumper=_Dumper, allow_unicode=True, sort_keys=False), encoding="utf-8"
        )
    return out_dir


def _task_configs(tasks_dir: Path) -> dict[str, dict]:
    """The rendered task YAMLs under `tasks_dir`, by task name."""
    configs = (
        yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader) for p in sorted(tasks_dir.glob("*.yaml"))
    )
    return {c["task"]: c for c in configs if isinstance(c, dict) and "task" in c}


def task_data_files(tasks_dir: Path, task: str) -> list[Path]:
    """The local data files the rendered YAML of `task` reads (none for hub datasets)."""
    config = _task_configs(tasks_dir).get(task, {})
    return [Path(p) for p in ((config.get("dataset_kwargs") or {}).get("data_files") or {}).values()]


# ---- running lmms-eval --------------------------------------------------------------------------------


def model_args(args: argparse.Namespace, blind: bool = False) -> str:
    """`basic_llava`'s --model_args for the checkpoint; `blind`: every image replaced by a blank one."""
    text = f"pretrained={Path(args.checkpoint).resolve()}"
    if blind:
        text += ",blind=True"
    if args.device:
        text += f",device={args.device}"
    dtype = args.dtype or ("float32" if args.profile == "mini" else "auto")
    return text + f",dtype={dtype}"


def lmms_eval_passes(args: argparse.Namespace, outputs: dict[Path, bool]) -> list[dict[str, str]]:
    """lmms-eval's `--config` list: one pass per output directory, with blank images where its value is
    true. The passes run one after the other in the same lmms-eval processes (one start-up for all)."""
    return [
        {"model_args": model_args(args, blind), "output_path": str(out)} for out, blind in outputs.items()
    ]


def lmms_eval_command(
    args: argparse.Namespace, tasks: list[str], tasks_dir: Path, passes_file: Path, local_tasks: bool = False
) -> list[str]:
    """lmms-eval (through `basic.eval.lmms_cli`) for `tasks` and the passes in `passes_file`
    (`lmms_eval_passes`); `local_tasks`: every task is defined under `tasks_dir`."""
    if args.num_processes > 1:
        # Explicit flags, so a stale `accelerate config` file cannot change the process layout.
        # --multi_gpu is accelerate's torchrun launcher, gloo on CPU (its --cpu needs MPI for several
        # processes). A free port, so that two evaluations on one machine do not collide on 29500.
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(args.num_processes),
            "--num_machines",
            "1",
            "--main_process_port",
            str(port),
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "basic.eval.lmms_cli",
        ]
    else:
        command = [sys.executable, "-m", "basic.eval.lmms_cli"]
    command += [
        "--config",
        str(passes_file),
        "--model",
        "basic_llava",
        "--tasks",
        ",".join(tasks),
        "--include_path",
        str(tasks_dir),
        "--batch_size",
        str(args.batch_size),
        "--log_samples",
        "--verbosity",
        "INFO",
    ]
    if args.limit is not None:
        command += ["--limit", str(args.limit)]
    if args.gen_kwargs:
        command += ["--gen_kwargs", args.gen_kwargs]
    return command + (["--local_tasks"] if local_tasks else [])


def run_lmms_eval(
    command: list[str], log_file: Path, threads: int | None = None, extra_env: dict[str, str] | None = None
) -> str:
    """Run `command`, echoing and saving its output; returns the output's tail for error messages."""
    tail: deque[str] = deque(maxlen=30)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads in every lmms-eval process
    with (
        open(log_file, "w", encoding="utf-8") as log,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as process,
    ):
        for line in process.stdout:  # type: ignore[union-attr]
            sys.stdout.write(line)
            log.write(line)
            tail.append(line)
    text = "".join(tail)
    if process.returncode != 0:
        raise EvaluationError(f"lmms-eval exited with {process.returncode} (full log: {log_file}):\n{text}")
    return text


# ---- collecting metrics --------------------------------------------------------------------------------


def _newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else None


def sample_log(output: Path, task: str) -> tuple[Path | None, list[dict]]:
    """lmms-eval's newest per-sample log of `task` under `output` and its records ((None, []) if none)."""
    path = _newest(list(output.rglob(f"*_samples_{task}.jsonl")))
    if path is None:
        return None, []
    return path, [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _unjudged_reason(output: Path, task: str) -> str:
    """Why a judged task has no score, from its per-sample log."""
    path, records = sample_log(output, task)
    if path is None:
        return "judge could not score, and no per-sample log was written"
    errors = [r["judge_score"]["error"] for r in records if (r.get("judge_score") or {}).get("error")]
    first = errors[0] if errors else "unknown"
    return f"{len(errors)}/{len(records)} samples unjudged ({first}); per-sample log: {path}"


def collect(benchmarks: list[Benchmark], output: Path, judges: dict[str, str], tail: str) -> dict[str, dict]:
    """Metrics JSON entries of the benchmarks lmms-eval ran; fails naming every task without a result."""
    results_file = _newest(list(output.rglob("*_results.json")))
    if results_file is None:
        raise EvaluationError(
            f"lmms-eval wrote no results for {', '.join(b.task for b in benchmarks)} (it exits 0 after "
            f"'Error during evaluation'); log: {output.parent / 'lmms_eval.log'}\n{tail}"
        )
    report = json.loads(results_file.read_text(encoding="utf-8"))
    results, counts = report.get("results", {}), report.get("n-samples", {})
    entries, missing = {}, []
    for b in benchmarks:
        task_result = results.get(b.task)
        entry = {
            "score": None,
            "n": (counts.get(b.task) or {}).get("effective"),
            "split": b.split,
            "scored_by": f"judge:{judges[b.name]}" if b.scored_by == "judge" else b.scored_by,
            "status": "scored",
            "task": b.task,
        }
        if task_result is None:
            missing.append(f"{b.task} (no result)")
            continue
        if b.scored_by == "server":
            submission = _newest(list(output.rglob(b.submission)))  # type: ignore[arg-type]
            if submission is None:
                missing.append(f"{b.task} (no submission file {b.submission})")
                continue
            entry.update(status="pending", submission=str(submission))
        else:
            key = f"{b.metric},none"
            value = _number(task_result.get(key))
            if value is not None:
                entry["score"] = round(value * b.scale, 4)
            elif b.scored_by == "judge" and key in task_result:
                entry.update(status="unscored", reason=_unjudged_reason(output, b.task))
            else:
                missing.append(f"{b.task} (metric {key} is {task_result.get(key)!r})")
                continue
        entries[b.name] = entry
    if missing:
        raise EvaluationError(f"lmms-eval gave no result for: {'; '.join(missing)} (results: {results_file})")
    return entries


def sample_answer(record: dict) -> str:
    """The model's filtered answer in one record of lmms-eval's per-sample log."""
    response = record.get("filtered_resps")
    return str(response[0] if isinstance(response, list) and response else response)


def sample_answers(output: Path, task: str) -> dict[int, str]:
    """doc id -> the model's filtered answer, from lmms-eval's per-sample log of `task` (empty if none)."""
    return {record["doc_id"]: sample_answer(record) for record in sample_log(output, task)[1]}


def add_blind(
    entries: dict[str, dict],
    blind: dict[str, dict],
    benchmarks: list[Benchmark],
    output: Path,
    blind_output: Path,
) -> None:
    """Add the blind pass's score, its number of distinct answers and the share of answers it left unchanged
    to each scored entry (the sighted pass's distinct answers are added by `add_distinct`)."""
    for b in benchmarks:
        entry, other = entries.get(b.name), blind.get(b.name)
        if entry is None or other is None or entry["status"] != "scored":
            continue
        seen, unseen = sample_answers(output, b.task), sample_answers(blind_output, b.task)
        shared = [d for d in seen if d in unseen]
        entry.update(
            blind_score=other["score"],
            blind_distinct_answers=len(set(unseen.values())),
            same_answer_blind=round(sum(seen[d] == unseen[d] for d in shared) / len(shared), 4)
            if shared
            else None,
        )


def add_distinct(entries: dict[str, dict], benchmarks: list[Benchmark], output: Path) -> None:
    """`distinct_answers` of each scored entry: how many different answers the model gave."""
    for b in benchmarks:
        if b.name in entries and entries[b.name]["status"] == "scored":
            entries[b.name]["distinct_answers"] = len(set(sample_answers(output, b.task).values()))


# ---- command line -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def evaluate(args: argparse.Namespace) -> dict[str, dict]:
    """Run the evaluation described by `args` and write its metrics JSON; returns the entries."""
    from basic.eval.judge import LLMJudge, RuleJudge

    benchmarks = select(args.profile, [n.strip() for n in args.benchmarks.split(",") if n.strip()])
    log_dir = args.log_dir or args.out.with_name(f"{args.out.stem}_logs")
    output = log_dir / "lmms_eval"
    blind_output = log_dir / "lmms_eval_blind"
    for stale in (output, blind_output, log_dir / "tasks"):  # results are found by globbing, so start clean
        shutil.rmtree(stale, ignore_errors=True)
    tasks_dir = render_tasks(args.data, log_dir / "tasks", args.prompt_variant)
    # The VQAv2 upload covers every test2015 question: the question file must be there before hours of generation.
    extra_env = {}
    if any(b.name == "vqav2" and b.scored_by == "server" for b in benchmarks):
        test2015 = submissions.vqav2_test2015_file(args.data)
        try:
            submissions.read_question_ids(test2015)
        except submissions.SubmissionError as e:
            raise EvaluationError(f"vqav2: {e}") from None
        extra_env[submissions.VQAV2_TEST2015_ENV] = str(test2015.resolve())

    entries: dict[str, dict] = {}
    judges: dict[str, str] = {}
    to_run: list[Benchmark] = []
    for b in benchmarks:
        for path in task_data_files(tasks_dir, b.task):
            if not path.is_file():
                raise EvaluationError(
                    f"{b.name}: data file {path} is missing (mini data: `basic mini data --out {args.data}`)"
                )
        if b.judge == "llm":
            judge = LLMJudge()
            judges[b.name] = judge.name
            reason = judge.check()
            if reason:
                entries[b.name] = {
                    "score": None,
                    "n": None,
                    "split": b.split,
                    "scored_by": f"judge:{judge.name}",
                    "status": "unscored",
                    "task": b.task,
                    "reason": reason,
                }
                print(f"basic evaluate: {b.name} left unscored: {reason}", file=sys.stderr)
                continue
        elif b.judge == "rule":
            judges[b.name] = RuleJudge.name
        to_run.append(b)

    if to_run:
        outputs = {output: False, **({blind_output: True} if args.blind else {})}
        for path in outputs:
            path.mkdir(parents=True, exist_ok=True)
        passes_file = log_dir / "lmms_eval_passes.yaml"
        passes_file.write_text(
            yaml.safe_dump(lmms_eval_passes(args, outputs), sort_keys=False), encoding="utf-8"
        )
        tasks = [b.task for b in to_run]
        local = set(tasks) <= set(_task_configs(tasks_dir))
        command = lmms_eval_command(args, tasks, tasks_dir, passes_file, local_tasks=local)
        started = time.perf_counter()
        threads = args.threads or (1 if args.profile == "mini" else None)
        tail = run_lmms_eval(command, log_dir / "lmms_eval.log", threads, extra_env)
        print(f"basic evaluate: lmms-eval took {time.perf_counter() - started:.1f} s", file=sys.stderr)
        entries.update(collect(to_run, output, judges, tail))
        add_distinct(entries, to_run, output)
        if args.blind:
            add_blind(entries, collect(to_run, blind_output, judges, tail), to_run, output, blind_output)

    ordered = {b.name: {**entries[b.name], "prompt_variant": args.prompt_variant} for b in benchmarks}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(ordered, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    return ordered


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        entries = evaluate(args)
    except (EvaluationError, ValueError) as error:
        print(f"basic evaluate: error: {error}", file=sys.stderr)
        return 1
    for name, e in entries.items():
        shown = e["score"] if e["status"] == "scored" else e.get("submission") or e.get("reason")
        print(f"{name:<10} {e['status']:<9} {shown}")
    print(f"basic evaluate: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
