"""Tests of the ImageNet-1k class order."""

from __future__ import annotations

import pytest
from timm.data import ImageNetInfo

from imagebench.datasets.classes import imagenet_synsets, label_for_synset, synset_for_label
from imagebench.errors import DatasetError


def test_order_is_timm_order():
    synsets = imagenet_synsets()

    assert list(synsets) == ImageNetInfo().label_names()
    assert len(synsets) == 1000
    assert synsets[0] == "n01440764"
    assert synsets[999] == "n15075141"


def test_label_round_trip():
    for label in (0, 1, 10, 100, 999):
        assert label_for_synset(synset_for_label(label, source="test"), source="test") == label


def test_unknown_synset_names_source():
    with pytest.raises(DatasetError, match="unknown synset 'n00000000' in file x.JPEG"):
        label_for_synset("n00000000", source="file x.JPEG")


@pytest.mark.parametrize("label", [-1, 1000])
def test_label_out_of_range(label):
    with pytest.raises(DatasetError, match=f"class index {label} in map.csv is outside 0..999"):
        synset_for_label(label, source="map.csv")
