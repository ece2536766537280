"""Class map files that assign an ImageNet class to each folder of an ImageFolder dataset.

Two formats are read:
- CSV with the header ``folder,synset`` (values like ``n01440764``) or ``folder,label``
  (ImageNet class indices 0..999 in timm's class order).
- JSON with one object that maps folder names to a synset (a string) or a class index (an integer).

Several folders may map to the same class.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from imagebench.datasets.classes import NUM_CLASSES, SYNSET_PATTERN, label_for_synset, synset_for_label
from imagebench.errors import DatasetError

_CSV_HEADERS = (["folder", "synset"], ["folder", "label"])


def read_class_map(path: Path) -> dict[str, int]:
    """Read a class map file (CSV or JSON, by suffix) into a map from folder name to class index."""
    if not path.is_file():
        raise DatasetError(f"class map file {path} does not exist. Pass the path of a CSV or JSON class map.")

    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv_class_map(path)
    if suffix == ".json":
        return _read_json_class_map(path)
    raise DatasetError(
        f"class map file {path} must end in .csv (header folder,synset or folder,label) or .json "
        "(an object from folder name to synset or class index)."
    )


def _read_csv_class_map(path: Path) -> dict[str, int]:
    class_map: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        if header not in _CSV_HEADERS:
            raise DatasetError(
                f"class map file {path} has the header {header!r}. Expected 'folder,synset' or 'folder,label'."
            )

        for row in reader:
            if not row:
                continue
            if len(row) != 2:
                raise DatasetError(
                    f"line {reader.line_num} of class map file {path} has {len(row)} "
                    f"fields, not 2: {row!r}."
                )
            folder, value = row[0].strip(), row[1].strip()
            if folder in class_map:
                raise DatasetError(
                    f"class map file {path} lists folder {folder!r} twice (line {reader.line_num}). "
                    "Keep one row."
                )
            source = f"class map file {path}, line {reader.line_num}"
            class_map[folder] = _label_from_text(value, column=header[1], source=source)
    return class_map


def _read_json_class_map(path: Path) -> dict[str, int]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(f"class map file {path} is not valid JSON ({error}).") from error

    if not isinstance(entries, dict):
        raise DatasetError(
            f"class map file {path} contains a JSON {type(entries).__name__}. Expected an object "
            'from folder name to synset or class index, like {"goldfish": "n01443537"}.'
        )

    class_map = {}
    for folder, value in entries.items():
        source = f"class map file {path}, folder {folder!r}"
        if isinstance(value, str):
            class_map[folder] = _label_from_text(value, column="synset", source=source)
        elif isinstance(value, int) and not isinstance(value, bool):
            synset_for_label(value, source=source)
            class_map[folder] = value
        else:
            raise DatasetError(
                f"{source} maps to {value!r}. Expected a synset string or a class "
                f"index 0..{NUM_CLASSES - 1}."
            )
    return class_map


def _label_from_text(value: str, *, column: str, source: str) -> int:
    if column == "synset":
        if not SYNSET_PATTERN.fullmatch(value):
            raise DatasetError(f"{source} has {value!r} where a synset like n01440764 is expected.")
        return label_for_synset(value, source=source)

    if not value.isdigit():
        raise DatasetError(f"{source} has {value!r} where a class index 0..{NUM_CLASSES - 1} is expected.")
    synset_for_label(int(value), source=source)
    return int(value)
