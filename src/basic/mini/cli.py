"""Command line of the embedded world: `basic mini data` and `basic mini backbones`.

Every size is a flag (the pipeline exposes them in params.yaml); the defaults build the study's world
and backbones in a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def _add_fields(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", type=type(default), default=default, help=f"(default: {default})"
        )


def data_parser() -> argparse.ArgumentParser:
    from basic.mini.world import WorldSizes

    parser = argparse.ArgumentParser(
        prog="basic mini data",
        description="Generate the embedded world: scenes, "
        "LLaVA-format corpora, the eight mini benchmarks, probe set and tokenizer.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("data/mini"), help="output directory (default: data/mini)"
    )
    parser.add_argument("--seed", type=int, default=0)
    _add_fields(parser, WorldSizes)
    return parser


def data_main(argv: list[str] | None = None) -> int:
    from basic.mini.world import WorldSizes, build_world

    args = data_parser().parse_args(argv)
    sizes = WorldSizes(**{f.name: getattr(args, f.name) for f in dataclasses.fields(WorldSizes)})
    manifest = build_world(args.out, args.seed, sizes)
    print(json.dumps({"out": str(args.out), "seed": args.seed, "counts": manifest["counts"]}, indent=1))
    return 0


def backbones_parser() -> argparse.ArgumentParser:
    from basic.mini.backbones import ORDER, BackboneSettings

    parser = argparse.ArgumentParser(
        prog="basic mini backbones",
        description="Pretrain the two mini vision encoders and five mini LLMs; write them and metrics.json.",
    )
    parser.add_argument("--data", type=Path, default=Path("data/mini"), help="the world (default: data/mini)")
    parser.add_argument(
        "--out", type=Path, default=Path("models/backbones"), help="(default: models/backbones)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--names", nargs="+", default=list(ORDER), choices=ORDER, help="backbones to build (default: all)"
    )
    parser.add_argument(
        "--prebuilt",
        type=Path,
        help="a shipped artifact of the backbones (basic.mini.prebuilt): "
        "unpacked and verified when it was built from the same world, settings, code and library "
        "versions, else the backbones are built",
    )
    parser.add_argument("--pack", type=Path, help="after building, write the backbones to this artifact")
    _add_fields(parser, BackboneSettings, skip=("names",))
    return parser


def backbones_main(argv: list[str] | None = None) -> int:
    from basic.mini import prebuilt
    from basic.mini.backbones import BackboneSettings, build_backbones

    args = backbones_parser().parse_args(argv)
    settings = BackboneSettings(
        **{
            f.name: (tuple(args.names) if f.name == "names" else getattr(args, f.name))
            for f in dataclasses.fields(BackboneSettings)
        }
    )
    parts = prebuilt.inputs(args.data, args.seed, dataclasses.asdict(settings))
    if args.prebuilt and args.prebuilt.is_file():
        record = prebuilt.read_record(args.prebuilt)
        if record["fingerprint"] == prebuilt.fingerprint(parts):
            prebuilt.unpack(args.prebuilt, args.out)
            print(
                f"basic mini backbones: unpacked {len(record['files'])} verified files of {args.prebuilt} into "
                f"{args.out} (built from this world, settings and code; rebuild: docs/pipeline.md)"
            )
            return 0
        print(
            f"basic mini backbones: {args.prebuilt} was built from another {', '.join(prebuilt.differences(record, parts))}"
            f"; building the backbones instead (several minutes; `--pack {args.prebuilt}` refreshes the artifact)"
        )
    metrics = build_backbones(args.data, args.out, args.seed, settings)
    if args.pack:
        prebuilt.pack(args.out, args.pack, parts)
        print(f"basic mini backbones: wrote {args.pack}")
    summary = {
        k: metrics[k] for k in ("wall_s", "goals_met", "llm_text_qa_accuracy", "encoder_probe_min_accuracy")
    }
    print(json.dumps(summary, indent=1))
    return 0
