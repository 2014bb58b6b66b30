"""`basic download` against a loopback HTTP server serving fixture files: resume, checksums, errors, unpacking."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from PIL import Image

from basic.full import download as dl


class Server:
    """Serves `files` (url path -> bytes) with Range support; `cut[path] = n` cuts the next n responses
    for that path halfway through, after promising the full length."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.log.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if rng:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if server.cut.get(self.path, 0) > 0:
                    server.cut[self.path] -= 1
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_manifest(tmp_path: Path, files: list[dict], image_lists: list[dict] | None = None) -> dl.Manifest:
    path = tmp_path / "manifest.yaml"
    data = {"name": "test", "files": files}
    if image_lists:
        data["image_lists"] = image_lists
    path.write_text(yaml.safe_dump(data))
    return dl.load_manifest(path)


def opts(dest: Path, **kw) -> dl.Options:
    return dl.Options(dest=dest, progress=False, backoff=0.0, retries=kw.pop("retries", 2), **kw)


BLOB = bytes(range(256)) * 4096  # 1 MiB, so a cut lands in the middle of several chunks


def test_download_verifies_and_second_run_fetches_nothing(server, tmp_path):
    server.files["/a.bin"] = BLOB
    server.files["/b.txt"] = b"hello"
    m = write_manifest(
        tmp_path,
        [
            {"path": "x/a.bin", "url": server.url + "/a.bin", "sha256": sha(BLOB), "size": len(BLOB)},
            {"path": "b.txt", "url": server.url + "/b.txt", "sha256": None},
        ],
    )
    dest = tmp_path / "data"
    out = {o.path: o for o in dl.download(m, opts(dest))}
    assert (dest / "x/a.bin").read_bytes() == BLOB and (dest / "b.txt").read_bytes() == b"hello"
    assert out["x/a.bin"].action == "downloaded" and out["b.txt"].sha256 == sha(b"hello")
    state = json.loads((dest / dl.STATE_FILE).read_text())
    assert state["b.txt"]["sha256"] == sha(b"hello")  # unknown checksum recorded on first download
    assert not list(dest.rglob("*.part"))

    server.log.clear()
    again = dl.download(m, opts(dest))
    assert server.log == []  # nothing fetched
    assert {o.action for o in again} == {"skipped"}


def test_resume_after_cut_connection_in_the_same_run(server, tmp_path):
    server.files["/big.bin"] = BLOB
    server.cut["/big.bin"] = 1
    m = write_manifest(tmp_path, [{"path": "big.bin", "url": server.url + "/big.bin", "sha256": sha(BLOB)}])
    dl.download(m, opts(tmp_path / "d"))
    assert (tmp_path / "d/big.bin").read_bytes() == BLOB
    (_, r1), (_, r2) = server.log
    resumed_at = int(r2.removeprefix("bytes=").rstrip("-"))
    assert r1 is None and 0 < resumed_at <= len(BLOB) // 2  # the retry asked only for the rest


def test_interrupted_run_fails_naming_the_file_and_next_run_resumes(server, tmp_path):
    server.files["/big.bin"] = BLOB
    server.cut["/big.bin"] = 1
    m = write_manifest(
        tmp_path, [{"path": "sub/big.bin", "url": server.url + "/big.bin", "sha256": sha(BLOB)}]
    )
    dest = tmp_path / "d"
    with pytest.raises(dl.DownloadError, match=r"sub/big.bin: transfer from .* failed after 1 attempts"):
        dl.download(m, opts(dest, retries=0))
    part = dest / "sub/big.bin.part"
    kept = part.stat().st_size
    assert 0 < kept <= len(BLOB) // 2 and not (dest / "sub/big.bin").exists()
    server.log.clear()
    dl.download(m, opts(dest, retries=0))
    assert server.log == [("/big.bin", f"bytes={kept}-")]
    assert (dest / "sub/big.bin").read_bytes() == BLOB and not part.exists()


def test_complete_partial_file_is_finished_without_refetching(server, tmp_path):
    server.files["/f"] = b"abcdef"
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "f.part").write_bytes(b"abcdef")  # a run that died between the last byte and the rename
    m = write_manifest(tmp_path, [{"path": "f", "url": server.url + "/f", "sha256": sha(b"abcdef")}])
    dl.download(m, opts(dest))
    assert (dest / "f").read_bytes() == b"abcdef" and server.log == [("/f", "bytes=6-")]


