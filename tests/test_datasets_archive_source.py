"""ImageNetV2-style archives fetched over http from a loopback server, with lock-file hashes."""

import hashlib
import io
import tarfile
from pathlib import Path

import polars as pl
import pytest
from timm.data import ImageNetInfo

from conftest import sample_files
from helpers_checkpoints import Response, loopback_server
from imagebench.datasets.archive_source import PROVENANCE_NAME, fetch_archive_dataset
from imagebench.datasets.manifest import build_manifest
from imagebench.errors import CheckpointError, DatasetError


def _imagenetv2_archive(sample_dir: Path) -> bytes:
    """A tar.gz laid out like ImageNetV2: <top folder>/<class index>/<image>."""
    class_index = {synset: index for index, synset in enumerate(ImageNetInfo().label_names())}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for image in sample_files(sample_dir, 12):
            label = class_index[image.name.split("_", 1)[0]]
            archive.add(image, arcname=f"imagenetv2-matched-frequency-format-val/{label}/{image.name}")
    return buffer.getvalue()


def test_archive_fetched_and_manifest_built(tmp_path: Path, sample_dir: Path):
    body = _imagenetv2_archive(sample_dir)
    destination = tmp_path / "source"
    with loopback_server({"/v2.tar.gz": Response(body=body)}) as server:
        provenance = fetch_archive_dataset(
            dataset="imagenetv2",
            url=f"{server.url}/v2.tar.gz",
            sha256=hashlib.sha256(body).hexdigest(),
            destination=destination,
            allow_insecure_localhost=True,
        )
    assert provenance["sha256"] == hashlib.sha256(body).hexdigest()
    assert (destination / PROVENANCE_NAME).is_file()

    frame = build_manifest(
        root=destination / "imagenetv2-matched-frequency-format-val", layout="imagenetv2", num_shards=2
    )
    assert frame.height == 12
    synsets_match = frame.select(
        (pl.col("path").str.split("/").list.last().str.slice(0, 9) == pl.col("synset")).all()
    ).item()
    assert synsets_match


def test_archive_hash_locked_on_first_download(tmp_path: Path, sample_dir: Path):
    body = _imagenetv2_archive(sample_dir)
    lock_file = tmp_path / "downloads.lock"
    with loopback_server({"/v2.tar.gz": Response(body=body)}) as server:
        url = f"{server.url}/v2.tar.gz"
        fetch_archive_dataset(
            dataset="v2", url=url, sha256="lock", destination=tmp_path / "first",
            lock_file=lock_file, allow_insecure_localhost=True,
        )
        assert hashlib.sha256(body).hexdigest() in lock_file.read_text()

        server.responses["/v2.tar.gz"] = Response(body=body + b"tampered")
        with pytest.raises(CheckpointError, match="sha256"):
            fetch_archive_dataset(
                dataset="v2", url=url, sha256="lock", destination=tmp_path / "second",
                lock_file=lock_file, allow_insecure_localhost=True,
            )
    assert not (tmp_path / "second").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["downloads.lock", "first"]


def test_archive_not_tar_rejected(tmp_path: Path):
    body = b"this is not a tar archive"
    with loopback_server({"/v2.tar.gz": Response(body=body)}) as server:
        with pytest.raises(DatasetError, match="could not unpack"):
            fetch_archive_dataset(
                dataset="v2", url=f"{server.url}/v2.tar.gz", sha256=hashlib.sha256(body).hexdigest(),
                destination=tmp_path / "source", allow_insecure_localhost=True,
            )
    assert list(tmp_path.iterdir()) == []


def test_archive_path_traversal_rejected(tmp_path: Path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        member = tarfile.TarInfo("../escaped.txt")
        member.size = 2
        archive.addfile(member, io.BytesIO(b"hi"))
    body = buffer.getvalue()
    with loopback_server({"/evil.tar.gz": Response(body=body)}) as server:
        with pytest.raises(DatasetError, match="could not unpack"):
            fetch_archive_dataset(
                dataset="evil", url=f"{server.url}/evil.tar.gz", sha256=hashlib.sha256(body).hexdigest(),
                destination=tmp_path / "inner" / "source", allow_insecure_localhost=True,
            )
    assert not (tmp_path / "inner" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
