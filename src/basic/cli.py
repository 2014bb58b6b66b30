"""The `basic` console script: a thin dispatcher from subcommands to each module's own `main(argv)`.

Each subcommand's module parses its own flags, so `basic train --help` shows the training flags and
`python -m basic.train ...` behaves exactly like `basic train ...`. Modules are imported lazily so
`basic --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

# subcommand (possibly two words) -> "module:function"; each function takes argv (list[str]).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("basic.train:main", "train stage 1 (projector) or stage 2 (projector + LLM), LLaVA-1.5 flags"),
    "mini data": (
        "basic.mini.cli:data_main",
        "generate the embedded world: scenes, corpora, benchmarks, tokenizer",
    ),
    "mini backbones": ("basic.mini.cli:backbones_main", "pretrain the mini vision encoders and LLMs"),
    "evaluate": ("basic.eval.evaluate:main", "run lmms-eval on one checkpoint and write its metrics JSON"),
    "analyze": (
        "basic.eval.analysis:main",
        "the paper's visual-embedding analysis of one checkpoint (matched tokens per layer)",
    ),
    "download": ("basic.full.download:main", "download and verify files listed in a manifest"),
    "checkpoints": (
        "basic.full.checkpoints:main",
        "fetch the full study's backbones from the hub at pinned revisions",
    ),
    "launch": (
        "basic.pipeline.launch:main",
        "print, run or submit (SLURM) a stage's distributed launch command",
    ),
    "submit": (
        "basic.pipeline.submit:main",
        "submit every run of params.yaml to SLURM at once (stages chained)",
    ),
    "prepare": (
        "basic.pipeline.prepare:main",
        "pipeline stage: build (mini) or check (full) the study's data",
    ),
    "report": (
        "basic.pipeline.report:main",
        "pipeline stage: execute the result notebooks and write the tables",
    ),
    "stage": (
        "basic.pipeline.stage:main",
        "pipeline stage: run one stage of params.yaml's study (--dry: print the commands)",
    ),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: basic <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for words in (2, 1):
        name = " ".join(argv[:words])
        if len(argv) >= words and name in COMMANDS:
            target, _ = COMMANDS[name]
            module_name, func_name = target.split(":")
            func = getattr(importlib.import_module(module_name), func_name)
            return int(func(argv[words:]) or 0)
    print(_usage(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
    if argv and argv[0] not in ("-h", "--help"):
        print(f"\nbasic: unknown command {' '.join(argv[:2])!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
