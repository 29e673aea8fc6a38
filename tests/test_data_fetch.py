"""``nirbench data fetch`` against a loopback HTTP server (127.0.0.1, no internet): a miniature
CUB archive in the official layout downloads, verifies, extracts and reaches the doctor; a
truncated archive, a wrong checksum and an archive that cannot be extracted are refused with
nothing half-extracted; a server that drops the connection mid-download is resumed (Range) or
restarted by the next run; offline mode never contacts the server; Cars196 prints instructions
and verifies a user-placed copy. The table's checksum is patched for the miniature archive (md5
by hashlib, independent of torchvision's), the URL comes from NIRBENCH_MIRROR."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from nirbench.harness.data.real import downloads
from nirbench.harness.data.real.datasets import list_dataset
from nirbench.harness.cli.data import fetch_and_check as fetch
from nirbench.harness.data.real.fetch import PARTIAL_PREFIX, FetchError, source_url
from tests.real_fixtures import make_cars_official, make_cub_official

REPO = Path(__file__).resolve().parents[1]


class Loopback:
    """Serves ``files`` (name -> bytes) on 127.0.0.1; ``cut_after[name] = n`` makes the next
    response for ``name`` announce the full length, send n bytes and close the connection;
    ``ranges`` toggles Range support. ``requests`` records (path, Range header, bytes sent)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}
        self.ranges = True
        self.requests: list[tuple[str, str | None, int]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                name = self.path.lstrip("/")
                data = owner.files.get(name)
                if data is None:
                    self.send_error(404)
                    owner.requests.append((self.path, None, 0))
                    return
                asked = self.headers.get("Range")
                start = 0
                if asked and owner.ranges:
                    start = int(asked.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        owner.requests.append((self.path, asked, 0))
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = owner.cut_after.pop(name, None)
                sent = body if cut is None else body[:cut]
                self.wfile.write(sent)
                if cut is not None:
                    self.close_connection = True
                owner.requests.append((self.path, asked, len(sent)))

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server(monkeypatch):
    loopback = Loopback()
    monkeypatch.setenv("NIRBENCH_MIRROR", loopback.url)  # trailing slash: stripped by the rule
    monkeypatch.delenv("NIRBENCH_OFFLINE", raising=False)
    yield loopback
    loopback.close()


def tgz_of(folder: Path, *names: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in names:
            tar.add(folder / name, arcname=name)
    return buffer.getvalue()


@pytest.fixture
def mini_cub(tmp_path):
    """A CUB_200_2011.tgz of a miniature copy, with the real archive's top-level
    attributes.txt beside CUB_200_2011/."""
    source = tmp_path / "source"
    truth = make_cub_official(source)
    (source / "attributes.txt").write_text("1 has_bill_shape::curved\n")
    return tgz_of(source, "CUB_200_2011", "attributes.txt"), truth


def patch_table(monkeypatch, file_name: str, data: bytes | None = None, **fields) -> None:
    """Give ``file_name``'s row the size and md5 of ``data`` (or ``fields``), nothing else."""
    if data is not None:
        fields = {"size": len(data), "md5": hashlib.md5(data).hexdigest(), **fields}
    table = tuple(
        dataclasses.replace(f, **fields) if f.file_name == file_name else f
        for f in downloads.OFFICIAL_FILES
    )
    monkeypatch.setattr(downloads, "OFFICIAL_FILES", table)


def leftovers(root: Path) -> list[str]:
    """What a failed fetch must not leave: extracted folders, partial folders, .part files."""
    return sorted(
        p.name
        for p in root.iterdir()
        if p.name.startswith(PARTIAL_PREFIX)
        or p.suffix == ".part"
        or p.name in ("CUB_200_2011", "attributes.txt")
    )


def quiet(_line: str) -> None:
    pass


def test_mirror_url_is_base_plus_official_file_name(monkeypatch):
    cub = downloads.files_of("cub200")[0]
    monkeypatch.delenv("NIRBENCH_MIRROR", raising=False)
    assert source_url(cub) == "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
    monkeypatch.setenv("NIRBENCH_MIRROR", "http://mirror.example/data//")
    assert source_url(cub) == "http://mirror.example/data/CUB_200_2011.tgz"


def test_miniature_cub_downloads_verifies_extracts_and_reaches_the_doctor(
    server, mini_cub, monkeypatch, tmp_path
):
    data, truth = mini_cub
    server.files["CUB_200_2011.tgz"] = data
    patch_table(monkeypatch, "CUB_200_2011.tgz", data)
    root = tmp_path / "data"
    result = fetch("cub200", root, progress=False, say=quiet)
    assert [r[0] for r in server.requests] == ["/CUB_200_2011.tgz"]
    assert result["files"][0]["action"] == "downloaded, verified, extracted"
    assert sorted(p.name for p in root.iterdir()) == [
        "CUB_200_2011",
        "CUB_200_2011.tgz",
        "attributes.txt",
    ]
    listing = list_dataset("cub200", root)  # the loader, independently of the doctor's row
    assert listing.split_counts()["train_images"] == truth.train_images
    assert listing.split_counts()["test_images"] == truth.test_images
    check = result["check"]
    assert check["name"] == "dataset:cub200"
    # a miniature copy is partial by design: found, official layout, counts of the miniature
    assert check["details"]["found"] and check["details"]["layout"] == "official"
    assert check["details"]["train_images"] == truth.train_images
    assert check["status"] == "warn" and "partial copy" in check["message"]
    # a second run finds it in place and downloads nothing
    again = fetch("cub200", root, progress=False, say=quiet)
    assert again["files"][0]["action"] == "in place" and len(server.requests) == 1


def test_truncated_archive_is_refused_and_nothing_is_left(server, mini_cub, monkeypatch, tmp_path):
    data, _ = mini_cub
    server.files["CUB_200_2011.tgz"] = data[: len(data) // 2]
    patch_table(monkeypatch, "CUB_200_2011.tgz", data)
    root = tmp_path / "data"
    with pytest.raises(FetchError, match="bytes, expected"):
        fetch("cub200", root, progress=False, say=quiet)
    assert list(root.iterdir()) == []


def test_wrong_checksum_is_refused_and_nothing_is_left(server, mini_cub, monkeypatch, tmp_path):
    data, _ = mini_cub
    server.files["CUB_200_2011.tgz"] = data
    patch_table(monkeypatch, "CUB_200_2011.tgz", size=None, md5="0" * 32)
    root = tmp_path / "data"
    with pytest.raises(FetchError, match=f"md5 {hashlib.md5(data).hexdigest()}, expected 0000"):
        fetch("cub200", root, progress=False, say=quiet)
    assert list(root.iterdir()) == []


def test_archive_that_cannot_be_extracted_leaves_nothing_half_extracted(
    server, mini_cub, monkeypatch, tmp_path
):
    data, _ = mini_cub
    broken = data[: len(data) * 2 // 3]  # its checksum matches the table: extraction fails
    server.files["CUB_200_2011.tgz"] = broken
    patch_table(monkeypatch, "CUB_200_2011.tgz", broken)
    root = tmp_path / "data"
    with pytest.raises(FetchError, match="cannot be extracted"):
        fetch("cub200", root, progress=False, say=quiet)
    assert leftovers(root) == []


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "restarted"])
def test_server_that_disappears_mid_download_then_a_rerun_completes(
    server, mini_cub, monkeypatch, tmp_path, ranges
):
    data, truth = mini_cub
    server.files["CUB_200_2011.tgz"] = data
    server.ranges = ranges
    cut = len(data) // 3
    server.cut_after["CUB_200_2011.tgz"] = cut
    patch_table(monkeypatch, "CUB_200_2011.tgz", data)
    root = tmp_path / "data"
    with pytest.raises(FetchError, match="interrupted after"):
        fetch("cub200", root, progress=False, say=quiet)
    assert (root / "CUB_200_2011.tgz.part").stat().st_size == cut
    assert not (root / "CUB_200_2011").exists()
    result = fetch("cub200", root, progress=False, say=quiet)
    (_, first_range, _), (_, second_range, second_sent) = server.requests
    assert first_range is None and second_range == f"bytes={cut}-"
    assert second_sent == (len(data) - cut if ranges else len(data))
    assert (root / "CUB_200_2011.tgz").read_bytes() == data
    assert not (root / "CUB_200_2011.tgz.part").exists()
    assert result["check"]["details"]["train_images"] == truth.train_images


def test_a_part_file_that_fails_its_checksum_is_deleted(server, mini_cub, monkeypatch, tmp_path):
    data, _ = mini_cub
    server.files["CUB_200_2011.tgz"] = data
    patch_table(monkeypatch, "CUB_200_2011.tgz", data)
    root = tmp_path / "data"
    root.mkdir()
    (root / "CUB_200_2011.tgz.part").write_bytes(b"x" * 100)  # not a prefix of the file
    with pytest.raises(FetchError, match="md5"):
        fetch("cub200", root, progress=False, say=quiet)
    assert not (root / "CUB_200_2011.tgz.part").exists()
    fetch("cub200", root, progress=False, say=quiet)  # and the next run starts cleanly
    assert (root / "CUB_200_2011" / "images.txt").is_file()


def test_offline_never_contacts_the_server_and_verifies_what_is_there(
    server, mini_cub, monkeypatch, tmp_path
):
    data, truth = mini_cub
    server.files["CUB_200_2011.tgz"] = data
    patch_table(monkeypatch, "CUB_200_2011.tgz", data)
    monkeypatch.setenv("NIRBENCH_OFFLINE", "1")
    root = tmp_path / "data"
    said: list[str] = []
    result = fetch("cub200", root, progress=False, say=said.append)
    assert server.requests == []
    assert result["files"][0]["action"] == "missing (offline)"
    assert (
        f"download {server.url}CUB_200_2011.tgz and put it at {root / 'CUB_200_2011.tgz'}"
        in said[0]
    )
    assert not result["check"]["details"]["found"]
    (root / "CUB_200_2011.tgz").write_bytes(data)  # the user places it
    result = fetch("cub200", root, progress=False, say=quiet)
    assert server.requests == []
    assert result["files"][0]["action"] == "verified, extracted"
    assert result["check"]["details"]["test_images"] == truth.test_images
    (root / "CUB_200_2011.tgz").write_bytes(data[:-10])  # a damaged placed copy is refused
    (root / "CUB_200_2011").rename(root / "moved")
    with pytest.raises(FetchError, match="does not match its md5"):
        fetch("cub200", root, progress=False, say=quiet)


def test_cars196_prints_instructions_and_verifies_a_user_placed_copy(server, tmp_path):
    root = tmp_path / "data"
    said: list[str] = []
    missing = fetch("cars196", root, progress=False, say=said.append)
    assert said[0] == downloads.CARS196_INSTRUCTIONS and "kaggle.com" in said[0]
    assert "car_ims/<file>.jpg" in said[0] and "065e5b463ae28d29e77c1b4b166cfe61" in said[0]
    assert not missing["check"]["details"]["found"]
    truth = make_cars_official(root)
    placed = fetch("cars196", root, progress=False, say=quiet)
    assert server.requests == []  # nothing without a checksum is downloaded, mirror or not
    check = placed["check"]
    assert check["details"]["found"] and check["details"]["layout"] == "official"
    assert check["details"]["train_images"] == truth.train_images
    assert check["details"]["test_images"] == truth.test_images


def test_cars196_archive_placed_by_the_user_is_extracted_and_reference_files_are_checked(
    server, monkeypatch, tmp_path
):
    source = tmp_path / "source"
    truth = make_cars_official(source)
    root = tmp_path / "data"
    root.mkdir()
    (root / "car_ims.tgz").write_bytes(tgz_of(source / "cars196", "car_ims"))
    (root / "cars_annos.mat").write_bytes((source / "cars196" / "cars_annos.mat").read_bytes())
    result = fetch("cars196", root, progress=False, say=quiet)
    actions = {r["file"]: r["action"] for r in result["files"]}
    assert actions["car_ims.tgz"] == "present (no published checksum), extracted"
    assert result["check"]["details"]["train_images"] == truth.train_images
    (root / "cars_train.tgz").write_bytes(b"not torchvision's file")
    with pytest.raises(FetchError, match="cars_train.tgz does not match its md5 065e5b46"):
        fetch("cars196", root, progress=False, say=quiet)
    assert server.requests == []


def test_cli_fetch_exit_status_and_output(server, mini_cub, monkeypatch, tmp_path, capsys):
    from nirbench.harness.cli.main import main

    data, _ = mini_cub
    server.files["CUB_200_2011.tgz"] = data
    patch_table(monkeypatch, "CUB_200_2011.tgz", data)
    root = tmp_path / "data"
    assert main(["data", "fetch", "cub200", "--root", str(root), "--quiet"]) == 3  # partial
    out = capsys.readouterr().out
    assert "CUB_200_2011.tgz: downloaded, verified, extracted" in out
    assert "doctor dataset:cub200: warn: partial copy" in out
    server.files["CUB_200_2011.tgz"] = b"other bytes"
    assert main(["data", "fetch", "cub200", "--root", str(tmp_path / "other"), "--quiet"]) == 1
    assert "expected" in capsys.readouterr().err


def test_docs_page_is_generated_from_the_table():
    page = REPO / "docs" / "downloads.md"
    assert page.read_text() == downloads.downloads_markdown(), (
        "docs/downloads.md is stale: regenerate it with python -c 'from nirbench.harness.data."
        'real.downloads import downloads_markdown; print(downloads_markdown(), end="")\' > '
        "docs/downloads.md"
    )
