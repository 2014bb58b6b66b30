"""`basic checkpoints`: the full study's seven backbones from the Hugging Face hub, at pinned revisions.

Each backbone of `manifests/checkpoints/backbones.yaml` is fetched with `huggingface_hub.snapshot_download`
at its pinned commit into `DEST/<name>/` (default `models/backbones`, the same layout the mini profile
writes), so the training engine takes `--model_name_or_path models/backbones/vicuna-7b` in both profiles.
`DEST/checkpoints.json` records repo, revision and file list per backbone; a second run with the same
revision does nothing. Only what transformers needs is fetched: configs, tokenizer files and the weights
in one format (safetensors when the revision has them, else PyTorch .bin; never TF/Flax/ONNX/GGUF or a
duplicate `consolidated` copy). `HF_ENDPOINT` points the hub client at a mirror, `HF_TOKEN` unlocks
gated models (Gemma, Mistral), `--cache-dir` shares one hub cache between checkouts.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from basic.schema import check_keys

MANIFEST = "manifests/checkpoints/backbones.yaml"
RECORD = "checkpoints.json"
# What transformers reads from a checkpoint besides the weights.
SUPPORT_FILES = ["*.json", "*.model", "*.txt", "*.jinja", "LICENSE*", "README.md"]
NEVER = [
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.onnx_data",
    "*.tflite",
    "*.ot",
    "*.gguf",
    "*.pt",
    "*.pth",
    "consolidated*",
    "original/*",
    "onnx/*",
    "coreml/*",
    "flax_model*",
    "tf_model*",
]


class CheckpointError(Exception):
    """A backbone could not be fetched or is not what the manifest pins; the message names it."""


@dataclass(frozen=True)
class Backbone:
    name: str
    repo: str
    revision: str
    gated: bool


def load_backbones(path: Path | None = None) -> dict[str, Backbone]:
    """The pinned backbones, by name; a revision that is not a full commit id is refused."""
    text = path.read_text() if path else (resources.files("basic.full") / MANIFEST).read_text()
    where = str(path or MANIFEST)
    data = yaml.safe_load(text)
    out = {}
    for name, d in (data.get("backbones") or {}).items():
        check_keys(
            d,
            ("repo", "revision", "gated"),
            f"{where}: backbones.{name}",
            ("repo", "revision"),
            CheckpointError,
        )
        rev = str(d["revision"])
        if len(rev) != 40 or any(c not in "0123456789abcdef" for c in rev):
            raise CheckpointError(f"{where}: backbone {name}: revision {rev!r} is not a 40-hex commit id")
        out[name] = Backbone(name, d["repo"], rev, bool(d.get("gated", False)))
    return out


def weight_patterns(repo_files: list[str]) -> list[str]:
    """Which weight files to fetch: safetensors if the revision has any, else PyTorch .bin shards."""
    if any(f.endswith(".safetensors") and not f.startswith("consolidated") for f in repo_files):
        return ["*.safetensors", "*.safetensors.index.json"]
    return ["pytorch_model*.bin", "pytorch_model*.bin.index.json"]


def select_files(repo_files: list[str]) -> list[str]:
    """The files of a revision to download (see module docstring)."""
    wanted = SUPPORT_FILES + weight_patterns(repo_files)
    return sorted(
        f
        for f in repo_files
        if any(fnmatch.fnmatch(f, p) for p in wanted) and not any(fnmatch.fnmatch(f, p) for p in NEVER)
    )


def _read_record(dest: Path) -> dict:
    path = dest / RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def fetch(backbone: Backbone, dest: Path, cache_dir: Path | None = None, hub=None) -> Path:
    """Download one backbone into `dest/<name>` at its pinned revision (no-op if already there)."""
    import huggingface_hub
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hub = hub or huggingface_hub
    target = dest / backbone.name
    record = _read_record(dest).get(backbone.name)
    if (
        record
        and record["revision"] == backbone.revision
        and (target / "config.json").exists()
        and all((target / f).exists() for f in record["files"])
    ):
        print(f"{backbone.name}: {backbone.repo}@{backbone.revision[:8]} already in {target}")
        return target
    try:
        files = select_files(hub.HfApi().list_repo_files(backbone.repo, revision=backbone.revision))
        if "config.json" not in files:
            raise CheckpointError(f"{backbone.name}: {backbone.repo}@{backbone.revision} has no config.json")
        hub.snapshot_download(
            backbone.repo,
            revision=backbone.revision,
            local_dir=target,
            cache_dir=cache_dir,
            allow_patterns=files,
        )
    except GatedRepoError as e:
        raise CheckpointError(
            f"{backbone.name}: {backbone.repo} is gated: accept its licence on the hub page and set HF_TOKEN ({e})"
        ) from None
    except RevisionNotFoundError as e:
        raise CheckpointError(
            f"{backbone.name}: revision {backbone.revision} not found in {backbone.repo} ({e})"
        ) from None
    except (RepositoryNotFoundError, HfHubHTTPError, OSError) as e:
        raise CheckpointError(
            f"{backbone.name}: fetching {backbone.repo}@{backbone.revision} failed: {e}"
        ) from None
    missing = [f for f in files if not (target / f).exists()]
    if missing:
        raise CheckpointError(
            f"{backbone.name}: {len(missing)} file(s) missing after download: {missing[:5]}"
        )
    records = _read_record(dest)
    records[backbone.name] = {"repo": backbone.repo, "revision": backbone.revision, "files": files}
    (dest / RECORD).write_text(json.dumps(records, indent=1, sort_keys=True))
    print(f"{backbone.name}: {backbone.repo}@{backbone.revision[:8]} -> {target} ({len(files)} files)")
    return target


def check(backbones: dict[str, Backbone], dest: Path) -> list[str]:
    """What is missing or at another revision in `dest` (offline)."""
    records = _read_record(dest)
    problems = []
    for name, b in backbones.items():
        rec = records.get(name)
        if rec is None:
            problems.append(f"{name}: not fetched into {dest / name}")
        elif rec["revision"] != b.revision:
            problems.append(
                f"{name}: {dest / name} holds revision {rec['revision']}, the manifest pins {b.revision}"
            )
        elif missing := [f for f in rec["files"] if not (dest / name / f).exists()]:
            problems.append(f"{name}: {len(missing)} file(s) missing, e.g. {missing[0]}")
    return problems


def build_parser(backbones: dict[str, Backbone]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="basic checkpoints", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dest",
        type=Path,
        default=Path("models/backbones"),
        help="one folder per backbone (default %(default)s)",
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="huggingface_hub cache (default: HF_HOME's)")
    p.add_argument("--only", nargs="+", choices=sorted(backbones), help="fetch only these backbones")
    p.add_argument("--check", action="store_true", help="only report what is missing (no network)")
    return p


def main(argv: list[str] | None = None) -> int:
    backbones = load_backbones()
    args = build_parser(backbones).parse_args(argv)
    chosen = {n: backbones[n] for n in (args.only or backbones)}
    if args.check:
        problems = check(chosen, args.dest)
        print(
            "\n".join(problems)
            or f"all {len(chosen)} backbones present at their pinned revisions in {args.dest}"
        )
        return 1 if problems else 0
    args.dest.mkdir(parents=True, exist_ok=True)
    errors = []
    for b in chosen.values():
        try:
            fetch(b, args.dest, args.cache_dir)
        except CheckpointError as e:
            errors.append(str(e))
    if errors:
        print(
            "basic checkpoints: " + "\n  ".join([f"{len(errors)} backbone(s) failed:", *errors]),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
