"""`basic download`: fetch the files a manifest lists, verified, resumable, in parallel.

A manifest (YAML, see `basic/full/manifests/`) lists `files`, each `{url, sha256, path}` with optional `size`,
`unpack: zip|tar`, `unpack_to` and `provides`, and optionally `image_lists` (OCR-VQA: one image per URL of a
list file). `include:` pulls in other manifests. Shipped manifests are named without `.yaml`
(`basic download --manifest full --dest data/full`).

Policy, so that nothing is lost or silent:
- a transfer goes to `<path>.part` and is resumed with an HTTP Range request (in this run after a cut
  connection, or in the next run); only a verified file takes its final name;
- the sha256 is checked against the manifest; where the manifest says `sha256: null` (not known yet) the
  first download's checksum is recorded in `DEST/.basic-download.json` and later runs hold the file to it;
- a file already present and verified is skipped (its size and mtime are remembered, so a second run
  neither fetches nor re-hashes anything; `--verify` re-hashes);
- a checksum mismatch, an HTTP error or a short transfer fails with a message naming the file; all
  failures of a run are reported together at the end, and the exit code is 1;
- image lists fetch what they can and write the images they could not fetch to a report; more than the
  manifest's explicit `max_missing` is an error.

Every URL can be pointed at a mirror: `--mirror PREFIX=REPLACEMENT` (repeatable) or the environment variable
`BASIC_MIRRORS` (whitespace-separated rules) rewrite any URL that starts with PREFIX (longest prefix wins);
`HF_ENDPOINT`, the Hugging Face hub's own mirror variable, rewrites `https://huggingface.co`. A mirror may be a
`file://` URL (a shared filesystem), which is copied with the same resume and verification.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import queue
import shutil
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import requests
import yaml
from tqdm import tqdm

from basic.schema import check_keys

STATE_FILE = ".basic-download.json"
CHUNK = 1 << 20
NET_CHUNK = 1 << 16  # a cut connection loses at most the chunk being read, so keep it small
UNPACK_KINDS = ("zip", "tar")
LIST_FORMATS = ("ocr_vqa",)


class DownloadError(Exception):
    """A file could not be fetched or verified; the message names the file."""


class _Incomplete(Exception):
    """A transfer ended before all bytes arrived (retried, resumed from where it stopped)."""


# ---------------------------------------------------------------------------------------------------------
# Manifests


@dataclass(frozen=True)
class FileEntry:
    path: str
    url: str | None
    sha256: str | None
    size: int | None = None
    unpack: str | None = None
    unpack_to: str | None = None
    provides: tuple[str, ...] = ()
    manual: str | None = None
    """How to obtain the file when it has no public direct URL (url is null)."""

    @property
    def unpack_dir(self) -> str:
        return self.unpack_to or str(PurePosixPath(self.path).parent)


@dataclass(frozen=True)
class ImageList:
    name: str
    format: str
    list: str
    dest: str
    report: str
    max_missing: int
    ext: str = ".jpg"
    referenced_by: str | None = None
    provides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    name: str
    source: str
    files: tuple[FileEntry, ...]
    image_lists: tuple[ImageList, ...] = ()
    description: str = ""

    @property
    def provides(self) -> set[str]:
        """Every path (file or folder, relative to DEST) the manifest yields once downloaded."""
        out = set()
        for f in self.files:
            out.add(f.path)
            out.update(f.provides)
        for lst in self.image_lists:
            out.add(lst.dest)
            out.update(lst.provides)
        return out


_FILE_KEYS = {"path", "url", "sha256", "size", "unpack", "unpack_to", "provides", "manual"}
_LIST_KEYS = {"name", "format", "list", "dest", "report", "max_missing", "ext", "referenced_by", "provides"}
_TOP_KEYS = {"name", "description", "include", "files", "image_lists"}


def manifest_names() -> list[str]:
    """Names of the manifests shipped in `basic/full/manifests/`."""
    folder = resources.files("basic.full") / "manifests"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_manifest(name_or_path: str | os.PathLike) -> Path:
    """A path to a manifest file, or the name of a shipped one (`full`, `pretrain`, `ocr_vqa`...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = resources.files("basic.full") / "manifests" / f"{name_or_path}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise DownloadError(
        f"manifest {str(name_or_path)!r} is neither a file nor a shipped manifest ({', '.join(manifest_names())})"
    )


