"""`basic evaluate` end to end through lmms-eval's command line on a tiny checkpoint and mini-benchmark fixtures.

Scores of a random model are 0, so one run's own answers are written back as ground truth to check the whole
chain (prompt -> answer -> process_results -> aggregation -> metrics JSON) against hand-computed numbers, in
a second run with another batch size and two processes (sharded by lmms-eval under accelerate launch).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import datasets
import pytest
import yaml
from PIL import Image

from basic.eval.benchmarks import PAPER_BENCHMARKS, select
from basic.eval.evaluate import (
    EvaluationError,
    add_blind,
    add_distinct,
    collect,
    lmms_eval_command,
    lmms_eval_passes,
    main,
    parse_args,
)
from basic.eval.judge import RuleJudge
from basic.mini.benchmarks import SPLITS
from basic.testing.eval import save_tiny_llava, write_benchmark_fixtures

pytestmark = pytest.mark.slow
FAST = ["--gen_kwargs", "max_new_tokens=6"]  # a random model never stops by itself


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return save_tiny_llava(root / "checkpoint"), write_benchmark_fixtures(root / "data", n=4)


@pytest.fixture(scope="module")
def first_run(world):
    checkpoint, data = world
    out = data.parent / "results" / "run.json"
    assert (
        main(
            [
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(data),
                "--out",
                str(out),
                "--batch_size",
                "4",
                *FAST,
            ]
        )
        == 0
    )
    return out


def _answers(out: Path, task: str) -> dict[int, str]:
    [samples] = out.with_name(f"{out.stem}_logs").rglob(f"*_samples_{task}.jsonl")
    return {r["doc_id"]: r["filtered_resps"] for r in map(json.loads, samples.read_text().splitlines())}


def test_all_mini_benchmarks_run_end_to_end(first_run):
    metrics = json.loads(first_run.read_text())
    assert list(metrics) == list(PAPER_BENCHMARKS)
    for name, entry in metrics.items():
        assert entry["status"] == "scored" and isinstance(entry["score"], float), name
        assert entry["n"] == (16 if name.startswith("mmb") else 4)  # MMBench: 4 questions x 4 rotations
        assert entry["split"] == SPLITS[name] and entry["task"] == f"mini_{name}"
        assert entry["prompt_variant"] == "llava_v15"  # the default: LLaVA-1.5's own prompts
    assert metrics["mmvet"]["scored_by"] == "judge:rule" and metrics["gqa"]["scored_by"] == "local"
    logs = first_run.with_name("run_logs")
    assert (logs / "lmms_eval.log").is_file()
    for name in PAPER_BENCHMARKS:  # lmms-eval's per-sample logs are kept
        assert len(_answers(first_run, f"mini_{name}")) == metrics[name]["n"]
    rows = datasets.Dataset.from_parquet(str(first_run.parent.parent / "data/benchmarks/mmvet/test.parquet"))
    assert _prompts(first_run, "mini_mmvet")[0] == rows[0]["question"]  # LLaVA: the bare question


def _prompts(out: Path, task: str) -> dict[int, str]:
    """The text lmms-eval gave the model per document (its per-sample log's `input`)."""
    [samples] = out.with_name(f"{out.stem}_logs").rglob(f"*_samples_{task}.jsonl")
    return {r["doc_id"]: r["input"] for r in map(json.loads, samples.read_text().splitlines())}


def test_the_lmms_eval_variant_prompts_as_lmms_eval_and_is_recorded(world, tmp_path):
    checkpoint, data = world
    out = tmp_path / "lmms.json"
    assert (
        main(
            [
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(data),
                "--out",
                str(out),
                "--benchmarks",
                "mmvet,textvqa",
                "--prompt_variant",
                "lmms_eval",
                "--limit",
                "2",
                *FAST,
            ]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    assert {e["prompt_variant"] for e in metrics.values()} == {"lmms_eval"}
    assert _prompts(out, "mini_mmvet")[0].startswith("First please perform reasoning")
    assert "Reference OCR token" not in _prompts(out, "mini_textvqa")[0]


def _rewrite(data: Path, bench: str, change) -> None:
    path = data / "benchmarks" / bench / f"{SPLITS[bench]}.parquet"
    rows = datasets.Dataset.from_parquet(str(path)).to_list()
    for i, row in enumerate(rows):
        change(i, row)
    datasets.Dataset.from_list(rows, features=datasets.Dataset.from_parquet(str(path)).features).to_parquet(
        path
    )


def test_known_answers_give_hand_computed_scores_at_any_batch_size_and_process_count(
    world, first_run, tmp_path
):
    checkpoint, data = world
    oracle = shutil.copytree(data, tmp_path / "data")
    said = {b: _answers(first_run, f"mini_{b}") for b in ("vqav2", "gqa", "textvqa", "mmvet")}

    def vqav2(i, row):  # doc 0: all ten annotators agree with the model; doc 1: two of ten; others: none
        agree = {0: 10, 1: 2}.get(i, 0)
        row["answers"] = [
            dict(a, answer=said["vqav2"][i] if k < agree else "zebra") for k, a in enumerate(row["answers"])
        ]

    _rewrite(oracle, "vqav2", vqav2)
    # GQA's answers are lower case; LLaVA's post-processing lower-cases the answer and strips trailing periods
    _rewrite(
        oracle,
        "gqa",
        lambda i, row: row.update(answer=said["gqa"][i].rstrip(".").lower() if i < 2 else "zebra"),
    )
    _rewrite(oracle, "textvqa", lambda i, row: row.update(answers=[said["textvqa"][i]] * 10))
    _rewrite(oracle, "mmvet", lambda i, row: row.update(answer=said["mmvet"][i] if i == 0 else row["answer"]))

    out = tmp_path / "oracle.json"
    assert (
        main(
            [
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(oracle),
                "--out",
                str(out),
                "--batch_size",
                "3",
                "--num_processes",
                "2",
                "--benchmarks",
                "vqav2,gqa,textvqa,mmvet",
                *FAST,
            ]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    for bench, answers in said.items():  # same answers as the one-process, batch-size-4 run
        assert _answers(out, f"mini_{bench}") == answers, bench
    # vqav2: doc 0 -> 1.0; doc 1 -> the 2 agreeing rows see 1 match (1/3), the 8 others 2 matches (2/3) -> 0.6
    assert metrics["vqav2"]["score"] == pytest.approx(100 * (1.0 + 0.6) / 4)
    assert metrics["gqa"]["score"] == pytest.approx(50.0)
    assert metrics["textvqa"]["score"] == pytest.approx(100.0)
    mmvet_rows = datasets.Dataset.from_parquet(str(oracle / "benchmarks/mmvet/test.parquet")).to_list()
    expected = [
        RuleJudge().score(r["question"], r["answer"], said["mmvet"][i]) for i, r in enumerate(mmvet_rows)
    ]
    assert expected[0] == 1.0 and metrics["mmvet"]["score"] == pytest.approx(100 * sum(expected) / 4)


def test_a_failing_task_fails_the_command_naming_it(world, tmp_path, capsys):
    checkpoint, data = world
    broken = shutil.copytree(data, tmp_path / "data")
    (broken / "benchmarks/gqa/testdev.parquet").write_bytes(b"not a parquet file")
    out = tmp_path / "broken.json"
    assert (
        main(
            [
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(broken),
                "--out",
                str(out),
                "--benchmarks",
                "vqav2,gqa",
                *FAST,
            ]
        )
        == 1
    )
    assert "mini_gqa" in capsys.readouterr().err
    assert not out.exists()


def test_missing_data_is_an_error_before_running(world, tmp_path, capsys):
    checkpoint, _ = world
    assert (
        main(
            [
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(tmp_path / "nowhere"),
                "--out",
                str(tmp_path / "m.json"),
                "--benchmarks",
                "textvqa",
            ]
        )
        == 1
    )
    assert "textvqa/validation.parquet is missing" in capsys.readouterr().err


def test_unreachable_judge_leaves_mmvet_unscored(world, tmp_path, monkeypatch):
    checkpoint, _ = world
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_API_URL", "http://127.0.0.1:9/v1")  # discard port: nothing answers
    out = tmp_path / "full.json"
    assert (
        main(
            ["--checkpoint", str(checkpoint), "--profile", "full", "--benchmarks", "mmvet", "--out", str(out)]
        )
        == 0
    )
    entry = json.loads(out.read_text())["mmvet"]
    assert entry["status"] == "unscored" and entry["score"] is None and "unreachable" in entry["reason"]
    assert entry["task"] == "basic_mmvet" and entry["scored_by"].startswith("judge:openai:")


def test_vqav2_needs_the_test2015_question_file_before_anything_runs(world, tmp_path, capsys):
    checkpoint, _ = world
    assert (
        main(
            [
                "--checkpoint",
                str(checkpoint),
                "--profile",
                "full",
                "--data",
                str(tmp_path / "full"),
                "--benchmarks",
                "vqav2",
                "--out",
                str(tmp_path / "m.json"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "eval/vqav2/llava_vqav2_mscoco_test2015.jsonl: VQAv2 test2015 question file missing" in err
    assert not (tmp_path / "m.json").exists()


def _results_dir(tmp_path: Path, results: dict, samples: dict[str, list[dict]] | None = None) -> Path:
    run = tmp_path / "lmms_eval" / "model"
    run.mkdir(parents=True)
    (run / "20260101_000000_results.json").write_text(
        json.dumps({"results": results, "n-samples": {t: {"effective": 2} for t in results}})
    )
    for task, records in (samples or {}).items():
        (run / f"20260101_000000_samples_{task}.jsonl").write_text("\n".join(map(json.dumps, records)))
    return tmp_path / "lmms_eval"


def test_blind_run_records_blind_scores_beside_the_scores(world, tmp_path):
    checkpoint, data = world
    out = tmp_path / "blind.json"
    assert (
        main(
            [
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(data),
                "--out",
                str(out),
                "--batch_size",
                "4",
                "--benchmarks",
                "vqav2,mmb_en",
                "--blind",
                *FAST,
            ]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    for name, entry in metrics.items():
        assert isinstance(entry["blind_score"], float) and 0 <= entry["blind_score"] <= 100, name
        assert (
            1 <= entry["blind_distinct_answers"] <= entry["n"]
            and 1 <= entry["distinct_answers"] <= entry["n"]
        )
        assert 0 <= entry["same_answer_blind"] <= 1
    logs = tmp_path / "blind_logs"
    assert len(yaml.safe_load((logs / "lmms_eval_passes.yaml").read_text())) == 2
    [samples] = (logs / "lmms_eval_blind").rglob("*_samples_mini_vqav2.jsonl")
    assert len(samples.read_text().splitlines()) == metrics["vqav2"]["n"]


def test_blind_scores_distinct_and_unchanged_answers_come_from_the_sample_logs(tmp_path):
    [vqav2] = select("mini", ["vqav2"])
    answers = [{"doc_id": d, "filtered_resps": [a]} for d, a in enumerate(["red", "blue", "red", "no"])]
    blind_answers = [{"doc_id": d, "filtered_resps": [a]} for d, a in enumerate(["no", "no", "red", "no"])]
    output = _results_dir(tmp_path / "seen", {vqav2.task: {"exact_match,none": 0.5}}, {vqav2.task: answers})
    blind_output = _results_dir(
        tmp_path / "blind", {vqav2.task: {"exact_match,none": 0.25}}, {vqav2.task: blind_answers}
    )
    entries = {"vqav2": {"score": 50.0, "status": "scored"}}
    add_distinct(entries, [vqav2], output)
    add_blind(entries, {"vqav2": {"score": 25.0}}, [vqav2], output, blind_output)
    assert entries["vqav2"] == {
        "score": 50.0,
        "status": "scored",
        "distinct_answers": 3,
        "blind_score": 25.0,
        "blind_distinct_answers": 2,
        "same_answer_blind": 0.5,
    }
    args = parse_args(["--checkpoint", "ckpt", "--out", "m.json", "--blind"])
    assert args.blind
    sighted, blind = lmms_eval_passes(args, {tmp_path / "seen": False, tmp_path / "blind": True})
    assert ",blind=True," in blind["model_args"] and blind["output_path"] == str(tmp_path / "blind")
    assert "blind" not in sighted["model_args"] and sighted["output_path"] == str(tmp_path / "seen")
    # one lmms-eval run for both passes: model and output come from the --config list, not the command line
    command = lmms_eval_command(args, ["mini_vqav2"], tmp_path, tmp_path / "passes.yaml", local_tasks=True)
    assert command[1:3] == ["-m", "basic.eval.lmms_cli"] and command[-1] == "--local_tasks"
    assert command[command.index("--config") + 1] == str(tmp_path / "passes.yaml")
    assert "--model_args" not in command and "--output_path" not in command


def test_collect_reports_pending_unscored_and_missing(tmp_path):
    full = {b.name: b for b in select("full", ["vqav2", "mmvet", "gqa"])}
    unjudged = {"judge_score": {"score": float("nan"), "error": "judge openai:gpt unreachable: boom"}}
    output = _results_dir(
        tmp_path,
        {
            "basic_vqav2_testdev": {"submission,none": None},
            "basic_mmvet": {"judge_score,none": float("nan")},
            "basic_gqa": {"exact_match,none": 0.625},
        },
        {"basic_mmvet": [unjudged, {"judge_score": {"score": 1.0, "error": None}}]},
    )
    (output / "submissions").mkdir()
    (output / "submissions" / "vqav2_test-dev2015_submission.json").write_text("[]")
    entries = collect(list(full.values()), output, {"mmvet": "openai:gpt"}, tail="")
    assert entries["vqav2"]["status"] == "pending" and entries["vqav2"]["submission"].endswith(
        "submission.json"
    )
    assert entries["mmvet"]["status"] == "unscored" and "1/2 samples unjudged" in entries["mmvet"]["reason"]
    assert entries["gqa"] == {
        "score": 62.5,
        "n": 2,
        "split": full["gqa"].split,
        "scored_by": "local",
        "status": "scored",
        "task": "basic_gqa",
    }

    with pytest.raises(EvaluationError, match="gqa"):  # a local metric that is missing is a failure
        collect(
            [full["gqa"]], _results_dir(tmp_path / "b", {"basic_gqa": {"alias": "basic_gqa"}}), {}, tail=""
        )
    with pytest.raises(EvaluationError, match="basic_vqav2_testdev .no submission"):
        collect([full["vqav2"]], _results_dir(tmp_path / "c", {"basic_vqav2_testdev": {}}), {}, tail="")
    with pytest.raises(EvaluationError, match="no results"):
        collect([full["gqa"]], tmp_path / "empty", {}, tail="")


def test_a_new_users_own_task_runs_through_lmms_eval(world, tmp_path, monkeypatch):
    """A task the project has never seen: the user's YAML over local JSON lines and image files, multiple choice
    (log-likelihood requests), through `python -m lmms_eval --model basic_llava` with no other setup.

    The same run holds MM-Vet graded by the LLM judge with no judge reachable, as a user running lmms-eval
    directly would get it: lmms-eval must finish, and the benchmark come out unscored with the reason."""
    checkpoint, data = world
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_API_URL", "http://127.0.0.1:9/v1")  # discard port: nothing answers
    for i, colour in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (20, 12), colour).save(tmp_path / f"{i}.png")
    (tmp_path / "test.jsonl").write_text(
        "\n".join(
            json.dumps(
                {
                    "image": str(tmp_path / f"{i}.png"),
                    "question": "What colour is the image?",
                    "choices": ["red", "blue", "green"],
                    "label": i,
                }
            )
            for i in range(3)
        )
    )
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "my_colours.yaml").write_text(
        textwrap.dedent(f"""\
        task: my_colours
        dataset_path: json
        dataset_kwargs: {{data_files: {{test: {tmp_path / "test.jsonl"}}}}}
        test_split: test
        output_type: multiple_choice
        doc_to_visual: !function my_utils.doc_to_visual
        doc_to_text: "{{{{question}}}}"
        doc_to_choice: "{{{{choices}}}}"
        doc_to_target: label
        metric_list: [{{metric: acc, aggregation: mean, higher_is_better: true}}]
        """)
    )
    (tmp_path / "tasks" / "my_utils.py").write_text(
        "from PIL import Image\n\ndef doc_to_visual(doc):\n    return [Image.open(doc['image']).convert('RGB')]\n"
    )
    (tmp_path / "tasks" / "llm_mmvet.yaml").write_text(
        textwrap.dedent(f"""\
        include: {Path(str(resources.files("basic.eval.tasks"))) / "_mmvet.yaml"}
        task: llm_mmvet
        dataset_path: parquet
        dataset_kwargs: {{data_files: {{test: {data / "benchmarks/mmvet/test.parquet"}}}}}
        process_results: !function basic.eval.tasks.utils.mmvet_process_results_llm
        generation_kwargs: {{max_new_tokens: 4}}
        """)
    )
    command = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "basic_llava",
        "--model_args",
        f"pretrained={checkpoint}",
        "--tasks",
        "my_colours,llm_mmvet",
        "--include_path",
        str(tmp_path / "tasks"),
        "--batch_size",
        "2",
        "--output_path",
        str(tmp_path / "out"),
        "--log_samples",
    ]
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    [results] = (tmp_path / "out").rglob("*_results.json")  # lmms-eval exits 0 even on failure: check output
    acc = json.loads(results.read_text())["results"]["my_colours"]["acc,none"]
    [samples] = (tmp_path / "out").rglob("*_samples_my_colours.jsonl")
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    # one negative log-likelihood per choice; the answer is the likeliest choice (lmms-eval takes the argmin)
    picked = [min(range(3), key=lambda c: float(r["filtered_resps"][c][0])) for r in records]
    assert all(len(r["filtered_resps"]) == 3 for r in records), run.stdout[-3000:]
    assert all(float(value) > 0 for r in records for value, _ in r["filtered_resps"])  # -log P > 0
    assert acc == pytest.approx(sum(p == int(r["target"]) for p, r in zip(picked, records)) / 3)

    mmvet = select("full", ["mmvet"])[0]
    unjudged = collect(
        [dataclasses.replace(mmvet, task="llm_mmvet")], tmp_path / "out", {"mmvet": "openai"}, ""
    )
    assert unjudged["mmvet"]["status"] == "unscored" and unjudged["mmvet"]["score"] is None
    assert (
        "4/4 samples unjudged" in unjudged["mmvet"]["reason"] and "unreachable" in unjudged["mmvet"]["reason"]
    )