def test_bad_checksum_fails_naming_the_file(server, tmp_path):
    server.files["/f.bin"] = b"tampered"
    m = write_manifest(
        tmp_path, [{"path": "f.bin", "url": server.url + "/f.bin", "sha256": sha(b"original")}]
    )
    dest = tmp_path / "d"
    with pytest.raises(dl.DownloadError, match=r"f.bin: sha256 mismatch: expected " + sha(b"original")):
        dl.download(m, opts(dest))
    assert not (dest / "f.bin").exists()
    assert (dest / "f.bin.sha256-mismatch").read_bytes() == b"tampered"


def test_present_file_with_wrong_checksum_is_an_error_not_a_silent_redownload(server, tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "f.bin").write_bytes(b"corrupt")
    m = write_manifest(tmp_path, [{"path": "f.bin", "url": server.url + "/f.bin", "sha256": sha(b"good")}])
    with pytest.raises(dl.DownloadError, match=r"f.bin: sha256 mismatch for the file already in"):
        dl.download(m, opts(dest))
    assert server.log == []


def test_recorded_checksum_is_enforced_on_later_downloads(server, tmp_path):
    server.files["/f"] = b"version 1"
    m = write_manifest(tmp_path, [{"path": "f", "url": server.url + "/f", "sha256": None}])
    dest = tmp_path / "d"
    dl.download(m, opts(dest))
    (dest / "f").unlink()
    server.files["/f"] = b"version 2"  # the source changed under the same URL
    with pytest.raises(dl.DownloadError, match=r"f: sha256 mismatch: expected " + sha(b"version 1")):
        dl.download(m, opts(dest))


def test_http_404_fails_naming_the_file_and_other_files_still_arrive(server, tmp_path):
    server.files["/ok"] = b"ok"
    m = write_manifest(
        tmp_path,
        [
            {"path": "gone.zip", "url": server.url + "/gone.zip", "sha256": None},
            {"path": "ok", "url": server.url + "/ok", "sha256": sha(b"ok")},
        ],
    )
    with pytest.raises(dl.DownloadError, match=r"1 of 2 item\(s\) failed:\n  gone.zip: HTTP 404"):
        dl.download(m, opts(tmp_path / "d"))
    assert (tmp_path / "d/ok").read_bytes() == b"ok"
    assert [p for p, _ in server.log].count("/gone.zip") == 1  # a 404 is not retried


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_zip_is_unpacked_once_into_its_folder(server, tmp_path):
    archive = zip_bytes({"train2017/000001.jpg": b"one", "train2017/000002.jpg": b"two"})
    server.files["/train2017.zip"] = archive
    m = write_manifest(
        tmp_path,
        [
            {
                "path": "coco/train2017.zip",
                "url": server.url + "/train2017.zip",
                "sha256": sha(archive),
                "unpack": "zip",
                "unpack_to": "coco/train2017",
                "provides": ["coco/train2017"],
            }
        ],
    )
    dest = tmp_path / "d"
    (out,) = dl.download(m, opts(dest))
    assert out.unpacked == 2
    assert (dest / "coco/train2017/000001.jpg").read_bytes() == b"one"  # not coco/train2017/train2017/
    assert dl.check(m, dest) == []
    (again,) = dl.download(m, opts(dest))
    assert again.unpacked is None and again.action == "skipped"

    (dest / "coco/train2017/000001.jpg").unlink()  # --delete-archives frees the zip's space, state remembers
    dl.download(m, opts(dest, verify=True, delete_archives=True))
    assert not (dest / "coco/train2017.zip").exists()
    server.log.clear()
    (final,) = dl.download(m, opts(dest))
    assert final.action == "skipped" and server.log == []


