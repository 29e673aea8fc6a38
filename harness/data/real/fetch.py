"""``nirbench data fetch``: download, verify and extract a real dataset's official files from the
table in ``downloads.py`` (the command then runs the doctor's dataset check).

Why each step is as it is:
  * The download goes to ``DIR/<file>.part``. An interrupted one is resumed with an HTTP Range
    request; a server that ignores the range (200 instead of 206) restarts it from byte 0. Only a
    complete file whose size and md5 match is renamed to ``DIR/<file>``; one that fails is deleted,
    so a bad copy is never reused.
  * The archive is extracted into ``DIR/.nirbench-partial-<dataset>/`` and its top-level entries
    are renamed into DIR only when the extraction finished: a truncated or corrupt archive leaves
    nothing half-extracted where the loaders look.
  * Nothing without a checksum is ever downloaded (Cars196's files: printed instructions, then the
    user's copy is verified).
  * ``NIRBENCH_MIRROR=BASE_URL``: every file comes from ``BASE_URL/<official file name>``, checked
    against the same md5 (the same rule as the weights' mirror). ``NIRBENCH_OFFLINE=1``: nothing
    is downloaded; what is missing is named with its URL and destination, what is there verified.
Checksums and extraction are torchvision's (``calculate_md5``, ``extract_archive``)."""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nirbench.harness.data.real.downloads import CARS196_INSTRUCTIONS, OfficialFile, files_of

log = logging.getLogger(__name__)

OFFLINE_ENV = "NIRBENCH_OFFLINE"
MIRROR_ENV = "NIRBENCH_MIRROR"
_ON, _OFF = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
PARTIAL_PREFIX = ".nirbench-partial-"
CHUNK = 1 << 20
TIMEOUT_S = 60.0


class FetchError(RuntimeError):
    """A file that could not be fetched or verified; the message names it and the fix."""


def offline() -> bool:
    """``NIRBENCH_OFFLINE``: 1/true/yes/on never download, 0/false/no/off or unset do."""
    value = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise FetchError(
        f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]!r} is neither on nor off; set it "
        f"to 1 (never download) or 0, or unset it"
    )


def mirror_base() -> str | None:
    """``NIRBENCH_MIRROR`` without its trailing slashes, or None when unset or empty."""
    base = os.environ.get(MIRROR_ENV, "").strip().rstrip("/")
    return base or None


def source_url(entry: OfficialFile) -> str | None:
    """``NIRBENCH_MIRROR/<official file name>`` when a mirror is set, else the official URL."""
    base = mirror_base()
    return f"{base}/{entry.file_name}" if base else entry.url