def _relative(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise DownloadError(f"{where}: expected a relative path, got {value!r}")
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts:
        raise DownloadError(f"{where}: {value!r} must be a relative path inside DEST")
    return str(p)


def _parse_file(where: str, d: dict) -> FileEntry:
    check_keys(d, _FILE_KEYS, where, {"path", "url", "sha256"}, error=DownloadError)
    where = f"{where} ({d['path']})"
    sha = d["sha256"]
    if sha is not None and not (
        isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
    ):
        raise DownloadError(f"{where}: sha256 must be 64 lowercase hex digits or null (unknown), got {sha!r}")
    if d.get("unpack") not in (None, *UNPACK_KINDS):
        raise DownloadError(f"{where}: unpack must be one of {', '.join(UNPACK_KINDS)}, got {d['unpack']!r}")
    if d["url"] is None and not d.get("manual"):
        raise DownloadError(f"{where}: a file without url needs `manual` (how to obtain it)")
    size = d.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise DownloadError(f"{where}: size must be a byte count, got {size!r}")
    return FileEntry(
        path=_relative(where, d["path"]),
        url=d["url"],
        sha256=sha,
        size=size,
        unpack=d.get("unpack"),
        unpack_to=_relative(where, d["unpack_to"]) if d.get("unpack_to") else None,
        provides=tuple(_relative(where, p) for p in d.get("provides", [])),
        manual=d.get("manual"),
    )


def _parse_list(where: str, d: dict) -> ImageList:
    check_keys(
        d, _LIST_KEYS, where, {"name", "format", "list", "dest", "report", "max_missing"}, error=DownloadError
    )
    if d["format"] not in LIST_FORMATS:
        raise DownloadError(f"{where}: format must be one of {', '.join(LIST_FORMATS)}, got {d['format']!r}")
    if not isinstance(d["max_missing"], int) or d["max_missing"] < 0:
        raise DownloadError(f"{where}: max_missing must be a count >= 0, got {d['max_missing']!r}")
    return ImageList(
        name=d["name"],
        format=d["format"],
        list=_relative(where, d["list"]),
        dest=_relative(where, d["dest"]),
        report=_relative(where, d["report"]),
        max_missing=d["max_missing"],
        ext=d.get("ext", ".jpg"),
        referenced_by=_relative(where, d["referenced_by"]) if d.get("referenced_by") else None,
        provides=tuple(_relative(where, p) for p in d.get("provides", [])),
    )


def load_manifest(name_or_path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> Manifest:
    """Parse a manifest and its includes into one flat Manifest; bad keys and duplicate paths are errors."""
    path = resolve_manifest(name_or_path).resolve()
    if path in _seen:
        raise DownloadError(f"{path}: include cycle ({' -> '.join(p.name for p in _seen + (path,))})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DownloadError(f"{path}: not valid YAML: {e}") from e
    check_keys(data, _TOP_KEYS, str(path), {"name"}, error=DownloadError)
    files: list[FileEntry] = []
    lists: list[ImageList] = []
    for inc in data.get("include", []):
        sub = load_manifest(
            path.parent / f"{inc}.yaml" if (path.parent / f"{inc}.yaml").is_file() else inc, _seen + (path,)
        )
        files += sub.files
        lists += sub.image_lists
    files += [_parse_file(f"{path}: files[{i}]", d) for i, d in enumerate(data.get("files") or [])]
    lists += [
        _parse_list(f"{path}: image_lists[{i}]", d) for i, d in enumerate(data.get("image_lists") or [])
    ]
    seen_paths: set[str] = set()
    for f in files:
        if f.path in seen_paths:
            raise DownloadError(f"{path}: file {f.path} is listed twice")
        seen_paths.add(f.path)
    return Manifest(
        name=data["name"],
        source=str(path),
        files=tuple(files),
        image_lists=tuple(lists),
        description=data.get("description", ""),
    )


# ---------------------------------------------------------------------------------------------------------
# Mirrors


@dataclass(frozen=True)
class Mirrors:
    rules: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_args(cls, rules: Iterable[str] = (), environ: dict[str, str] | None = None) -> Mirrors:
        environ = os.environ if environ is None else environ
        specs = list(environ.get("BASIC_MIRRORS", "").split()) + list(rules)
        parsed = []
        if environ.get("HF_ENDPOINT"):
            parsed.append(("https://huggingface.co", environ["HF_ENDPOINT"].rstrip("/")))
        for spec in specs:
            prefix, sep, replacement = spec.partition("=")
            if not sep or not prefix or not replacement:
                raise DownloadError(f"mirror rule {spec!r} is not PREFIX=REPLACEMENT")
            parsed.append((prefix, replacement))
        return cls(tuple(parsed))

    def resolve(self, url: str) -> str:
        best = max((r for r in self.rules if url.startswith(r[0])), key=lambda r: len(r[0]), default=None)
        return url if best is None else best[1] + url[len(best[0]) :]


# ---------------------------------------------------------------------------------------------------------
# State: what has been verified (and unpacked) already


class State:
    """`DEST/.basic-download.json`: per path, the verified sha256, size and mtime, and whether it was unpacked."""

    def __init__(self, dest: Path):
        self.path = dest / STATE_FILE
        self._lock = threading.Lock()
        try:
            self.records: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}
        except json.JSONDecodeError as e:
            raise DownloadError(
                f"{self.path}: unreadable state file ({e}); delete it to re-verify everything"
            ) from e

    def get(self, key: str) -> dict | None:
        with self._lock:
            return dict(self.records[key]) if key in self.records else None

    def put(self, key: str, **values: Any) -> None:
        with self._lock:
            self.records[key] = {**self.records.get(key, {}), **values}
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.records, indent=1, sort_keys=True))
            os.replace(tmp, self.path)


