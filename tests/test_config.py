import copy
from pathlib import Path

import pytest
import yaml

from imagebench.config import check_duplicate_keys, validate_config
from imagebench.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def config() -> dict:
    with open(REPO / "config.yaml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_default_config_is_valid(config):
    validated = validate_config(config)
    assert list(validated["models"]) == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert validated["evaluation"]["device"] == "auto"
    assert validated["figures"]["human_top5"] == 94.9


def test_defaults_filled(config):
    del config["evaluation"]
    del config["figures"]
    validated = validate_config(config)
    assert validated["evaluation"]["batch_size"] >= 1
    assert validated["figures"]["dpi"] == 150
    assert validated["lock_file"] == "workflow/downloads.lock"


def _broken(config: dict, edit) -> dict:
    broken = copy.deepcopy(config)
    edit(broken)
    return broken


CASES = [
    ("unknown architecture", lambda c: c["models"]["efficientnet_lite0"].update(architecture="resnet9000"),
     "models.efficientnet_lite0.architecture: 'resnet9000' is not a timm architecture"),
    ("unknown source scheme", lambda c: c["models"]["efficientnet_lite0"].update(weights={"ftp": "ftp://x"}),
     "models.efficientnet_lite0.weights"),
    ("url without sha256", lambda c: c["models"]["efficientnet_lite0"].update(weights={"url": "https://x/w.pth"}),
     "has no sha256"),
    ("bad sha256", lambda c: c["models"]["efficientnet_lite0"]["weights"].update(sha256="abc"),
     "models.efficientnet_lite0.weights"),
    ("zero shards", lambda c: c["datasets"]["imagenet-sample"].update(shards=0),
     "datasets.imagenet-sample.shards: 0 is out of range (minimum is 1)"),
    ("unknown layout", lambda c: c["datasets"]["imagenet-sample"].update(layout="coco"),
     "datasets.imagenet-sample.layout: 'coco' is not allowed; use one of"),
    ("negative batch size", lambda c: c.setdefault("evaluation", {}).update(batch_size=-4),
     "evaluation.batch_size: -4 is out of range"),
    ("unknown dtype", lambda c: c.setdefault("evaluation", {}).update(amp_dtype="float8"),
     "evaluation.amp_dtype: 'float8' is not allowed"),
    ("unknown key", lambda c: c["models"]["efficientnet_lite0"].update(weigths={}),
     "unknown key(s) 'weigths'"),
    ("bad device", lambda c: c.setdefault("evaluation", {}).update(device="tpu"),
     "evaluation.device: 'tpu' does not match"),
    ("dataset without root or source", lambda c: c["datasets"]["imagenet-sample"].pop("source"),
     "datasets.imagenet-sample: no root and no source"),
    ("no models", lambda c: c.update(models={}), "models"),
]


@pytest.mark.parametrize(("case", "edit", "message"), CASES, ids=[case[0] for case in CASES])
def test_invalid_config_rejected(config, case, edit, message):
    with pytest.raises(ConfigError) as raised:
        validate_config(_broken(config, edit))
    assert message in str(raised.value)


def test_all_errors_reported_together(config):
    def edit(c):
        c["datasets"]["imagenet-sample"]["shards"] = 0
        c.setdefault("evaluation", {})["batch_size"] = 0

    with pytest.raises(ConfigError) as raised:
        validate_config(_broken(config, edit))
    assert "shards" in str(raised.value)
    assert "batch_size" in str(raised.value)


def test_dataset_root_satisfies_first_dataset(config):
    config["datasets"]["imagenet-sample"].pop("source")
    config["dataset_root"] = "/data/imagenet/val"
    validate_config(config)


def test_duplicate_model_name_rejected(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "models:\n"
        "  lite0: {architecture: tf_efficientnet_lite0, weights: {timm: tf_efficientnet_lite0.in1k}}\n"
        "  lite0: {architecture: tf_efficientnet_lite1, weights: {timm: tf_efficientnet_lite1.in1k}}\n"
    )
    with pytest.raises(ConfigError, match="duplicate key 'lite0'.*line 3.*first at line 2"):
        check_duplicate_keys(path)
