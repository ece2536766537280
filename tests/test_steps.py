"""The job decorator that every workflow entry point uses."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from imagebench.config import settings_from_section
from imagebench.figures import FigureSettings
from imagebench.steps import job

_LOGGER = logging.getLogger("imagebench.tests.steps")


def fake_snakemake(log: list[str]) -> SimpleNamespace:
    return SimpleNamespace(log=log)


def test_job_logs_to_rule_log(tmp_path):
    log = tmp_path / "logs" / "rule.log"

    @job
    def work(snakemake):
        _LOGGER.info("working on %s", snakemake.log[0])

    work(fake_snakemake([str(log)]))

    assert "working on" in log.read_text()


def test_job_logs_and_reraises_failure(tmp_path):
    log = tmp_path / "rule.log"

    @job
    def work(snakemake):
        raise ValueError("broken shard")

    with pytest.raises(ValueError, match="broken shard"):
        work(fake_snakemake([str(log)]))
    assert "job failed" in log.read_text()
    assert "ValueError: broken shard" in log.read_text()


def test_job_without_log_runs_unchanged():
    calls = []

    @job
    def work(snakemake):
        """Record the call."""
        calls.append(snakemake)

    snakemake = fake_snakemake([])
    work(snakemake)

    assert calls == [snakemake]
    assert work.__name__ == "work"
    assert work.__doc__ == "Record the call."


def test_settings_ignore_unknown_keys():
    settings = settings_from_section(FigureSettings, {"dpi": 72, "human_top5": 94.9, "unrelated": True})

    assert settings.dpi == 72
    assert settings.width == FigureSettings().width


def test_manifest_error_names_dataset(tmp_path):
    from imagebench.errors import DatasetError
    from imagebench.steps import build_manifest

    params = SimpleNamespace(
        root=str(tmp_path), layout="synset-files", shards=1, label_file=None, class_map_file=None,
        real_labels_file=None, expect=None, class_subset=False,
    )
    snakemake = SimpleNamespace(
        log=[], params=params, wildcards=SimpleNamespace(dataset="empty"),
        output=SimpleNamespace(manifest=str(tmp_path / "manifest.parquet")),
    )

    with pytest.raises(DatasetError, match=r"^dataset 'empty': no images .* found in "):
        build_manifest(snakemake)
    assert not (tmp_path / "manifest.parquet").exists()
