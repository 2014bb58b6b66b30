"""What a trained mini VLM reads from the image, per question kind: accuracy with the image and blind.

Reads the per-sample logs that `basic evaluate --blind` leaves in a run's log directory (lmms-eval's
`*_samples_<task>.jsonl`, with the images and with blank ones) and groups each benchmark's questions by
their first two words ("What color", "Is there", "How many"), the mini world's question kinds.

    python benchmarks/answers_by_kind.py models/<run>/evaluate [more log dirs] --out benchmarks/results/x.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from basic.eval.evaluate import sample_answer, sample_log

LOGGED = {"doc_id", "doc_hash", "target", "filtered_resps", "token_counts", "input"}  # the rest is the metric


def samples(log_dir: Path) -> dict[str, list[dict]]:
    """task -> its newest per-sample log's records under `log_dir`."""
    tasks = {path.stem.split("_samples_", 1)[1] for path in log_dir.rglob("*_samples_*.jsonl")}
    return {task: sample_log(log_dir, task)[1] for task in sorted(tasks)}


def score(record: dict) -> float:
    """The sample's own metric: a number, MM-Vet's judge `score`, or MMBench's pred == answer (per record,
    not circular)."""
    (value,) = (v for k, v in record.items() if k not in LOGGED)
    if isinstance(value, dict):
        return float(value["score"]) if "score" in value else float(value["pred"] == value["answer"])
    return float(value)


def kind(question: str) -> str:
    """The first two words of the prompt's question line (MMBench puts a hint line before it)."""
    lines = question.splitlines()
    line = next((ln.strip() for ln in lines if ln.rstrip().endswith(("?", "？"))), lines[0] if lines else "")
    words = line.split()
    return " ".join(words[:2]) if len(words) > 1 else line[-4:]  # Chinese: the question word at the end


def by_kind(seen: list[dict], blind: list[dict]) -> dict:
    blind_by_doc = {r["doc_id"]: r for r in blind}
    groups = defaultdict(list)
    for r in seen:
        groups[kind(r["input"])].append(r)
    out = {}
    for k, rows in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        b = [blind_by_doc[r["doc_id"]] for r in rows if r["doc_id"] in blind_by_doc]
        out[k] = {
            "n": len(rows),
            "score": round(100 * sum(map(score, rows)) / len(rows), 1),
            "blind_score": round(100 * sum(map(score, b)) / len(b), 1) if b else None,
            "top_answers": Counter(map(sample_answer, rows)).most_common(5),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("log_dirs", type=Path, nargs="+", help="a run's evaluate log directory")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    result = {"note": args.note, "runs": {}}
    for log_dir in args.log_dirs:
        seen, blind = samples(log_dir / "lmms_eval"), samples(log_dir / "lmms_eval_blind")
        if not seen:
            raise SystemExit(f"{log_dir}/lmms_eval: no *_samples_*.jsonl (run basic evaluate with --blind)")
        result["runs"][str(log_dir)] = {
            task: by_kind(rows, blind.get(task, [])) for task, rows in sorted(seen.items())
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for run, tasks in result["runs"].items():
        print(run)
        for task, kinds in tasks.items():
            cells = ", ".join(f"{k} {v['score']:.0f}/{v['blind_score']}" for k, v in kinds.items())
            print(f"  {task}: {cells}")


if __name__ == "__main__":
    main()
