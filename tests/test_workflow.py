"""A real Snakemake run of a small config: outputs, no-op reruns and targeted reruns."""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from imagebench.published import COMPARISON_COLUMNS, DEFAULT_TABLE, published_schema, read_published
from workflow_runner import planned_jobs, small_config, snakemake, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    images = workdir / "images"
    images.mkdir()
    for source in sorted(sample_dir.iterdir())[::50]:
        (images / source.name).symlink_to(source)
    write_config(workdir, small_config(images, shards=2))
    snakemake(workdir, "--cores", "2")
    return workdir


def test_run_writes_leaderboard_and_figures(finished_run: Path):
    results = finished_run / "results"
    for name in (
        "leaderboard.parquet", "leaderboard.csv", "leaderboard.md", "figures/accuracy.png", "figures/accuracy.svg",
        "figures/accuracy_vs_throughput.png", "throughput/efficientnet_lite0/cpu-fp32-b4.parquet",
        "figures/published.png",
    ):
        assert (results / name).stat().st_size > 0, name

    leaderboard = pl.read_parquet(results / "leaderboard.parquet")
    assert leaderboard.height == 1
    row = leaderboard.row(0, named=True)
    assert row["images"] == 10
    assert row["failed_images"] == 0
    assert row["top1_low"] <= row["top1"] <= row["top1_high"]
    assert row["checkpoint_sha256"]
    assert row["source_sha256"] == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    assert row["cpu_images_per_second"] > 0
    assert row["cpu_setting"] == "cpu-fp32-b4"
    # The sample declares no published_dataset, so nothing is set against published numbers.
    assert all(row[column] is None for column in COMPARISON_COLUMNS)
    assert not (results / "published").exists()
    assert "vs published" not in (results / "leaderboard.md").read_text()


def test_second_run_has_nothing_to_do(finished_run: Path):
    assert planned_jobs(finished_run) == {}


def test_deleted_shard_reruns_only_dependents(finished_run: Path):
    (finished_run / "results/predictions/sample/efficientnet_lite0/shard-1-of-2.parquet").unlink()
    assert planned_jobs(finished_run) == {
        "evaluate_shard": 1, "aggregate": 1, "plot_accuracy": 1, "plot_published": 1, "plot_pareto": 1, "all": 1,
    }
    snakemake(finished_run, "--cores", "2")
    assert planned_jobs(finished_run) == {}


def test_figure_setting_reruns_only_figures(finished_run: Path):
    config_path = finished_run / "config.yaml"
    original = config_path.read_text()
    config_path.write_text(original.replace("human_top5: 94.9", "human_top5: 95.0"))
    try:
        assert planned_jobs(finished_run) == {"plot_accuracy": 1, "plot_published": 1, "plot_pareto": 1, "all": 1}
    finally:
        config_path.write_text(original)


def _published_table_for(measured: dict, path: Path) -> Path:
    """Write the repository's published table plus a lite0 row for the sample: top-1 outside the interval, top-5 inside."""
    row = {
        "model": "tf_efficientnet_lite0.in1k", "top1": measured["top1_low"] - 5.0, "top5": measured["top5"],
        "img_size": measured["img_size"], "crop_pct": measured["crop_pct"], "interpolation": measured["interpolation"],
        "dataset": "sample-10", "kind": "model", "weights_public": True, "source": "written by this test", "notes": "",
    }  # fmt: skip
    pl.concat([read_published(DEFAULT_TABLE), pl.DataFrame([row], schema=published_schema())]).write_csv(path)
    return path


def test_published_counterpart_reaches_leaderboard(finished_run: Path, tmp_path: Path):
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir, symlinks=True)
    measured = pl.read_parquet(workdir / "results/leaderboard.parquet").row(0, named=True)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["datasets"]["sample"]["published_dataset"] = "sample-10"
    config["models"]["efficientnet_lite0"]["published_as"] = "tf_efficientnet_lite0.in1k"
    config["published"] = {"table": str(_published_table_for(measured, tmp_path / "published.csv"))}
    write_config(workdir, config)

    # No evaluation or throughput job: only the leaderboard and what reads it.
    assert planned_jobs(workdir) == {"aggregate": 1, "plot_accuracy": 1, "plot_published": 1, "plot_pareto": 1, "all": 1}
    snakemake(workdir, "--cores", "2")

    row = pl.read_parquet(workdir / "results/leaderboard.parquet").row(0, named=True)
    assert row["published_model"] == "tf_efficientnet_lite0.in1k"
    assert row["top1_diff"] == pytest.approx(row["top1"] - row["top1_low"] + 5.0, abs=1e-3)
    assert row["top1_outside_ci"] is True
    assert row["top5_diff"] == pytest.approx(0.0)
    assert row["top5_outside_ci"] is False
    assert row["preprocessing_matches"] is True
    assert pl.read_csv(workdir / "results/leaderboard.csv")["top1_outside_ci"].to_list() == [True]
    markdown = (workdir / "results/leaderboard.md").read_text()
    assert "vs published top-1 (pp)" in markdown
    assert f"{row['top1_diff']:+.2f} (outside 95% CI)" in markdown


