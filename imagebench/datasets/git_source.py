"""Datasets fetched from a git repository at one pinned commit.

Git names every commit by the hash of its content and history, so checking that HEAD
equals the pinned commit verifies every file of the checkout.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from imagebench.errors import DatasetError

logger = logging.getLogger(__name__)

# Full object names: 40 hex digits for SHA-1 repositories, 64 for SHA-256 ones.
_FULL_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

# Characters of git's stderr that an error message quotes.
_STDERR_SHOWN = 2000


def fetch_git_dataset(*, url: str, commit: str, destination: Path) -> None:
    """Check out ``url`` at ``commit`` into ``destination``, which appears only when complete.

    The repository is fetched into a temporary folder beside ``destination`` with a
    shallow fetch of just that commit. Servers that reject a fetch by commit id get a
    full clone instead. After checking that HEAD is ``commit``, the folder is renamed to
    ``destination``. An existing ``destination`` at ``commit`` is kept as it is.
    """
    destination = Path(destination)
    if not _FULL_COMMIT.fullmatch(commit):
        raise DatasetError(
            f"commit {commit!r} for {url} is not a full commit id (40 or 64 lowercase hex digits). "
            "Pin the full id that 'git rev-parse HEAD' prints."
        )
    if shutil.which("git") is None:
        raise DatasetError(f"git is not on PATH, so {url} cannot be fetched. Install git.")
    if destination.exists():
        _check_existing_checkout(destination, url=url, commit=commit)
        return

    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp"))
    try:
        _checkout_commit(staging, url=url, commit=commit)
        head = _git(["rev-parse", "HEAD"], cwd=staging).strip()
        if head != commit:
            raise DatasetError(f"checkout of {url} has HEAD {head}, not the pinned commit {commit}. Fetch it again.")
        os.rename(staging, destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("fetched %s at %s into %s", url, commit, destination)


def _checkout_commit(staging: Path, *, url: str, commit: str) -> None:
    _git(["init", "--quiet"], cwd=staging)
    _git(["remote", "add", "origin", url], cwd=staging)
    try:
        _git(["fetch", "--quiet", "--depth", "1", "origin", commit], cwd=staging)
    except DatasetError as error:
        # Protocol v0 servers reject wants of commits that are not branch or tag tips.
        logger.warning("shallow fetch of %s at %s failed, cloning the whole repository instead: %s", url, commit, error)
        _clone_full(staging, url=url)
        missing_commit = f"commit {commit} is not in {url}. Check the pinned commit."
        _git(["checkout", "--quiet", "--detach", commit], cwd=staging, failure=missing_commit)
        return

    _git(["checkout", "--quiet", "--detach", "FETCH_HEAD"], cwd=staging)


def _clone_full(staging: Path, *, url: str) -> None:
    # git clone needs an empty folder, so drop what the failed fetch left.
    shutil.rmtree(staging)
    staging.mkdir()
    _git(["clone", "--quiet", "--no-checkout", url, "."], cwd=staging)


def _check_existing_checkout(destination: Path, *, url: str, commit: str) -> None:
    try:
        head = _git(["rev-parse", "HEAD"], cwd=destination).strip()
        top_level = Path(_git(["rev-parse", "--show-toplevel"], cwd=destination).strip())
    except DatasetError:
        head, top_level = None, None

    if head != commit or top_level is None or top_level.resolve() != destination.resolve():
        raise DatasetError(
            f"destination {destination} already exists but is not a checkout of {url} at {commit}. "
            "Remove it and fetch again."
        )
    logger.info("keeping %s: it is already a checkout of %s at %s", destination, url, commit)


def _git(arguments: list[str], *, cwd: Path, failure: str | None = None) -> str:
    """Run git without prompts and return its stdout. Raise DatasetError with its stderr on failure."""
    environment = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    command = ["git", "-c", "advice.detachedHead=false", *arguments]
    completed = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        reason = failure or f"'git {' '.join(arguments)}' failed in {cwd} with exit status {completed.returncode}"
        raise DatasetError(f"{reason}: {completed.stderr.strip()[-_STDERR_SHOWN:]}")
    return completed.stdout