def test_loose_zip_and_nested_tar_layouts(server, tmp_path):
    import tarfile

    loose = zip_bytes({"00000/000000010.jpg": b"a", "00001/000000011.jpg": b"b"})
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w") as t:
        for name, data in {"ocr_vqa/images/1.jpg": b"x", "ocr_vqa/images/2.jpg": b"y"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    server.files["/images.zip"] = loose
    server.files["/ocr.tar"] = tbuf.getvalue()
    m = write_manifest(
        tmp_path,
        [
            {
                "path": "P/images.zip",
                "url": server.url + "/images.zip",
                "sha256": None,
                "unpack": "zip",
                "unpack_to": "P/images",
            },
            {
                "path": "ocr_vqa/ocr.tar",
                "url": server.url + "/ocr.tar",
                "sha256": None,
                "unpack": "tar",
                "unpack_to": "ocr_vqa/images",
            },
        ],
    )
    dest = tmp_path / "d"
    dl.download(m, opts(dest))
    assert (dest / "P/images/00000/000000010.jpg").read_bytes() == b"a"
    assert (dest / "ocr_vqa/images/2.jpg").read_bytes() == b"y"


def test_zip_member_escaping_the_folder_is_refused(server, tmp_path):
    evil = zip_bytes({"../../evil.txt": b"x"})
    server.files["/evil.zip"] = evil
    m = write_manifest(
        tmp_path, [{"path": "e.zip", "url": server.url + "/evil.zip", "sha256": None, "unpack": "zip"}]
    )
    with pytest.raises(dl.DownloadError, match="refusing to extract member"):
        dl.download(m, opts(tmp_path / "d"))
    assert not (tmp_path / "evil.txt").exists()


def test_mirror_rules_redirect_urls(server, tmp_path, monkeypatch):
    server.files["/mirror/datasets/x.json"] = b"{}"
    m = write_manifest(
        tmp_path, [{"path": "x.json", "url": "https://huggingface.co/datasets/x.json", "sha256": sha(b"{}")}]
    )
    monkeypatch.setenv("HF_ENDPOINT", server.url + "/mirror")
    monkeypatch.delenv("BASIC_MIRRORS", raising=False)
    dl.download(m, opts(tmp_path / "d", mirrors=dl.Mirrors.from_args()))
    assert (tmp_path / "d/x.json").read_bytes() == b"{}"

    # a file:// mirror (shared filesystem), through BASIC_MIRRORS, longest prefix winning
    (tmp_path / "shared/datasets").mkdir(parents=True)
    (tmp_path / "shared/datasets/x.json").write_bytes(b"{}")
    monkeypatch.setenv("BASIC_MIRRORS", f"https://huggingface.co/datasets=file://{tmp_path}/shared/datasets")
    mirrors = dl.Mirrors.from_args()
    assert (
        mirrors.resolve("https://huggingface.co/datasets/x.json")
        == f"file://{tmp_path}/shared/datasets/x.json"
    )
    server.log.clear()
    dl.download(m, opts(tmp_path / "d2", mirrors=mirrors))
    assert (tmp_path / "d2/x.json").read_bytes() == b"{}" and server.log == []
    with pytest.raises(dl.DownloadError, match="not PREFIX=REPLACEMENT"):
        dl.Mirrors.from_args(["no-equals-sign"], environ={})


def image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, format=fmt)
    return buf.getvalue()