def _job_intervals(workdir: Path) -> dict[str, list[tuple[float, float]]]:
    """Return {rule: [(start, end) of each job]} from Snakemake's records in .snakemake/metadata."""
    intervals: dict[str, list[tuple[float, float]]] = {}
    for path in (workdir / ".snakemake" / "metadata").iterdir():
        record = json.loads(path.read_text())
        intervals.setdefault(record["rule"], []).append((record["starttime"], record["endtime"]))
    return intervals


def test_throughput_is_timed_alone(finished_run: Path):
    # Two one-thread shards and a one-thread measurement fit on two cores at once, so only the
    # host_share resource of profiles/default keeps the measurement away from the shards.
    intervals = _job_intervals(finished_run)

    assert len(intervals["measure_throughput"]) == 1
    (start, end), = intervals["measure_throughput"]
    for shard_start, shard_end in intervals["evaluate_shard"]:
        assert shard_end <= start or shard_start >= end


def test_default_profile_counts_every_host_share():
    from imagebench.workflow import HOST_SHARES
    from workflow_runner import REPO

    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())

    assert profile["resources"]["host_share"] == HOST_SHARES


def test_report_builds(finished_run: Path):
    result = snakemake(finished_run, "--report", "results/report.html")
    html = (finished_run / "results/report.html").read_text(errors="replace")
    assert "accuracy.png" in html
    # docutils reports caption markup it cannot parse (such as a stray trailing underscore) this way.
    assert "(ERROR/" not in result.stdout + result.stderr


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def test_report_renders_in_chromium(finished_run: Path, tmp_path: Path):
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium is not installed (Debian package chromium)")
    report = finished_run / "results/report.html"
    if not report.exists():
        snakemake(finished_run, "--report", "results/report.html")

    # The report is a single-page application: the DOM after its scripts ran must show the figures' categories.
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "Accuracy" in dom
    assert "Leaderboard" in dom

    screenshot = tmp_path / "report.png"
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--window-size=1280,900", f"--screenshot={screenshot}", report.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert screenshot.stat().st_size > 20_000


def _git(*arguments: str, cwd: Path) -> str:
    import subprocess

    environment = {
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.org", "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(["git", *arguments], cwd=cwd, check=True, capture_output=True, text=True, env=environment)
    return result.stdout.strip()


def test_git_source_and_layouts_agree(tmp_path: Path, sample_dir: Path):
    """The same images, fetched from a pinned git commit and laid out as an ImageFolder, score the same."""
    import shutil

    from timm.data import ImageNetInfo

    images = sorted(sample_dir.iterdir())[3::60]
    repository = tmp_path / "sample-repo"
    repository.mkdir()
    for image in images:
        shutil.copy(image, repository / image.name)
    _git("init", "-q", cwd=repository)
    _git("add", ".", cwd=repository)
    _git("commit", "-q", "-m", "sample", cwd=repository)
    commit = _git("rev-parse", "HEAD", cwd=repository)

    folders = tmp_path / "imagefolder"
    for image in images:
        (folders / image.name.split("_", 1)[0]).mkdir(parents=True, exist_ok=True)
        (folders / image.name.split("_", 1)[0] / image.name).symlink_to(image)

    workdir = tmp_path / "workdir"
    config = small_config(folders, shards=1)
    config["datasets"] = {
        "from-git": {"layout": "synset-files", "source": {"git": str(repository), "commit": commit}, "shards": 2},
        "as-imagefolder": {"layout": "imagefolder", "root": str(folders), "shards": 1},
    }
    write_config(workdir, config)
    snakemake(workdir, "--cores", "2")

    assert (workdir / "results/datasets/from-git/source" / images[0].name).is_file()
    leaderboard = pl.read_parquet(workdir / "results/leaderboard.parquet").sort("dataset")
    assert leaderboard["images"].to_list() == [len(images), len(images)]
    assert leaderboard["top1"][0] == leaderboard["top1"][1]
    assert leaderboard["top5"][0] == leaderboard["top5"][1]

    manifests = {
        name: pl.read_parquet(workdir / f"results/datasets/{name}/manifest.parquet")
        for name in ("from-git", "as-imagefolder")
    }
    by_file = {
        name: dict(zip(frame["path"].str.split("/").list.last(), frame["label"])) for name, frame in manifests.items()
    }
    assert by_file["from-git"] == by_file["as-imagefolder"]
    class_names = ImageNetInfo().label_names()
    assert all(class_names[label] == name.split("_", 1)[0] for name, label in by_file["from-git"].items())
