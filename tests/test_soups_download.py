"""Soup ingredients downloaded over https with ``sha256: lock``, through a real snakemake run.

The rules soup_download_ingredient and soup_convert_ingredient fetch a ``weights:`` ingredient
from a loopback HTTPS server that trusts a throwaway self-signed certificate, record its sha256
in the lock file, and reject different bytes at the same URL on a later download.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from pathlib import Path

import polars as pl
import pytest
from helpers_checkpoints import LITE0_SHA256, Response, lite0_raw_weights, loopback_server
from workflow_runner import planned_jobs, small_config, snakemake, write_config

from imagebench.checkpoints.fetch import read_lock_file
from imagebench.io import sha256_file

MODEL_PATH = "/models/efficientnet-lite0.pth"
INGREDIENT_PATH = "/soups/efficientnet-lite0.pth"
MEMBER = "demo.served"


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """Write a one-day certificate for IP 127.0.0.1 and its private key into ``folder`` with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed; it makes the test's self-signed certificate")
    certificate = folder / "loopback-cert.pem"
    key = folder / "loopback-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-nodes", "-days", "1",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(key), "-out", str(certificate),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return certificate, key


def server_context(certificate: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile=certificate, keyfile=key)
    return context


def soup_download_config(*, images: Path, base_url: str, lock_file: Path) -> dict:
    """A small config whose soup mixes a configured model with a ``weights:`` ingredient under ``sha256: lock``."""
    lite0 = {
        "architecture": "tf_efficientnet_lite0",
        "weights": {"url": base_url + MODEL_PATH, "sha256": LITE0_SHA256, "format": "efficientnet_pytorch"},
    }
    config = small_config(images, shards=1, models={"efficientnet_lite0": lite0})
    config["lock_file"] = str(lock_file)
    config["soups"] = {
        "demo": {
            "architecture": "tf_efficientnet_lite0",
            "evaluation": {"dataset": "sample"},
            "heldout": {"fraction": 0.3},
            "ingredients": {
                "pretrained": {"model": "efficientnet_lite0"},
                "served": {
                    "weights": {"url": base_url + INGREDIENT_PATH, "sha256": "lock", "format": "efficientnet_pytorch"}
                },
            },
        }
    }
    return config


def checkpoint_hashes(folder: Path) -> dict[str, str]:
    return {path.name: sha256_file(path) for path in sorted(folder.iterdir()) if path.is_file()}


def test_workflow_downloads_locked_soup_ingredient(tmp_path, tmp_path_factory, sample_dir):
    certificate, key = self_signed_certificate(tmp_path)
    raw_path, _ = lite0_raw_weights(tmp_path_factory)
    weights = raw_path.read_bytes()
    images = tmp_path / "images"
    images.mkdir()
    for source in sorted(sample_dir.iterdir())[::25]:
        (images / source.name).symlink_to(source)
    workdir = tmp_path / "run"
    lock_file = workdir / "downloads.lock"
    results = workdir / "results"
    # urllib's default SSL context loads OpenSSL's default verify paths, which SSL_CERT_FILE overrides.
    trust_certificate = {"SSL_CERT_FILE": str(certificate)}
    responses = {MODEL_PATH: Response(body=weights), INGREDIENT_PATH: Response(body=weights)}

    with loopback_server(responses, tls=server_context(certificate, key)) as server:
        ingredient_url = server.url + INGREDIENT_PATH
        write_config(workdir, soup_download_config(images=images, base_url=server.url, lock_file=lock_file))

        # First run: the ingredient is downloaded, its sha256 recorded, and it is converted and souped.
        snakemake(workdir, "--cores", "2", env=trust_certificate)

        assert ("GET", INGREDIENT_PATH) in server.requests
        assert ("GET", MODEL_PATH) in server.requests
        assert read_lock_file(lock_file) == {ingredient_url: LITE0_SHA256}
        provenance = json.loads((results / "checkpoints" / f"{MEMBER}.json").read_text())
        assert provenance["source"]["url"] == ingredient_url
        assert provenance["fetch"]["resolved"] == ingredient_url
        assert provenance["fetch"]["sha256_checked_against"] == "lock_file_recorded"
        assert provenance["raw_sha256"] == LITE0_SHA256
        assert (results / "checkpoints" / f"{MEMBER}.safetensors").stat().st_size > 0
        leaderboard = pl.read_parquet(results / "leaderboard.parquet")
        soup_models = leaderboard.filter(pl.col("dataset") == "demo.evaluation")["model"].sort().to_list()
        assert soup_models == ["demo.greedy", "demo.served", "demo.uniform", "efficientnet_lite0"]

        # Second run: the download is gone and the server now sends other bytes at the same URL.
        checkpoints_before = checkpoint_hashes(results / "checkpoints")
        lock_before = lock_file.read_text()
        (results / "soups" / "downloads" / f"{MEMBER}.weights").unlink()
        changed = bytearray(weights)
        changed[len(changed) // 2] ^= 0xFF
        responses[INGREDIENT_PATH] = Response(body=bytes(changed))
        requests_before = server.requests.count(("GET", INGREDIENT_PATH))
        # The download is an intermediate file, so Snakemake leaves it missing while the converted
        # checkpoint after it is present. --forcerun fetches it again and plans every job after it.
        assert planned_jobs(workdir) == {}
        forced = planned_jobs(workdir, "--forcerun", "soup_download_ingredient")
        assert forced["soup_download_ingredient"] == 1
        assert forced["soup_convert_ingredient"] == 1

        rerun = snakemake(
            workdir, "--cores", "2", "--forcerun", "soup_download_ingredient", check=False, env=trust_certificate
        )

        assert rerun.returncode != 0
        assert "soup_download_ingredient" in rerun.stdout + rerun.stderr
        assert server.requests.count(("GET", INGREDIENT_PATH)) > requests_before

    log = (results / "logs" / "soup_download_ingredient" / f"{MEMBER}.log").read_text()
    assert "sha256 mismatch" in log
    assert str(lock_file) in log
    assert not (results / "soups" / "downloads" / f"{MEMBER}.weights").exists()
    assert lock_file.read_text() == lock_before
    assert checkpoint_hashes(results / "checkpoints") == checkpoints_before
