"""The mini backbones as a shipped, checksummed artifact: the study's default skips their minutes of pretraining.

`basic mini backbones` is deterministic: the same world, settings, code and library versions give the same
checkpoints. So the repository ships the result (`artifacts/mini-backbones.tar.gz`) with a fingerprint of
everything it was built from (`fingerprint`: the world's manifest, the command's settings, the source of
the modules that build the backbones, torch's and transformers' versions) and the sha256 of every file in
it. `basic mini backbones --prebuilt ARTIFACT` unpacks it when the fingerprint matches what it would build
now, verifying each file, and builds from scratch otherwise (saying what differs); `--pack ARTIFACT`
writes the artifact after a build. Rebuilding it is the one command in docs/pipeline.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from importlib import metadata
from pathlib import Path

FORMAT = 1
RECORD = "prebuilt.json"  # inside the artifact: fingerprint, its parts and the files' sha256
# The source the backbones are built from (relative to the `basic` package): the mini world's modules and
# what they import from the library.
SOURCES = ("mini", "families.py", "data/templates.py", "data/labels.py")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _package_root() -> Path:
    return Path(__file__).resolve().parents[1]


def source_digest() -> str:
    """sha256 over the build's source files (names and contents), in a fixed order."""
    root = _package_root()
    files = sorted(
        p
        for entry in SOURCES
        for p in ((root / entry).rglob("*.py") if (root / entry).is_dir() else [root / entry])
    )
    h = hashlib.sha256()
    for path in files:
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def inputs(data: Path, seed: int, settings: dict) -> dict:
    """What a build depends on, by name; `fingerprint` hashes it."""
    manifest = Path(data) / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no world manifest (run `basic mini data --out {data}` first)")
    return {
        "format": FORMAT,
        "world": _sha256(manifest.read_bytes()),
        "seed": seed,
        "settings": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in sorted(settings.items())
            if k not in ("workers", "threads")
        },  # how the work is split does not change the result
        "source": source_digest(),
        "torch": metadata.version("torch"),
        "transformers": metadata.version("transformers"),
    }


def fingerprint(parts: dict) -> str:
    return _sha256(json.dumps(parts, sort_keys=True).encode())


def pack(models: Path, artifact: Path, parts: dict) -> Path:
    """Write every file under `models` into `artifact` (gzip tar) with the record of what built them."""
    models, artifact = Path(models), Path(artifact)
    files = sorted(p for p in models.rglob("*") if p.is_file() and p.name != RECORD)
    record = {
        "fingerprint": fingerprint(parts),
        "inputs": parts,
        "files": {str(p.relative_to(models)): _sha256(p.read_bytes()) for p in files},
    }
    artifact.parent.mkdir(parents=True, exist_ok=True)
    tmp = artifact.with_name(artifact.name + ".tmp")
    # Fixed metadata (mtime, owner) so that the same checkpoints give the same archive bytes.
    with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [(RECORD, json.dumps(record, indent=1, sort_keys=True).encode())] + [
            (str(p.relative_to(models)), p.read_bytes()) for p in files
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(artifact)
    return artifact


def read_record(artifact: Path) -> dict:
    with tarfile.open(artifact, "r:gz") as tar:
        member = tar.extractfile(RECORD)
        if member is None:
            raise ValueError(f"{artifact}: no {RECORD} (not a mini backbones artifact)")
        return json.loads(member.read())


def differences(record: dict, parts: dict) -> list[str]:
    """The inputs that differ between the artifact's build and this one, by name."""
    built = record.get("inputs", {})
    return [key for key in sorted(set(built) | set(parts)) if built.get(key) != parts.get(key)]


def unpack(artifact: Path, models: Path) -> dict:
    """Extract the artifact into `models`, checking every file's sha256; returns its record."""
    artifact, models = Path(artifact), Path(models)
    record = read_record(artifact)
    expected = record["files"]
    with tarfile.open(artifact, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile() and m.name != RECORD}
        if set(members) != set(expected):
            raise ValueError(
                f"{artifact}: files {sorted(set(members) ^ set(expected))} do not match its {RECORD}"
            )
        for name, sha in expected.items():
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"{artifact}: refusing the path {name!r}")
            data = tar.extractfile(members[name]).read()
            if _sha256(data) != sha:
                raise ValueError(f"{artifact}: {name} does not match its sha256 (corrupt artifact)")
            (models / name).parent.mkdir(parents=True, exist_ok=True)
            (models / name).write_bytes(data)
    return record
