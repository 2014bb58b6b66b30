"""Does a mini VLM use what its LLM learned in text? ScienceQA-style knowledge in the LLM's pretraining.

The mini ScienceQA-IMG asks for knowledge on top of what the image shows (is the object a warm or a cool
colour, how many corners its shape has, which row of the picture it is in), knowledge a real LLM brings from
its pretraining and the mini LLMs never read: every LLaVA-1.5 mini run answers it with a constant letter.
This copies the world, adds ScienceQA-style documents (a scene in words, one question of the mini
ScienceQA-IMG's kinds in LLaVA-1.5's prompt, its hint as context) to the LLM's pretraining and held-out
text, pretrains one mini LLM on it (`basic mini backbones`), and runs a study run's pretrain, finetune and
evaluate stages (`basic stage`, the study's own commands: both LLaVA-1.5 stages, evaluation with and without
the image) in a scratch copy of the study (`--work`: this checkout's params.yaml, the copied world as
data/mini, the new LLM and this checkout's encoder as models/backbones). `--docs 0` is the same path with no
document added (the LLM's text reshuffled alike): the baseline, built on the same machine.

    python benchmarks/llm_knowledge.py --docs 2000 0 --out benchmarks/results/llm_knowledge.json

Committed run (benchmarks/results/llm_knowledge.json, one seed, llava-vicuna-7b's flags): with 2,000 such
documents among the LLM's 10,000 its held-out accuracy on them stays at chance (warm or cool 0.50 of two
options, corners 0.29 of four, row 0.38 of three; 0.47 / 0.27 / 0.38 without them), and the VLM answers the
mini ScienceQA-IMG with two or three constant letters either way. The knowledge needs the same lookup in
context (find the asked object, read its attribute) that the mini LLMs do not learn in text
(benchmarks/llm_binding.py). Its baseline also shows how far a constant-letter model's "score minus blind"
moves by chance: +14.0 on ScienceQA-IMG (2 distinct answers; the blind run answers another letter).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np

from basic.eval.prompts import render
from basic.mini.benchmarks import _sqa_question
from basic.mini.language import LETTERS, describe
from basic.mini.scenes import SceneSampler
from basic.mini.world import TRAIN_SCENES
from basic.pipeline import config

ROOT = Path(__file__).resolve().parents[1]


def knowledge_docs(n: int, seed: int, stream: str) -> list[dict]:
    """`n` LLM text documents: a one-object scene in words and a mini ScienceQA-IMG question about it."""
    # Streams apart from the world's (basic.mini.scenes.STREAMS).
    key = [seed, 9000, zlib.crc32(stream.encode())]
    rng = np.random.default_rng(key + [1])
    sampler = SceneSampler(np.random.default_rng(key + [0]), f"{stream}-", max_objects=1, **TRAIN_SCENES)
    docs = []
    while len(docs) < n:
        scene = sampler.sample(quality="clear")
        for q in _sqa_question(scene, rng):
            doc = {"question": q["q"], "choices": q["choices"], "hint": q["hint"]}
            docs.append(
                {
                    "id": f"{stream}{len(docs):06d}",
                    "lang": "en",
                    "objects": len(scene.objects),
                    "description": describe(scene, "en", rng),
                    "turns": [
                        {
                            "prompt": render("sqa_img", doc),
                            "answer": LETTERS[q["answer"]],
                            "kind": f"sqa-{q['category']}",
                            "style": "mc",
                        }
                    ],
                }
            )
    return docs


def world_copy(data: Path, out: Path, docs: int, seed: int) -> None:
    """`data` at `out` with `docs` knowledge documents shuffled into text/llm_train.jsonl (300 into llm_eval);
    the rest linked."""
    shutil.rmtree(out, ignore_errors=True)
    (out / "text").mkdir(parents=True)
    for entry in data.iterdir():
        if entry.name != "text":
            (out / entry.name).symlink_to(entry.resolve())
    for name, extra in (("llm_train", docs), ("llm_eval", 300)):
        lines = (data / "text" / f"{name}.jsonl").read_text().splitlines()
        lines += [json.dumps(d, ensure_ascii=False) for d in knowledge_docs(extra, seed, f"know-{name}")]
        order = np.random.default_rng(seed).permutation(len(lines))
        (out / "text" / f"{name}.jsonl").write_text("\n".join(lines[int(i)] for i in order) + "\n")


def run_one(args: argparse.Namespace, docs: int) -> dict:
    """The scratch study for `docs` documents: world, LLM, the run's three stages; its numbers."""
    work = args.work / f"docs{docs}"
    shutil.rmtree(work, ignore_errors=True)
    world = work / "data" / "mini"
    world_copy(args.data, world, docs, args.seed)
    (work / "params.yaml").symlink_to(ROOT / config.PARAMS_FILE)
    backbones = work / config.BACKBONES_DIR
    backbones.mkdir(parents=True)
    (backbones / args.encoder).symlink_to((ROOT / config.BACKBONES_DIR / args.encoder).resolve())
    env = {**os.environ, **config.load(ROOT / config.PARAMS_FILE).active.env}  # as `basic stage` runs
    steps = {
        "backbone": ["basic", "mini", "backbones", "--data", str(world), "--out", str(backbones)]
        + ["--seed", "0", "--names", args.llm],
        **{stage: ["basic", "stage", stage, args.run] for stage in ("pretrain", "finetune", "evaluate")},
    }
    times = {}
    for step, argv in steps.items():
        start = time.perf_counter()
        subprocess.run(argv, cwd=work, check=True, stdout=subprocess.DEVNULL, env=env)
        times[f"{step}_s"] = round(time.perf_counter() - start, 1)
    built = json.loads((backbones / "metrics.json").read_text())["backbones"][args.llm]["text_qa"]
    metrics = json.loads((work / config.metrics_file(args.run)).read_text())
    return {
        "knowledge_docs": docs,
        "llm_text_qa": {k: v for k, v in built.items() if k == "all" or k.startswith("kind/sqa")},
        "benchmarks": {
            name: {k: m.get(k) for k in ("score", "blind_score", "distinct_answers")}
            | {"gap": round(m["score"] - m["blind_score"], 2)}
            for name, m in metrics.items()
            if m.get("score") is not None and m.get("blind_score") is not None
        },
        **times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, nargs="+", default=[0, 2000], help="knowledge documents added")
    parser.add_argument("--run", default="llava-vicuna-7b", help="the study run whose stages run")
    parser.add_argument("--llm", default="vicuna-7b", help="the run's LLM (rebuilt)")
    parser.add_argument("--encoder", default="clip-l-336", help="the run's encoder (this checkout's)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "mini", help="the world to copy")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "llm_knowledge")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = {
        "benchmark": "llm_knowledge",
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "points": [],
    }
    for docs in args.docs:
        result["points"].append(run_one(args, docs))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result["points"][-1]))


if __name__ == "__main__":
    main()