def fetch(
    dataset: str,
    root: str | Path,
    *,
    offline_mode: bool | None = None,
    progress: bool | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Bring ``dataset``'s official files into ``root``. Returns {"dataset", "root", "files":
    [{file, action, path}]}; the caller (``nirbench data fetch``, a command) then runs the
    doctor's dataset check, which lives in a later stage than the data package.
    Raises FetchError on a failed download or checksum (nothing half-made is left)."""
    from torchvision.datasets.utils import check_integrity

    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    no_download = offline() if offline_mode is None else offline_mode
    show = sys.stderr.isatty() if progress is None else progress
    rows = []
    if dataset == "cars196":
        say(CARS196_INSTRUCTIONS)
    for entry in files_of(dataset):
        archive = root / entry.file_name
        url = source_url(entry)
        if entry.extracts_to and (root / entry.extracts_to).exists():
            action = "in place"
        elif archive.is_file():
            if entry.md5 is not None and not check_integrity(archive, entry.md5):
                raise FetchError(
                    f"{archive} does not match its md5 {entry.md5}: a damaged or "
                    f"other file; delete it and fetch it again"
                )
            action = "verified" if entry.md5 else "present (no published checksum)"
            if entry.extracts_to and entry.needed:
                _extract(entry, archive, root, dataset)
                action += ", extracted"
        elif not entry.needed:
            continue  # reference files are verified when present, never fetched
        elif entry.md5 is None or url is None:
            action = "missing (no download: " + ("no published checksum" if url else "no URL") + ")"
        elif no_download:
            say(
                f"offline ({OFFLINE_ENV}=1): download {url} and put it at {archive}, then run "
                f"this command again to verify and extract it"
            )
            action = "missing (offline)"
        else:
            _download(entry, url, archive, show)
            log.info("fetched %s from %s (md5 %s ok)", entry.file_name, url, entry.md5)
            if entry.extracts_to:
                _extract(entry, archive, root, dataset)
            action = "downloaded, verified" + (", extracted" if entry.extracts_to else "")
        rows.append({"file": entry.file_name, "action": action, "path": str(archive)})
        say(f"{entry.file_name}: {action}")
    return {"dataset": dataset, "root": str(root), "files": rows}


# ----------------------------------------------------------------------------------- download


def _download(entry: OfficialFile, url: str, archive: Path, show: bool) -> None:
    """Download to ``<archive>.part`` (resumed when possible), verify, rename into place."""
    from torchvision.datasets.utils import calculate_md5

    part = archive.with_name(archive.name + ".part")
    if entry.size is not None and part.exists() and part.stat().st_size > entry.size:
        part.unlink()  # longer than the file can be: not a prefix of it
    _transfer(url, part, entry.size, show)
    got = part.stat().st_size
    if entry.size is not None and got != entry.size:
        part.unlink()
        raise FetchError(
            f"{entry.file_name} from {url} has {got:,} bytes, expected "
            f"{entry.size:,}: truncated or another file; deleted it, run again "
            f"(or check the mirror's copy)"
        )
    md5 = calculate_md5(part)
    if md5 != entry.md5:
        part.unlink()
        raise FetchError(
            f"{entry.file_name} from {url} has md5 {md5}, expected {entry.md5}: "
            f"damaged or another file; deleted it, run again (or check the "
            f"mirror's copy)"
        )
    part.replace(archive)


def _transfer(url: str, part: Path, size: int | None, show: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "nirbench"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 - http(s)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the range starts at or past the end: start again
            part.unlink()
            return _transfer(url, part, size, show)
        raise FetchError(
            f"{url}: HTTP {err.code} {err.reason}; check the URL or {MIRROR_ENV}"
        ) from err
    except (urllib.error.URLError, OSError) as err:
        raise FetchError(
            f"cannot reach {url}: {err}; check the network or a proxy, or set "
            f"{MIRROR_ENV}=BASE_URL, or {OFFLINE_ENV}=1 to be told what to place "
            f"where"
        ) from err
    with response:
        resumed = have and response.status == 206
        if have and not resumed:
            log.info("%s ignores the range request: restarting from byte 0", url)
            have = 0
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else size
        bar = _progress_bar(show, expected, have, part.name.removesuffix(".part"))
        received = have
        try:
            with part.open("ab" if resumed else "wb") as out:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as err:  # IncompleteRead
                        raise FetchError(_interrupted(url, part, received, err)) from err
                    if not block:
                        break
                    out.write(block)
                    received += len(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
    if expected is not None and received < expected:
        raise FetchError(_interrupted(url, part, received, "connection closed early"))


def _interrupted(url: str, part: Path, received: int, why: object) -> str:
    return (
        f"download of {url} interrupted after {received:,} bytes ({why}); {part} is kept: run "
        f"the same command again to resume it"
    )


def _progress_bar(show: bool, total: int | None, initial: int, name: str):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=name, file=sys.stderr)


# ---------------------------------------------------------------------------------- extraction


def _extract(entry: OfficialFile, archive: Path, root: Path, dataset: str) -> None:
    """Extract into a partial folder; move its entries into ``root`` only once it is complete."""
    import tarfile
    import zipfile

    from torchvision.datasets.utils import extract_archive

    partial = root / f"{PARTIAL_PREFIX}{dataset}"
    if partial.exists():
        shutil.rmtree(partial)  # left by an earlier interrupted extraction
    partial.mkdir()
    try:
        extract_archive(archive, partial)
        if not (partial / entry.extracts_to).exists():
            raise FetchError(
                f"{archive} does not contain {entry.extracts_to}/; it is not the "
                f"official {entry.file_name}: delete it and fetch again"
            )
        clashes = [p.name for p in partial.iterdir() if (root / p.name).exists()]
        if clashes:
            raise FetchError(
                f"extracting {archive} would overwrite {', '.join(clashes)} in "
                f"{root}; move them away and run again"
            )
        for item in sorted(partial.iterdir()):  # extracts_to moves last: its presence = done
            if item.name != entry.extracts_to:
                item.replace(root / item.name)
        (partial / entry.extracts_to).replace(root / entry.extracts_to)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise FetchError(
            f"{archive} cannot be extracted ({type(err).__name__}: {err}): truncated "
            f"or damaged; delete it and fetch again"
        ) from err
    finally:
        shutil.rmtree(partial, ignore_errors=True)
