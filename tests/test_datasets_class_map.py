"""Tests of reading ImageFolder class map files."""

from __future__ import annotations

import pytest

from imagebench.datasets.class_map import read_class_map
from imagebench.errors import DatasetError


def test_csv_synsets(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("folder,synset\ngoldfish,n01443537\ntench,n01440764\n\n")

    assert read_class_map(path) == {"goldfish": 1, "tench": 0}


def test_csv_labels(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("folder,label\n10,999\n2,0\n")

    assert read_class_map(path) == {"10": 999, "2": 0}


def test_json_mixed_values(tmp_path):
    path = tmp_path / "map.json"
    path.write_text('{"goldfish": "n01443537", "toilet tissue": 999}')

    assert read_class_map(path) == {"goldfish": 1, "toilet tissue": 999}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("map.csv", "name,synset\na,n01440764\n", "has the header \\['name', 'synset'\\]"),
        ("map.csv", "folder,synset\na,n01440764,extra\n", "line 2 .* has 3 fields"),
        ("map.csv", "folder,synset\na,n01440764\na,n01443537\n", "lists folder 'a' twice"),
        ("map.csv", "folder,synset\na,0\n", "has '0' where a synset like n01440764 is expected"),
        ("map.csv", "folder,synset\na,n99999999\n", "unknown synset 'n99999999' in class map file"),
        ("map.csv", "folder,label\na,n01440764\n", "where a class index 0..999 is expected"),
        ("map.csv", "folder,label\na,1000\n", "class index 1000 .* is outside 0..999"),
        ("map.json", '["n01440764"]', "contains a JSON list"),
        ("map.json", '{"a": 1.5}', "maps to 1.5"),
        ("map.json", '{"a": true}', "maps to True"),
        ("map.json", '{"a": -1}', "class index -1 .* is outside"),
        ("map.json", '{"a": ', "is not valid JSON"),
        ("map.yaml", "a: n01440764\n", "must end in .csv"),
    ],
)
def test_invalid_class_maps(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)

    with pytest.raises(DatasetError, match=message):
        read_class_map(path)


def test_missing_class_map(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_class_map(tmp_path / "absent.csv")