def test_ocr_vqa_list_saves_jpg_names_and_counts_what_it_cannot_fetch(server, tmp_path):
    jpg, gif, png = image_bytes("JPEG"), image_bytes("GIF"), image_bytes("PNG")
    server.files.update(
        {"/I/1.jpg": jpg, "/I/2.gif": gif, "/I/3.png": png, "/I/5.jpg": b"<html>not found</html>"}
    )
    listing = {
        str(i): {"imageURL": f"{server.url}/I/{i}.{ext}", "questions": ["q"], "answers": ["a"]}
        for i, ext in [(1, "jpg"), (2, "gif"), (3, "png"), (4, "jpg"), (5, "jpg"), (6, "jpg")]
    }
    dest = tmp_path / "d"
    (dest / "ocr_vqa").mkdir(parents=True)
    (dest / "ocr_vqa/dataset.json").write_text(json.dumps(listing))
    mix = [
        {"id": str(i), "image": f"ocr_vqa/images/{i}.jpg", "conversations": []} for i in (1, 2, 3, 4, 5, 7)
    ]
    mix.append({"id": "c", "image": "coco/train2017/1.jpg", "conversations": []})
    mix.append({"id": "t", "conversations": []})  # text-only
    (dest / "mix.json").write_text(json.dumps(mix))
    lst = {
        "name": "ocr_vqa",
        "format": "ocr_vqa",
        "list": "ocr_vqa/dataset.json",
        "referenced_by": "mix.json",
        "dest": "ocr_vqa/images",
        "report": "ocr_vqa/missing.json",
        "max_missing": 3,
    }
    m = write_manifest(
        tmp_path, [{"path": "ocr_vqa/dataset.json", "url": None, "sha256": None, "manual": "by hand"}], [lst]
    )
    dl.download(m, opts(dest))
    images = dest / "ocr_vqa/images"
    assert (images / "1.jpg").read_bytes() == jpg
    assert (images / "2.jpg").read_bytes() == gif  # saved as .jpg whatever the format, bytes as served
    assert (images / "3.jpg").read_bytes() == png
    assert not (images / "6.jpg").exists()  # in the list but not used by the mix: not fetched
    report = json.loads((dest / "ocr_vqa/missing.json").read_text())
    assert report["missing"] == 3 and report["present"] == 3 and report["wanted"] == 6
    errors = {m["image"]: m["error"] for m in report["images"]}
    assert "404" in errors["4.jpg"] and "not a readable image" in errors["5.jpg"]
    assert errors["7.jpg"] == "not in ocr_vqa/dataset.json"

    server.log.clear()
    with pytest.raises(
        dl.DownloadError, match=r"ocr_vqa: 3 images could not be fetched, more than max_missing=2"
    ):
        dl.download(m, opts(dest, max_missing=2))
    assert sorted(p for p, _ in server.log) == [
        "/I/4.jpg",
        "/I/5.jpg",
    ]  # present images are not fetched again


def test_file_without_url_explains_how_to_get_it(tmp_path):
    m = write_manifest(
        tmp_path,
        [
            {
                "path": "ocr_vqa/dataset.json",
                "url": None,
                "sha256": None,
                "manual": "Fetch it from the Drive folder.",
            }
        ],
    )
    with pytest.raises(
        dl.DownloadError, match=r"ocr_vqa/dataset.json: has no public download URL .* Drive folder"
    ):
        dl.download(m, opts(tmp_path / "d"))


def test_command_line(server, tmp_path, capsys):
    server.files["/a"] = b"a"
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "name": "m",
                "files": [
                    {"path": "a", "url": server.url + "/a", "sha256": sha(b"a")},
                    {"path": "b", "url": server.url + "/b", "sha256": None},
                ],
            }
        )
    )
    rc = dl.main(
        ["--manifest", str(manifest), "--dest", str(tmp_path / "d"), "--no-progress", "--retries", "0"]
    )
    assert rc == 1 and "b: HTTP 404" in capsys.readouterr().err
    assert dl.main(["--manifest", str(manifest), "--dest", str(tmp_path / "d"), "--check"]) == 1
    assert "b: not downloaded and verified" in capsys.readouterr().out


def test_missing_file_mirror_fails_naming_the_file(tmp_path):
    m = write_manifest(
        tmp_path, [{"path": "a/x.zip", "url": f"file://{tmp_path}/nowhere/x.zip", "sha256": None}]
    )
    with pytest.raises(dl.DownloadError, match=r"a/x.zip: no such file .*nowhere/x.zip"):
        dl.download(m, opts(tmp_path / "d"))


def test_existing_unpacked_folders_can_be_used_instead_of_their_archive(server, tmp_path):
    m = write_manifest(
        tmp_path,
        [
            {
                "path": "coco/train2017.zip",
                "url": server.url + "/train2017.zip",
                "sha256": None,
                "unpack": "zip",
                "unpack_to": "coco/train2017",
                "provides": ["coco/train2017"],
            }
        ],
    )
    dest = tmp_path / "d"
    shared = tmp_path / "shared/train2017"
    shared.mkdir(parents=True)
    (shared / "000001.jpg").write_bytes(b"x")
    (dest / "coco").mkdir(parents=True)
    (dest / "coco/train2017").symlink_to(shared)  # a cluster's shared copy
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download(m, opts(dest))  # by default the archive is fetched and verified
    (out,) = dl.download(m, opts(dest, use_existing=True))
    assert out.action == "skipped" and "unverified" in out.note and server.log[-1][0] == "/train2017.zip"
    assert dl.check(m, dest) == []
