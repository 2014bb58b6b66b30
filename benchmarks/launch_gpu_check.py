"""GPU check of the full profile's launch path, small: one BASIC run's two stages exactly as `basic stage`
launches them under `profile: full` (the `deepspeed` launcher, ZeRO-2 for stage 1 and ZeRO-3 for stage 2
from pipeline/zero*.json, bf16, tf32, gradient checkpointing), but on one GPU with the quick profile's world
and backbones, then the finetuned checkpoint loaded with vanilla transformers in bf16 on the GPU to answer
a few training questions. Writes launch_gpu_check.json (exit codes, wall times, first/last losses of the LM,
DAS and SDS terms, the answers) and both stages' logs.

    python pipeline/study.py --quick          # here: builds build/quick/{data/quick,models/backbones}
    CHECK=benchmarks/launch_gpu_check.py bash benchmarks/gpu_check.sh --out-dir "$OUT"   # on the GPU machine

It works in a temporary copy (src/, pipeline/, params.yaml with the quick profile switched to the full
profile's launcher and precision flags), so the checkout is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RUN = "basic-vicuna-7b"
PRECISION = {"bf16": True, "tf32": True, "gradient_checkpointing": True}  # the full profile's, per stage


def workspace(dest: Path, quick: Path) -> Path:
    """`dest` with the code, the quick world and backbones, and params.yaml launching like `profile: full`."""
    for needed in (quick / "data" / "quick", quick / "models" / "backbones"):
        if not needed.is_dir():
            raise SystemExit(
                f"launch_gpu_check: {needed} is missing: run `python pipeline/study.py --quick` first"
            )
    for name in ("src", "pipeline"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(quick / "data" / "quick", dest / "data" / "quick")
    shutil.copytree(quick / "models" / "backbones", dest / "models" / "backbones")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    profile = params["profiles"]["quick"]
    profile["launch"] = {
        "launcher": "deepspeed",
        "gpus_per_node": 1,
        "nodes": 1,
    }  # ZeRO-2 / ZeRO-3 by default
    for stage in ("pretrain", "finetune"):
        profile[stage].update(PRECISION)
    profile["env"] = {}
    params.update(profile="quick", runs={RUN: params["runs"][RUN]}, tables={"main": [RUN]})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def environment(work: Path) -> dict[str, str]:
    """This environment with the copy's src/ first on the path (the wheels' /tmp/site stays behind it)."""
    path = [str(work / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def run_stage(work: Path, stage: str, out: Path) -> dict:
    env = environment(work)
    start = time.time()
    with (out / f"{stage}.log").open("w") as log:
        code = subprocess.call(
            [sys.executable, "-m", "basic.cli", "stage", stage, RUN],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    result = {"exit": code, "wall_s": round(time.time() - start, 1)}
    curves = work / "results" / "curves" / RUN / f"{stage}.json"
    if curves.exists():
        points = json.loads(curves.read_text())
        result["logged_steps"] = len(points)
        result["first"] = {k: points[0].get(k) for k in ("loss", "lm_loss", "das", "sds")}
        result["last"] = {k: points[-1].get(k) for k in ("loss", "lm_loss", "das", "sds")}
    print(stage, json.dumps(result), flush=True)
    return result


def answers(work: Path, n: int = 8) -> dict:
    """Greedy answers of the bf16 checkpoint on the GPU to the first `n` short-answer training questions."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    checkpoint = work / "models" / RUN / "finetune"
    model = LlavaForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.bfloat16).to("cuda").eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    records = json.loads((work / "data" / "quick" / "llava" / "finetune.json").read_text())
    shown = []
    for record in records:
        if "image" not in record or "single word" not in record["conversations"][0]["value"]:
            continue
        question = record["conversations"][0]["value"].replace("<image>\n", "")
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        image = Image.open(work / "data" / "quick" / "images" / record["image"]).convert("RGB")
        inputs = processor(text=[prompt], images=[image], add_special_tokens=False, return_tensors="pt").to(
            "cuda"
        )
        inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        text = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        shown.append(
            {"question": question.split("\n")[0], "gold": record["conversations"][1]["value"], "answer": text}
        )
        if len(shown) == n:
            break
    return {
        "dtype": str(model.dtype),
        "device": str(model.device),
        "answers": shown,
        "exact": sum(a["answer"].lower() == a["gold"].lower() for a in shown),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, default=ROOT / "build" / "launch_gpu_check")
    p.add_argument(
        "--quick", type=Path, default=ROOT / "build" / "quick", help="where `study.py --quick` ran"
    )
    args = p.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    import deepspeed
    import torch
    import transformers

    if not torch.cuda.is_available():
        raise SystemExit("launch_gpu_check: needs a CUDA GPU (docs/full_study.md, section 7)")
    result = {
        "check": "launch_gpu_check",
        "run": RUN,
        "card": torch.cuda.get_device_name(0),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "deepspeed": deepspeed.__version__,
        },
        "precision": PRECISION,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = workspace(Path(tmp) / "work", args.quick)
        result["commands"] = subprocess.run(
            [sys.executable, "-m", "basic.cli", "stage", "--dry"],
            cwd=work,
            env=environment(work),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        for stage in ("pretrain", "finetune"):
            result[stage] = run_stage(work, stage, args.out_dir)
            if result[stage]["exit"]:
                break
        else:
            result["generate"] = answers(work)
    (args.out_dir / "launch_gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "commands"}, indent=1))
    return 0 if "generate" in result else 1


if __name__ == "__main__":
    sys.exit(main())
