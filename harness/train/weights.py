"""Published pretrained weights (the ResNets' ImageNet files): found, fetched, verified, loaded.

Where: the torch hub cache, ``torch.hub.get_dir()/checkpoints/<official file name>``
(``$TORCH_HOME/hub/checkpoints`` when TORCH_HOME is set), the file torchvision itself would use.

Verified, always: the official file name carries the first hex digits of the file's sha256
(``resnet50-0676ba61.pth``); a cached file is hashed before it is loaded, and a download is
hashed before it is renamed into place. A file whose bytes are wrong, even one that would load
(the right shapes, other values), is refused with its path and the fix, and never used.

Fetched when missing, from the official URL or from ``NIRBENCH_MIRROR=BASE_URL`` (then
``BASE_URL/<official file name>``, the same rule as the datasets' downloads), through torch.hub's
``download_url_to_file`` (a progress bar on a terminal; the log gets one line either way).
``NIRBENCH_OFFLINE=1`` (``--offline``) never downloads: a missing file is an error that says where
to put it. Hashing a 100 MB file takes a fraction of a second; a process hashes each file once
(until it changes).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nirbench.harness.config_backbones import BACKBONES, BackboneInfo, WeightsFile

log = logging.getLogger(__name__)

OFFLINE_ENV = "NIRBENCH_OFFLINE"
MIRROR_ENV = "NIRBENCH_MIRROR"
_ON, _OFF = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


class WeightsError(RuntimeError):
    """Pretrained weights that cannot be used; the message names the file and the fix."""


class CorruptWeightsError(WeightsError):
    """A weights file whose sha256 does not match its name: truncated, damaged or another file."""


class WeightsUnavailableError(WeightsError, FileNotFoundError):
    """Weights that are not cached and cannot be downloaded now (offline, or no network)."""


def offline() -> bool:
    """Whether downloads are off: ``NIRBENCH_OFFLINE=1`` (``--offline`` sets it)."""
    value = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(
        f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]!r} is neither on nor off; set it "
        f"to 1 (never download) or 0, or unset it"
    )


def mirror_base() -> str | None:
    """``NIRBENCH_MIRROR`` without its trailing slashes, or None when unset or empty."""
    base = os.environ.get(MIRROR_ENV, "").strip().rstrip("/")
    return base or None


def download_url(weights: WeightsFile) -> str:
    """The official URL, or ``NIRBENCH_MIRROR/<official file name>`` when a mirror is set."""
    base = mirror_base()
    return f"{base}/{weights.file_name}" if base else weights.url


def hub_checkpoints_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def downloadable(name: str) -> tuple[BackboneInfo, WeightsFile]:
    """The registry entry of ``name`` and its published weights; an error for a backbone that
    has none (the message lists the ones that do)."""
    info = BACKBONES.get(name)
    if info.weights is None:
        having = [n for n, i in BACKBONES.items() if i.weights is not None]
        how = (
            "its pretraining is embedded: built on first use by a run with backbone.pretrained=true"
            if info.embedded_pretraining
            else "it has no pretraining"
        )
        raise WeightsError(
            f"backbone {name!r} has no published weights to fetch ({how}); "
            f"backbones with published weights: {', '.join(having)}"
        )
    return info, info.weights


def cache_path(name: str) -> Path:
    """Where the torch hub cache keeps ``name``'s weights (whether or not they are there)."""
    return hub_checkpoints_dir() / downloadable(name)[1].file_name


_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 hex


def sha256_of(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def _refetch_fix(name: str, path: Path) -> str:
    return (
        f"delete it (rm {path}) and fetch it again: nirbench weights fetch {name} (on a "
        f"machine with internet; then copy the file to {path})"
    )


def verify(name: str, path: Path) -> str:
    """``path``'s sha256 when it starts with the prefix in ``name``'s official file name, else
    ``CorruptWeightsError`` naming the file and the fix."""
    _, weights = downloadable(name)
    digest = sha256_of(path)
    if not digest.startswith(weights.sha256_prefix):
        raise CorruptWeightsError(
            f"{weights.source} weights at {path} are corrupt: sha256 {digest} does not start "
            f"with {weights.sha256_prefix}, the prefix in the official file name "
            f"({path.stat().st_size:,} bytes; a truncated download or another file). Not used: "
            + _refetch_fix(name, path)
        )
    return digest


@dataclass(frozen=True)
class VerifiedWeights:
    backbone: str
    path: Path
    sha256: str
    bytes: int
    url: str  # where they were (or would be) downloaded from
    downloaded: bool  # fetched just now, rather than found in the cache

    def as_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "path": str(self.path),
            "sha256": self.sha256,
            "bytes": self.bytes,
            "url": self.url,
            "downloaded": self.downloaded,
        }


def _unavailable(name: str, weights: WeightsFile, path: Path, url: str, why: str) -> str:
    return (
        f"{weights.source} weights for {name} are not in the torch hub cache ({path}); {why}"
        f" Fetch them on a machine with internet (nirbench weights fetch {name}, or download "
        f"{url}) and put the file at {path} (or set TORCH_HOME so that "
        f"$TORCH_HOME/hub/checkpoints holds it), or set backbone.pretrained=false to train "
        f"from random initialisation."
    )


