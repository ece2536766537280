"""Tests of fetching a dataset from a local git repository at a pinned commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imagebench.datasets import fetch_git_dataset
from imagebench.errors import DatasetError


def git(*arguments: str, cwd: Path) -> str:
    command = ["git", "-c", "user.name=imagebench", "-c", "user.email=imagebench@example.com", *arguments]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repository(tmp_path):
    """Create a repository with two commits and return its path and both commit ids, oldest first."""
    source = tmp_path / "source"
    source.mkdir()
    git("init", "--quiet", cwd=source)
    (source / "labels.csv").write_text("image,synset\na.JPEG,n01440764\n")
    git("add", "labels.csv", cwd=source)
    git("commit", "--quiet", "-m", "first", cwd=source)
    first = git("rev-parse", "HEAD", cwd=source)

    (source / "labels.csv").write_text("image,synset\na.JPEG,n01443537\n")
    (source / "added.txt").write_text("second commit\n")
    git("add", "labels.csv", "added.txt", cwd=source)
    git("commit", "--quiet", "-m", "second", cwd=source)
    second = git("rev-parse", "HEAD", cwd=source)
    return source, first, second


def test_fetch_tip_commit(tmp_path, repository):
    source, _, second = repository
    destination = tmp_path / "data" / "dataset"

    fetch_git_dataset(url=source.as_uri(), commit=second, destination=destination)

    assert git("rev-parse", "HEAD", cwd=destination) == second
    assert (destination / "added.txt").read_text() == "second commit\n"
    assert sorted(path.name for path in destination.parent.iterdir()) == ["dataset"]


def test_fetch_older_commit_by_path(tmp_path, repository):
    source, first, _ = repository
    destination = tmp_path / "dataset"

    fetch_git_dataset(url=str(source), commit=first, destination=destination)

    assert git("rev-parse", "HEAD", cwd=destination) == first
    assert "n01440764" in (destination / "labels.csv").read_text()
    assert not (destination / "added.txt").exists()


def test_fetch_falls_back_to_full_clone(tmp_path, repository, monkeypatch, caplog):
    # Protocol v0 servers reject a fetch of a commit that no branch points at.
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.version")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "0")
    source, first, _ = repository
    destination = tmp_path / "dataset"

    fetch_git_dataset(url=source.as_uri(), commit=first, destination=destination)

    assert "cloning the whole repository instead" in caplog.text
    assert git("rev-parse", "HEAD", cwd=destination) == first
    assert not (destination / "added.txt").exists()


def test_fetch_unknown_commit(tmp_path, repository):
    source, _, _ = repository
    destination = tmp_path / "dataset"

    with pytest.raises(DatasetError, match=f"commit {'0' * 40} is not in"):
        fetch_git_dataset(url=source.as_uri(), commit="0" * 40, destination=destination)

    assert list(tmp_path.iterdir()) == [source]


def test_fetch_missing_repository(tmp_path):
    with pytest.raises(DatasetError, match="git clone"):
        fetch_git_dataset(url=(tmp_path / "absent").as_uri(), commit="1" * 40, destination=tmp_path / "dataset")

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("commit", ["HEAD", "main", "abc1234", "A" * 40])
def test_fetch_rejects_non_full_commit(tmp_path, repository, commit):
    source, _, _ = repository

    with pytest.raises(DatasetError, match="is not a full commit id"):
        fetch_git_dataset(url=source.as_uri(), commit=commit, destination=tmp_path / "dataset")


def test_fetch_keeps_existing_checkout(tmp_path, repository):
    source, first, second = repository
    destination = tmp_path / "dataset"
    fetch_git_dataset(url=source.as_uri(), commit=first, destination=destination)

    fetch_git_dataset(url=source.as_uri(), commit=first, destination=destination)

    assert git("rev-parse", "HEAD", cwd=destination) == first
    with pytest.raises(DatasetError, match="already exists but is not a checkout"):
        fetch_git_dataset(url=source.as_uri(), commit=second, destination=destination)


def test_fetch_rejects_plain_folder_inside_repository(repository):
    # git rev-parse in the folder finds the enclosing repository, which is at the requested commit.
    source, _, second = repository
    destination = source / "plain"
    destination.mkdir()

    with pytest.raises(DatasetError, match="already exists but is not a checkout"):
        fetch_git_dataset(url=source.as_uri(), commit=second, destination=destination)
