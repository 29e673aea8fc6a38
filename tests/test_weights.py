"""Published weights without the internet: a loopback HTTP server (127.0.0.1, port 0) plays the
weights host, reached through the documented override NIRBENCH_MIRROR=BASE_URL. A toy backbone
publishes a tiny state dict under a hash-named file (toynet-<sha256[:8]>.pth), registered like
the ResNets; the torch hub cache is TORCH_HOME=tmp_path. Checked: a download verifies and loads,
a corrupted copy is refused and leaves nothing in the cache, a cached corrupt file is refused
with the fix, offline mode never contacts the server, and no network says so."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import logging
import socket
import threading

import pytest
import torch
from torch import nn

from nirbench.harness.train import weights
from nirbench.harness.config_backbones import BACKBONES, BackboneInfo, WeightsFile
from nirbench.harness.train.models import build_model

TOY = "toy_published"


class ToyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.feature_dim = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def toy_body(name, state_dict, options):
    body = ToyNet()
    if state_dict is not None:
        body.load_state_dict(state_dict)
    return body


def _state_bytes(seed: int) -> tuple[dict[str, torch.Tensor], bytes]:
    torch.manual_seed(seed)
    state = ToyNet().state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return state, buffer.getvalue()


PUBLISHED, PUBLISHED_BYTES = _state_bytes(0)
SHA256 = hashlib.sha256(PUBLISHED_BYTES).hexdigest()
FILE_NAME = f"toynet-{SHA256[:8]}.pth"
# The official host is one that never resolves: every byte these tests get comes from loopback.
OFFICIAL_URL = f"https://weights.invalid/models/{FILE_NAME}"


@pytest.fixture
def toy(monkeypatch):
    """The toy backbone, registered for one test (the registry has no removal; setitem undoes)."""
    info = BackboneInfo(
        name=TOY,
        title="Toy",
        feature_dim=6,
        build=toy_body,
        order=900,
        weights=WeightsFile(OFFICIAL_URL, "the toy's publisher"),
    )
    monkeypatch.setitem(BACKBONES._entries, TOY, info)
    return info


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty torch hub cache, downloads on, no mirror."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("NIRBENCH_OFFLINE", raising=False)
    monkeypatch.delenv("NIRBENCH_MIRROR", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


class Loopback:
    """A file server on 127.0.0.1 that counts the requests it gets."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(files: dict[str, bytes]) -> Loopback:
        servers.append(Loopback(files))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _files_in(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_a_mirrored_download_verifies_and_loads(toy, cache, serve, monkeypatch, caplog):
    server = serve({f"/mirror/{FILE_NAME}": PUBLISHED_BYTES})
    monkeypatch.setenv("NIRBENCH_MIRROR", server.base + "/mirror/")  # trailing slash: one '/'
    with caplog.at_level(logging.INFO, logger="nirbench.harness.train.weights"):
        model = build_model(TOY, 4, pretrained=True, freeze_bn=False)
    assert server.requests == [f"/mirror/{FILE_NAME}"]
    for key, value in PUBLISHED.items():
        assert torch.equal(model.body.state_dict()[key], value), key
    assert _files_in(cache) == [FILE_NAME]  # no temporary file left beside it
    assert hashlib.sha256((cache / FILE_NAME).read_bytes()).hexdigest() == SHA256
    assert any(f"{server.base}/mirror/{FILE_NAME}" in r.getMessage() for r in caplog.records)

    build_model(TOY, 4, pretrained=True, freeze_bn=False)  # cached and verified: no request
    assert len(server.requests) == 1
    line = weights.describe(TOY, True)
    assert str(cache / FILE_NAME) in line and SHA256 in line and "verified" in line


def test_a_corrupted_copy_is_refused_and_leaves_nothing_in_the_cache(
    toy, cache, serve, monkeypatch
):
    _, other = _state_bytes(1)  # the right name, a loadable state dict, other bytes
    server = serve({f"/{FILE_NAME}": other})
    monkeypatch.setenv("NIRBENCH_MIRROR", server.base)
    with pytest.raises(weights.CorruptWeightsError) as err:
        build_model(TOY, 4, pretrained=True, freeze_bn=False)
    assert SHA256[:8] in str(err.value) and "nothing was kept" in str(err.value)
    assert server.requests == [f"/{FILE_NAME}"]
    assert not [name for name in _files_in(cache) if name != "checkpoints"]


def test_a_cached_corrupt_file_is_refused_with_the_fix(toy, cache, serve, monkeypatch):
    server = serve({f"/{FILE_NAME}": PUBLISHED_BYTES})
    monkeypatch.setenv("NIRBENCH_MIRROR", server.base)
    cache.mkdir(parents=True)
    torch.manual_seed(7)
    torch.save(ToyNet().state_dict(), cache / FILE_NAME)  # random values, the official name
    with pytest.raises(weights.CorruptWeightsError) as err:
        build_model(TOY, 4, pretrained=True, freeze_bn=False)
    message = str(err.value)
    assert str(cache / FILE_NAME) in message and f"does not start with {SHA256[:8]}" in message
    assert f"nirbench weights fetch {TOY}" in message and f"rm {cache / FILE_NAME}" in message
    assert server.requests == []  # refused, not silently replaced by a run
    assert weights.status(TOY)["status"] == "corrupt"

    # the fix the message names: fetch replaces it once the new copy verifies
    from nirbench.harness.cli.main import main

    assert main(["weights", "fetch", TOY]) == 0
    assert hashlib.sha256((cache / FILE_NAME).read_bytes()).hexdigest() == SHA256
    assert weights.status(TOY)["status"] == "cached"


def test_offline_never_contacts_the_server(toy, cache, serve, monkeypatch):
    server = serve({f"/{FILE_NAME}": PUBLISHED_BYTES})
    monkeypatch.setenv("NIRBENCH_MIRROR", server.base)
    monkeypatch.setenv("NIRBENCH_OFFLINE", "1")
    with pytest.raises(weights.WeightsUnavailableError) as err:
        build_model(TOY, 4, pretrained=True, freeze_bn=False)
    message = str(err.value)
    assert "downloads are off" in message and "no network" not in message
    assert str(cache / FILE_NAME) in message and f"{server.base}/{FILE_NAME}" in message
    assert server.requests == [] and _files_in(cache) == []


def test_the_offline_flag_of_run_grid_and_fetch(toy, cache, serve, monkeypatch, capsys):
    from nirbench.harness.cli.main import build_parser, main

    server = serve({f"/{FILE_NAME}": PUBLISHED_BYTES})
    monkeypatch.setenv("NIRBENCH_MIRROR", server.base)
    for argv in (["run", "--offline"], ["grid", "some-grid.yaml", "--offline"]):
        monkeypatch.setenv("NIRBENCH_OFFLINE", "0")  # restored after the test
        assert build_parser().parse_args(argv).offline is True
        assert weights.offline()
    assert main(["weights", "fetch", TOY, "--offline"]) == 2
    assert "downloads are off" in capsys.readouterr().err
    assert server.requests == []


def test_no_network_says_so_and_what_to_do(toy, cache, monkeypatch):
    with socket.socket() as s:  # a loopback port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NIRBENCH_MIRROR", f"http://127.0.0.1:{port}")
    with pytest.raises(weights.WeightsUnavailableError) as err:
        build_model(TOY, 4, pretrained=True, freeze_bn=False)
    message = str(err.value)
    assert "no network reachable" in message and "downloads are off" not in message
    assert "NIRBENCH_OFFLINE" in message and f"nirbench weights fetch {TOY}" in message
    assert str(cache / FILE_NAME) in message and f"127.0.0.1:{port}/{FILE_NAME}" in message
    assert not [name for name in _files_in(cache) if name != "checkpoints"]


def test_a_mirror_without_the_file_says_what_it_answered(toy, cache, serve, monkeypatch):
    server = serve({})
    monkeypatch.setenv("NIRBENCH_MIRROR", server.base)
    with pytest.raises(weights.WeightsUnavailableError, match="answered HTTP 404"):
        weights.ensure(TOY)


def test_fetch_and_list_print_paths_and_verified_hashes(toy, cache, serve, monkeypatch, capsys):
    from nirbench.harness.cli.main import main

    server = serve({f"/{FILE_NAME}": PUBLISHED_BYTES})
    monkeypatch.setenv("NIRBENCH_MIRROR", server.base)
    assert main(["weights", "list", "--json"]) == 0
    rows = {r["backbone"]: r for r in json.loads(capsys.readouterr().out)["weights"]}
    assert rows[TOY]["status"] == "missing" and "small_cnn" not in rows
    assert {"resnet18", "resnet50"} <= set(rows)

    assert main(["weights", "fetch", TOY, "--json"]) == 0
    (fetched,) = json.loads(capsys.readouterr().out)["weights"]
    assert fetched == {
        "backbone": TOY,
        "path": str(cache / FILE_NAME),
        "sha256": SHA256,
        "bytes": len(PUBLISHED_BYTES),
        "url": f"{server.base}/{FILE_NAME}",
        "downloaded": True,
    }
    assert main(["weights", "fetch", TOY]) == 0  # cached now: no second download
    assert f"sha256 {SHA256} verified" in capsys.readouterr().out and len(server.requests) == 1
    assert main(["weights", "list"]) == 0
    assert f"cached, sha256 {SHA256} verified" in capsys.readouterr().out

    assert main(["weights", "fetch", "small_cnn"]) == 2  # no published file: says why
    assert "embedded" in capsys.readouterr().err


def test_the_registered_urls_are_torchvisions_v1_weights():
    """Against torchvision's own weights enums: the V1 files the DML literature and NIR used."""
    import torchvision

    for name in ("resnet18", "resnet50"):
        info = BACKBONES.get(name)
        enum = getattr(torchvision.models, info.weights.source.split()[1].split(".")[0])
        assert info.weights.url == enum.IMAGENET1K_V1.url, name
        assert info.weights.source.endswith(".IMAGENET1K_V1")
    assert BACKBONES.get("resnet50").weights.sha256_prefix == "0676ba61"


def test_the_offline_switch_refuses_values_it_does_not_know(monkeypatch):
    monkeypatch.setenv("NIRBENCH_OFFLINE", "maybe")
    with pytest.raises(ValueError, match="NIRBENCH_OFFLINE='maybe'"):
        weights.offline()


def test_the_runs_first_log_line_names_its_weights(
    tmp_path, toy, cache, serve, monkeypatch, caplog, tiny_overrides
):
    from nirbench.harness.config import load_config
    from nirbench.harness.train import runner

    cfg = load_config(None, tiny_overrides + ["backbone.pretrained=false"])
    assert runner.weights_line(cfg, tmp_path) == "random initialisation (backbone.pretrained=false)"
    embedded = load_config(None, tiny_overrides + ["backbone.pretrained=true"])
    line = runner.weights_line(embedded, tmp_path)
    assert line.startswith(f"embedded pretraining {embedded.backbone.weights} from {tmp_path}")

    from nirbench.harness.tracking.store import Tracker

    results = tmp_path / "results"
    with caplog.at_level(logging.INFO):
        runner.execute(cfg, Tracker(results), results)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("nirbench")]
    assert ours[0] == "weights: random initialisation (backbone.pretrained=false)", ours[:3]


def test_the_docs_table_is_generated_from_the_registry():
    from pathlib import Path

    from nirbench.harness.config_backbones import markdown_table

    page = (Path(__file__).resolve().parent.parent / "docs" / "weights.md").read_text()
    start = page.index("-->\n", page.index("<!-- backbones table")) + len("-->\n")
    end = page.index("<!-- end of the backbones table -->")
    assert page[start:end] == markdown_table(), (
        "docs/weights.md's backbone table is stale: replace it with the output of python -c "
        "'from nirbench.harness.config_backbones import markdown_table; print(markdown_table())'"
    )