def sha256_file(path: Path, progress: Callable[[int], Any] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Transfers


@dataclass
class Options:
    dest: Path
    mirrors: Mirrors = field(default_factory=Mirrors)
    jobs: int = 4
    retries: int = 3
    backoff: float = 2.0
    timeout: float = 60.0
    verify: bool = False
    delete_archives: bool = False
    progress: bool = True
    max_missing: int | None = None
    """Overrides every image list's `max_missing` when set."""
    use_existing: bool = False
    """Accept an archive's folders that are already there (e.g. links to a shared copy) unverified."""


_local = threading.local()


def _session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
        _local.session.headers["User-Agent"] = "basic-repro-download/1"
        # Byte ranges and Content-Length must refer to the file itself, not to a compressed stream.
        _local.session.headers["Accept-Encoding"] = "identity"
    return _local.session


def _auth_headers(url: str) -> dict[str, str]:
    # Gated hub repos need the user's token; requests drops it on the redirect to the CDN.
    token = os.environ.get("HF_TOKEN")
    hub_hosts = {"huggingface.co", urlparse(os.environ.get("HF_ENDPOINT", "")).hostname}
    return {"Authorization": f"Bearer {token}"} if token and urlparse(url).hostname in hub_hosts else {}


def _open_stream(
    url: str, offset: int, timeout: float
) -> tuple[int, int | None, Iterable[bytes], Callable[[], None]]:
    """Start reading `url` at byte `offset`: (offset actually used, total size or None, chunks, close)."""
    if url.startswith("file://"):
        src = Path(unquote(urlparse(url).path))
        if not src.is_file():
            raise FileNotFoundError(f"no such file {src} (from {url})")
        f = open(src, "rb")  # noqa: SIM115 - closed by the caller through the returned close()
        total = src.stat().st_size
        offset = min(offset, total)
        f.seek(offset)
        return offset, total, iter(lambda: f.read(CHUNK), b""), f.close
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    r = _session().get(url, headers={**headers, **_auth_headers(url)}, stream=True, timeout=timeout)
    if r.status_code == 416 and offset:  # the partial file is already complete (or longer than the source)
        size = r.headers.get("Content-Range", "").rpartition("/")[2]
        r.close()
        if size.isdigit() and int(size) == offset:
            return offset, offset, iter(()), lambda: None
        return _open_stream(url, 0, timeout)
    if r.status_code >= 400:
        r.close()
        raise requests.HTTPError(f"HTTP {r.status_code} {r.reason} from {url}", response=r)
    if offset and r.status_code == 206 and r.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
        length = r.headers.get("Content-Length")
        total = offset + int(length) if length else None
    else:  # server ignored the Range request: start over
        offset = 0
        length = r.headers.get("Content-Length")
        total = int(length) if length else None
    return offset, total, r.iter_content(NET_CHUNK), r.close


def _transfer(
    url: str, part: Path, label: str, opts: Options, position: int, expected_size: int | None
) -> str:
    """Download `url` into `part`, resuming what is there; return the sha256 of the complete file."""
    for attempt in range(opts.retries + 1):
        offset = part.stat().st_size if part.exists() else 0
        try:
            offset, total, chunks, close = _open_stream(url, offset, opts.timeout)
            if expected_size is not None and total is not None and total != expected_size:
                close()
                raise DownloadError(
                    f"{label}: the source has {total} bytes, the manifest says {expected_size} ({url})"
                )
            h = hashlib.sha256()
            if offset:
                with open(part, "rb") as f:  # hash the bytes already on disk, then the rest as it streams
                    remaining = offset
                    while remaining and (chunk := f.read(min(CHUNK, remaining))):
                        h.update(chunk)
                        remaining -= len(chunk)
            mode = "r+b" if offset else "wb"
            with (
                open(part, mode) as f,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=label,
                    position=position,
                    leave=False,
                    disable=not opts.progress,
                    dynamic_ncols=True,
                ) as bar,
            ):
                f.seek(offset)
                f.truncate()
                written = offset
                try:
                    for chunk in chunks:
                        f.write(chunk)
                        h.update(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
                finally:
                    close()
            if total is not None and written != total:
                raise _Incomplete(f"got {written} of {total} bytes")
            return h.hexdigest()
        except requests.HTTPError as e:
            status = e.response.status_code if e.response is not None else 0
            if not (status in (408, 429) or status >= 500):  # client errors do not heal by retrying
                raise DownloadError(f"{label}: {e}") from None
            err: Exception = e
        except (requests.RequestException, _Incomplete) as e:  # cut connection, timeout, short read
            err = e
        except OSError as e:  # local trouble (disk full, permissions): no point retrying
            raise DownloadError(f"{label}: {e}") from None
        if attempt < opts.retries:
            tqdm.write(
                f"{label}: transfer interrupted ({err}); resuming (attempt {attempt + 2}/{opts.retries + 1})"
            )
            time.sleep(opts.backoff * 2**attempt)
    raise DownloadError(
        f"{label}: transfer from {url} failed after {opts.retries + 1} attempts ({err}); "
        f"{part.name} keeps the {part.stat().st_size if part.exists() else 0} bytes received, the next run resumes it"
    )


# ---------------------------------------------------------------------------------------------------------
# Unpacking


def _strip_prefix(names: list[str], target_name: str) -> str:
    """The leading folder path to drop so that an archive's contents land in the target folder itself.

    If every member lies under a common folder path whose last matching component is named like the
    target folder (`train2017/...` into `coco/train2017`, `images/...` into `gqa/images`), that path is
    stripped; an archive of loose files or of several top-level folders is extracted as it is."""
    dirs = [PurePosixPath(n).parts[:-1] if not n.endswith("/") else PurePosixPath(n).parts for n in names]
    if not dirs:
        return ""
    common: list[str] = []
    for level in zip(*dirs):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    for i in range(len(common) - 1, -1, -1):
        if common[i] == target_name:
            return "/".join(common[: i + 1]) + "/"
    return ""


def _safe_member(archive: Path, name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts:
        raise DownloadError(f"{archive.name}: refusing to extract member {name!r} outside the target folder")
    return p


def unpack(archive: Path, kind: str, target: Path, label: str, progress: bool = True) -> int:
    """Extract `archive` into `target` (see `_strip_prefix`); return the number of files written."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            zf = zipfile.ZipFile(archive)
            members = [m for m in zf.infolist() if not m.filename.startswith("__MACOSX/")]
            names = [m.filename for m in members]
            open_member = zf.open
            is_dir = [m.is_dir() for m in members]
            sizes = [m.file_size for m in members]
            close = zf.close
        else:
            tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed below, like the zip
            members = [m for m in tf.getmembers() if m.isfile() or m.isdir()]
            skipped = [m.name for m in tf.getmembers() if not (m.isfile() or m.isdir())]
            if skipped:
                raise DownloadError(f"{label}: archive holds links or special files ({skipped[:3]}), refused")
            names = [m.name + ("/" if m.isdir() else "") for m in members]
            open_member = tf.extractfile
            is_dir = [m.isdir() for m in members]
            sizes = [m.size for m in members]
            close = tf.close
    except (zipfile.BadZipFile, tarfile.TarError) as e:
        raise DownloadError(f"{label}: not a valid {kind} archive ({e})") from None
    strip = _strip_prefix(names, target.name)
    count = 0
    try:
        with tqdm(
            total=sum(sizes),
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"unpack {label}",
            leave=False,
            disable=not progress,
            dynamic_ncols=True,
        ) as bar:
            for member, name, directory, size in zip(members, names, is_dir, sizes):
                rel = _safe_member(archive, name.removeprefix(strip))
                if not str(rel) or str(rel) == ".":
                    continue
                out = target / rel
                if directory:
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(out.name + ".unpacking")
                with open_member(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                os.replace(tmp, out)
                count += 1
                bar.update(size)
    finally:
        close()
    return count


# ---------------------------------------------------------------------------------------------------------
# One file: skip, verify, fetch, unpack


@dataclass
class Outcome:
    path: str
    action: str  # "skipped" | "downloaded" | "verified" | "recorded"
    sha256: str | None
    unpacked: int | None = None
    note: str = ""


def _verify_present(entry: FileEntry, target: Path, state: State, opts: Options) -> tuple[str, str]:
    """Check a file already in DEST: known good from the state (no hashing) or hashed now. (sha, action)"""
    rec = state.get(entry.path) or {}
    expected = entry.sha256 or rec.get("sha256")
    st = target.stat()
    if (
        not opts.verify
        and rec.get("sha256")
        and rec.get("size") == st.st_size
        and rec.get("mtime_ns") == st.st_mtime_ns
        and (entry.sha256 is None or rec["sha256"] == entry.sha256)
    ):
        return rec["sha256"], "skipped"
    with tqdm(
        total=st.st_size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"sha256 {entry.path}",
        leave=False,
        disable=not opts.progress,
        dynamic_ncols=True,
    ) as bar:
        actual = sha256_file(target, bar.update)
    if expected and actual != expected:
        raise DownloadError(
            f"{entry.path}: sha256 mismatch for the file already in {opts.dest}: expected {expected}, got {actual}. "
            f"Delete it to download it again (or correct the manifest if the source changed)"
        )
    state.put(entry.path, sha256=actual, size=st.st_size, mtime_ns=st.st_mtime_ns)
    return actual, "verified" if expected else "recorded"


def ensure_file(entry: FileEntry, opts: Options, state: State, position: int = 0) -> Outcome:
    target = opts.dest / entry.path
    rec = state.get(entry.path) or {}
    unpack_dir = opts.dest / entry.unpack_dir
    if (
        entry.unpack
        and rec.get("unpacked")
        and rec.get("archive_deleted")
        and not target.exists()
        and unpack_dir.is_dir()
    ):
        return Outcome(entry.path, "skipped", rec.get("sha256"), note="unpacked earlier, archive deleted")
    if (
        opts.use_existing
        and entry.unpack
        and entry.provides
        and not target.exists()
        and all((opts.dest / p).is_dir() and any((opts.dest / p).iterdir()) for p in entry.provides)
    ):
        state.put(entry.path, unpacked=True, unpacked_to=entry.unpack_dir, archive_deleted=True, trusted=True)
        return Outcome(
            entry.path,
            "skipped",
            None,
            note="its folders are already there: used unverified (--use-existing)",
        )
    if target.exists():
        sha, action = _verify_present(entry, target, state, opts)
    else:
        if entry.url is None:
            raise DownloadError(
                f"{entry.path}: has no public download URL and is not in {opts.dest}. {entry.manual}"
            )
        url = opts.mirrors.resolve(entry.url)
        part = target.with_name(target.name + ".part")
        target.parent.mkdir(parents=True, exist_ok=True)
        sha = _transfer(url, part, entry.path, opts, position, entry.size)
        size = part.stat().st_size
        if entry.size is not None and size != entry.size:
            raise DownloadError(f"{entry.path}: got {size} bytes, the manifest says {entry.size} ({url})")
        expected = entry.sha256 or rec.get("sha256")
        if expected and sha != expected:
            bad = target.with_name(target.name + ".sha256-mismatch")
            os.replace(part, bad)
            raise DownloadError(
                f"{entry.path}: sha256 mismatch: expected {expected}, got {sha} (from {url}). "
                f"The download is kept as {bad.name} for inspection; the next run fetches the file again"
            )
        os.replace(part, target)
        st = target.stat()
        state.put(
            entry.path,
            sha256=sha,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            url=url,
            unpacked=False,
            archive_deleted=False,
        )
        action = "downloaded"
        if not expected:
            tqdm.write(
                f"{entry.path}: no checksum was known; recorded sha256 {sha} in {state.path} "
                f"(copy it into {entry.path}'s manifest entry to pin it)"
            )
    outcome = Outcome(entry.path, action, sha)
    if entry.unpack:
        rec = state.get(entry.path) or {}
        if not (rec.get("unpacked") and unpack_dir.is_dir()):
            outcome.unpacked = unpack(target, entry.unpack, unpack_dir, entry.path, opts.progress)
            state.put(entry.path, unpacked=True, unpacked_to=entry.unpack_dir)
        if opts.delete_archives:
            target.unlink()
            state.put(entry.path, archive_deleted=True)
    return outcome


# ---------------------------------------------------------------------------------------------------------
# Image lists (OCR-VQA): one image per URL, saved under the id the LLaVA json uses


def _ocr_vqa_urls(list_path: Path) -> dict[str, str]:
    try:
        data = json.loads(list_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DownloadError(f"{list_path}: unreadable OCR-VQA list ({e})") from None
    if not isinstance(data, dict):
        raise DownloadError(f"{list_path}: expected OCR-VQA's dataset.json, a mapping id -> record")
    urls = {}
    for key, rec in data.items():
        if not isinstance(rec, dict) or not isinstance(rec.get("imageURL"), str):
            raise DownloadError(f"{list_path}: record {key!r} has no imageURL")
        urls[str(key)] = rec["imageURL"]
    return urls


def _referenced_images(llava_json: Path, folder: str) -> set[str]:
    """Image file names under `folder` that a LLaVA conversation json uses."""
    try:
        records = json.loads(llava_json.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DownloadError(f"{llava_json}: unreadable ({e}); download it first (manifest mix665k)") from None
    prefix = folder.rstrip("/") + "/"
    return {
        r["image"][len(prefix) :]
        for r in records
        if isinstance(r.get("image"), str) and r["image"].startswith(prefix)
    }


def _fetch_image(url: str, out: Path, opts: Options) -> None:
    """Fetch one image and store its bytes under `out` (the .jpg name LLaVA uses, whatever the format)."""
    from PIL import Image  # only this path needs Pillow

    err: Exception | None = None
    for attempt in range(opts.retries + 1):
        try:
            r = _session().get(url, timeout=opts.timeout)
            if r.status_code >= 400 and not (r.status_code in (408, 429) or r.status_code >= 500):
                raise DownloadError(f"HTTP {r.status_code} {r.reason}")
            r.raise_for_status()
            data = r.content
            break
        except (requests.RequestException, OSError) as e:
            err = e
            if attempt < opts.retries:
                time.sleep(opts.backoff * 2**attempt)
    else:
        raise DownloadError(str(err))
    try:  # a placeholder page or a truncated file is a failure, not an image
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception as e:  # noqa: BLE001 - PIL raises many types for undecodable data
        raise DownloadError(f"not a readable image ({type(e).__name__}: {e})") from None
    tmp = out.with_name(out.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, out)


def fetch_image_list(lst: ImageList, opts: Options) -> dict:
    """Fetch every image of the list (or the ones `referenced_by` uses); write and return the report."""
    list_path = opts.dest / lst.list
    if not list_path.exists():
        raise DownloadError(f"{lst.name}: its list {lst.list} is not in {opts.dest}")
    urls = _ocr_vqa_urls(list_path)
    folder = opts.dest / lst.dest
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f"{key}{lst.ext}": url for key, url in urls.items()}
    missing: list[dict] = []
    if lst.referenced_by:
        refs = _referenced_images(opts.dest / lst.referenced_by, lst.dest)
        missing += [
            {"image": name, "url": None, "error": f"not in {lst.list}"} for name in sorted(refs - set(wanted))
        ]
        wanted = {name: url for name, url in wanted.items() if name in refs}
    todo = {name: url for name, url in wanted.items() if not (folder / name).is_file() or opts.verify}
    with (
        ThreadPoolExecutor(max_workers=max(1, opts.jobs * 4)) as pool,
        tqdm(
            total=len(wanted),
            initial=len(wanted) - len(todo),
            desc=lst.name,
            unit="img",
            disable=not opts.progress,
            dynamic_ncols=True,
        ) as bar,
    ):
        futures = {
            pool.submit(_fetch_image, opts.mirrors.resolve(url), folder / name, opts): (name, url)
            for name, url in todo.items()
        }
        for fut in as_completed(futures):
            name, url = futures[fut]
            try:
                fut.result()
            except DownloadError as e:
                missing.append({"image": name, "url": url, "error": str(e)})
            bar.update()
    missing.sort(key=lambda m: m["image"])
    report = {
        "list": lst.list,
        "folder": lst.dest,
        "wanted": len(wanted) + sum(m["url"] is None for m in missing),
        "present": len(wanted) - sum(m["url"] is not None for m in missing),
        "missing": len(missing),
        "images": missing,
    }
    (opts.dest / lst.report).parent.mkdir(parents=True, exist_ok=True)
    limit = lst.max_missing if opts.max_missing is None else opts.max_missing
    report["max_missing"] = limit
    (opts.dest / lst.report).write_text(json.dumps(report, indent=1))
    print(
        f"{lst.name}: {report['present']} of {report['wanted']} images present, {len(missing)} missing "
        f"(listed in {lst.report}; limit {limit})"
    )
    if len(missing) > limit:
        raise DownloadError(
            f"{lst.name}: {len(missing)} images could not be fetched, more than max_missing="
            f"{limit}; see {opts.dest / lst.report}"
        )
    return report


# ---------------------------------------------------------------------------------------------------------
# The whole manifest


def download(manifest: Manifest, opts: Options) -> list[Outcome]:
    """Fetch, verify and unpack every file (in parallel), then the image lists; raise on any failure."""
    opts.dest.mkdir(parents=True, exist_ok=True)
    state = State(opts.dest)
    slots: queue.Queue[int] = queue.Queue()
    for i in range(max(1, opts.jobs)):
        slots.put(i)

    def one(entry: FileEntry) -> Outcome:
        slot = slots.get()
        try:
            return ensure_file(entry, opts, state, position=slot)
        finally:
            slots.put(slot)

    outcomes: list[Outcome] = []
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
        futures = {pool.submit(one, f): f for f in manifest.files}
        for fut in as_completed(futures):
            try:
                outcomes.append(fut.result())
            except DownloadError as e:
                errors.append(str(e))
            except Exception as e:  # noqa: BLE001 - an unexpected failure still names its file
                errors.append(f"{futures[fut].path}: {type(e).__name__}: {e}")
    if not errors:
        for lst in manifest.image_lists:
            try:
                fetch_image_list(lst, opts)
            except DownloadError as e:
                errors.append(str(e))
    for o in sorted(outcomes, key=lambda o: o.path):
        extra = f", unpacked {o.unpacked} files" if o.unpacked is not None else ""
        print(f"{o.action:>10}  {o.path}{extra}{'  (' + o.note + ')' if o.note else ''}")
    if errors:
        raise DownloadError(
            f"{len(errors)} of {len(manifest.files) + len(manifest.image_lists)} item(s) failed:\n  "
            + "\n  ".join(sorted(errors))
        )
    return outcomes


def check(manifest: Manifest, dest: Path) -> list[str]:
    """What is missing or unverified in `dest` (no network, no hashing): the full profile's data check."""
    state = State(dest)
    problems = []
    for f in manifest.files:
        rec = state.get(f.path) or {}
        if rec.get("trusted"):
            pass  # the user's own copy of the unpacked folders (--use-existing); `provides` is checked below
        elif not rec.get("sha256"):
            problems.append(f"{f.path}: not downloaded and verified")
        elif f.sha256 and rec["sha256"] != f.sha256:
            problems.append(f"{f.path}: verified as {rec['sha256']}, the manifest now says {f.sha256}")
        for p in f.provides:
            if not (dest / p).exists():
                problems.append(f"{p}: missing (from {f.path})")
    for lst in manifest.image_lists:
        if not (dest / lst.report).exists():
            problems.append(f"{lst.dest}: images not fetched yet ({lst.name})")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="basic download",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--manifest",
        action="append",
        required=True,
        help=f"manifest file or shipped name ({', '.join(manifest_names())}); repeatable",
    )
    p.add_argument("--dest", required=True, type=Path, help="folder the manifest's paths are relative to")
    p.add_argument("--jobs", type=int, default=4, help="parallel transfers (default 4)")
    p.add_argument("--retries", type=int, default=3, help="resumed retries of a cut transfer (default 3)")
    p.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="PREFIX=REPLACEMENT",
        help="rewrite URLs starting with PREFIX (also BASIC_MIRRORS, HF_ENDPOINT)",
    )
    p.add_argument("--verify", action="store_true", help="re-hash files even if verified before")
    p.add_argument("--delete-archives", action="store_true", help="delete zip/tar files once unpacked")
    p.add_argument(
        "--use-existing",
        action="store_true",
        help="accept image folders already in DEST (e.g. links to a shared copy) instead of downloading "
        "their archives; they are not verified",
    )
    p.add_argument(
        "--max-missing",
        type=int,
        default=None,
        help="override the manifests' limit on images an image list may fail to fetch",
    )
    p.add_argument(
        "--check", action="store_true", help="only report what is missing or unverified (no network)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        for name in args.manifest:
            manifest = load_manifest(name)
            if args.check:
                problems = check(manifest, args.dest)
                for line in problems:
                    print(line)
                if problems:
                    return 1
                print(f"{manifest.name}: all {len(manifest.files)} files verified in {args.dest}")
                continue
            download(
                manifest,
                Options(
                    dest=args.dest,
                    mirrors=Mirrors.from_args(args.mirror),
                    jobs=args.jobs,
                    retries=args.retries,
                    verify=args.verify,
                    delete_archives=args.delete_archives,
                    progress=not args.no_progress,
                    max_missing=args.max_missing,
                    use_existing=args.use_existing,
                ),
            )
    except DownloadError as e:
        print(f"basic download: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