def _download(name: str, weights: WeightsFile, path: Path, progress: bool) -> str:
    """Download into a temporary file beside ``path``, verify, rename into place; the sha256.
    Parallel fetches of one file each write their own temporary file, and the rename is atomic,
    so a reader sees no file or a whole verified one."""
    import torch.hub

    url = download_url(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.download")
    log.info("downloading %s weights for %s: %s -> %s", weights.source, name, url, path)
    try:
        try:
            # torch.hub checks the sha256 prefix as it reads, and writes through its own
            # .partial file, removed on any failure
            torch.hub.download_url_to_file(
                url, str(tmp), hash_prefix=weights.sha256_prefix, progress=progress
            )
        except urllib.error.HTTPError as err:  # the server answered: the file is not there
            where = f"the mirror {MIRROR_ENV}={mirror_base()}" if mirror_base() else "the server"
            raise WeightsUnavailableError(
                _unavailable(
                    name,
                    weights,
                    path,
                    url,
                    f"{where} answered HTTP {err.code} {err.reason} for {url}.",
                )
            ) from err
        except OSError as err:  # URLError (no DNS, refused, unreachable), timeouts, resets
            reason = getattr(err, "reason", err)
            raise WeightsUnavailableError(
                _unavailable(
                    name,
                    weights,
                    path,
                    url,
                    f"downloading them failed: no network reachable ({type(err).__name__}: {reason})"
                    f". Downloads were attempted because {OFFLINE_ENV} is not set (--offline: never "
                    f"try); behind a proxy set https_proxy, behind a mirror "
                    f"{MIRROR_ENV}=BASE_URL.",
                )
            ) from err
        except RuntimeError as err:
            if "invalid hash value" not in str(err):
                raise
            raise CorruptWeightsError(
                f"downloaded {url} but its sha256 does not start with {weights.sha256_prefix}, "
                f"the prefix in the official file name ({err}); nothing was kept in "
                f"{path.parent}. A damaged transfer, or the mirror serves another file: try "
                f"again, or check the mirror"
            ) from err
        digest = sha256_of(tmp)  # the authority is this module's check, not only torch.hub's
        if not digest.startswith(weights.sha256_prefix):
            raise CorruptWeightsError(
                f"downloaded {url} but its sha256 {digest} does not start "
                f"with {weights.sha256_prefix}; nothing was kept"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("verified %s (%.1f MB, sha256 %s)", path, path.stat().st_size / 1e6, digest)
    return digest


def ensure(
    name: str, *, progress: bool | None = None, replace_corrupt: bool = False
) -> VerifiedWeights:
    """``name``'s published weights, verified: from the cache, else downloaded (unless offline).

    A corrupt cached file raises ``CorruptWeightsError``; with ``replace_corrupt`` (``nirbench
    weights fetch``) it is downloaded again instead, and replaced once the new copy verifies.
    ``progress``: a progress bar (default: when stderr is a terminal)."""
    _, weights = downloadable(name)
    path = cache_path(name)
    url = download_url(weights)
    if path.is_file():
        try:
            digest = verify(name, path)
            return VerifiedWeights(name, path, digest, path.stat().st_size, url, False)
        except CorruptWeightsError:
            if not replace_corrupt or offline():
                raise
            log.warning(
                "%s is corrupt (sha256 does not start with %s): downloading it again",
                path,
                weights.sha256_prefix,
            )
    elif offline():
        raise WeightsUnavailableError(
            _unavailable(
                name,
                weights,
                path,
                url,
                f"downloads are off ({OFFLINE_ENV}=1 or --offline), so they were not fetched.",
            )
        )
    digest = _download(name, weights, path, sys.stderr.isatty() if progress is None else progress)
    return VerifiedWeights(name, path, digest, path.stat().st_size, url, True)


def load_state_dict(name: str) -> dict[str, Any]:
    """``name``'s published weights as a state dict, verified before they are read."""
    import torch

    found = ensure(name)
    try:
        return torch.load(found.path, map_location="cpu", weights_only=True)
    except Exception as err:  # verified bytes that do not load: a torch incompatibility
        raise WeightsError(
            f"could not read {found.path} (sha256 {found.sha256}, verified): "
            f"{type(err).__name__}: {err}"
        ) from err


def status(name: str) -> dict[str, Any]:
    """What the cache holds for ``name``: ``cached`` (verified), ``missing`` or ``corrupt``."""
    _, weights = downloadable(name)
    path = cache_path(name)
    row = {
        "backbone": name,
        "path": str(path),
        "url": download_url(weights),
        "sha256_prefix": weights.sha256_prefix,
        "source": weights.source,
    }
    if not path.is_file():
        return {**row, "status": "missing", "sha256": None, "bytes": None}
    digest = sha256_of(path)
    state = "cached" if digest.startswith(weights.sha256_prefix) else "corrupt"
    return {**row, "status": state, "sha256": digest, "bytes": path.stat().st_size}


def describe(name: str, pretrained: bool) -> str:
    """What a run of backbone ``name`` starts from, for its first log line. ResNets: ensures
    (fetches if needed) and verifies the file first, so the line names a file that is used. The
    embedded pretraining of small_cnn is described by the runner, which knows its cache."""
    if not pretrained:
        return "random initialisation (backbone.pretrained=false)"
    _, weights = downloadable(name)
    found = ensure(name)
    return (
        f"{weights.source} ({weights.trained_on}) from {found.path}, sha256 {found.sha256} "
        f"(verified{', downloaded now' if found.downloaded else ''})"
    )
