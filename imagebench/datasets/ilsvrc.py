"""Labels of the ILSVRC2012 validation images from the files that ship with them.

Three sources are read:
- Kaggle's ``LOC_val_solution.csv``: one row per image, ``ImageId,PredictionString``,
  where the prediction string repeats ``<synset> x_min y_min x_max y_max`` per box.
- The devkit's ``ILSVRC2012_validation_ground_truth.txt``: line n contains the devkit
  ILSVRC2012_ID of ``ILSVRC2012_val_<n>``. Devkit IDs are not class indices: the devkit's
  ``meta.mat`` (or a synset list in devkit ID order) maps them to synsets. Subtracting one
  from the ID gives a wrong label for almost every image.
- ImageNet-ReaL's ``real.json``: entry n-1 lists the class indices judged correct for
  ``ILSVRC2012_val_<n>``, possibly none.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from imagebench.datasets.classes import NUM_CLASSES, SYNSET_PATTERN, label_for_synset, synset_to_label
from imagebench.datasets.layouts import LabeledImage, format_examples
from imagebench.errors import DatasetError

logger = logging.getLogger(__name__)

ILSVRC2012_VAL_SIZE = 50_000
LOC_VAL_SOLUTION = "LOC_val_solution.csv"
DEVKIT_META = "meta.mat"

_VAL_FILE_STEM = re.compile(r"ILSVRC2012_val_(\d{8})")

# A ReaL file whose labels contain the original label for less than this share of the
# images with any ReaL label is taken to be in another image order. This bound is a
# choice: a shifted or shuffled file agrees on about 1 image in 1,000.
_MIN_REAL_AGREEMENT = 0.2
_MIN_REAL_IMAGES_CHECKED = 10


def val_image_number(path: str) -> int | None:
    """Return n for a file named ``ILSVRC2012_val_<n>.<ext>`` (n has 8 digits), else None."""
    match = _VAL_FILE_STEM.fullmatch(os.path.splitext(os.path.basename(path))[0])
    return int(match.group(1)) if match else None


def default_label_file(root: Path) -> Path:
    """Return ``root/LOC_val_solution.csv``, else ``root/../LOC_val_solution.csv``."""
    candidates = [root / LOC_VAL_SOLUTION, root.parent / LOC_VAL_SOLUTION]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"no label file for layout 'ilsvrc-val': neither {candidates[0]} nor {candidates[1]} exists. "
        "Pass label_file: Kaggle's LOC_val_solution.csv or the devkit's "
        "ILSVRC2012_validation_ground_truth.txt."
    )


def label_val_images(
    root: Path,
    names: Sequence[str],
    *,
    label_file: Path,
    class_map_file: Path | None,
) -> list[LabeledImage]:
    """Label validation images by ``label_file``, dispatching on its suffix (.csv or .txt)."""
    suffix = label_file.suffix.lower()
    if suffix == ".csv":
        if class_map_file is not None:
            raise DatasetError(
                f"class_map_file {class_map_file} is not used with the CSV label file {label_file}: "
                "remove it, because the CSV names each image's synset."
            )
        return _label_by_solution_csv(root, names, read_loc_val_solution(label_file), label_file)

    if suffix == ".txt":
        synsets_file = class_map_file or _default_devkit_synsets_file(label_file)
        images = _label_by_devkit(root, names, label_file=label_file, synsets_file=synsets_file)
        _cross_check_with_solution_csv(root, images, label_file=label_file, synsets_file=synsets_file)
        return images

    raise DatasetError(
        f"label file {label_file} has an unknown format: layout 'ilsvrc-val' reads "
        f"{LOC_VAL_SOLUTION} (.csv) or the devkit's ILSVRC2012_validation_ground_truth.txt (.txt)."
    )


def read_loc_val_solution(path: Path) -> dict[str, int]:
    """Read Kaggle's LOC_val_solution.csv into a map from image id (file stem) to class index."""
    labels: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["ImageId", "PredictionString"]:
            raise DatasetError(
                f"label file {path} starts with {header!r}, not the header ImageId,PredictionString "
                "of Kaggle's LOC_val_solution.csv. Pass the Kaggle file, or the devkit ground truth (.txt)."
            )
        for row in reader:
            if not row:
                continue
            image_id, synset = _parse_solution_row(row, path=path, line=reader.line_num)
            if image_id in labels:
                raise DatasetError(
                    f"label file {path} lists image {image_id} twice (line {reader.line_num}). "
                    "Remove one row."
                )
            labels[image_id] = label_for_synset(synset, source=f"label file {path}, line {reader.line_num}")
    return labels


def read_devkit_ground_truth(path: Path) -> list[int]:
    """Read the devkit ground truth: element n-1 is the ILSVRC2012_ID of ILSVRC2012_val_<n>."""
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()

    devkit_ids = []
    for line_number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text.isdigit() or int(text) < 1:
            raise DatasetError(
                f"line {line_number} of ground truth {path} is {line!r}, not a devkit ILSVRC2012_ID "
                "(a positive integer). Pass the devkit's ILSVRC2012_validation_ground_truth.txt unchanged."
            )
        devkit_ids.append(int(text))
    return devkit_ids


def read_devkit_synsets(path: Path) -> dict[int, str]:
    """Read the map from devkit ILSVRC2012_ID to synset from ``meta.mat`` or a synset list.

    In a synset list, line k names the synset of ILSVRC2012_ID k, by its first word.
    Either source is rejected when its synsets are sorted by id, because the devkit's
    ID order is not sorted: such a list is the class-index order, and reading it as
    devkit IDs would shift labels.
    """
    if path.suffix.lower() == ".mat":
        synsets_by_id = _read_meta_mat(path)
    else:
        synsets_by_id = _read_synset_list(path)

    # The real meta.mat also lists WordNet's inner nodes after ID 1000. Only the ImageNet-1k classes count.
    known = synset_to_label()
    in_id_order = [synsets_by_id[devkit_id] for devkit_id in sorted(synsets_by_id) if synsets_by_id[devkit_id] in known]
    if len(in_id_order) > 1 and in_id_order == sorted(in_id_order):
        raise DatasetError(
            f"synset file {path} lists its synsets in sorted order, which is ImageNet's class-index "
            "order and not the devkit's ILSVRC2012_ID order (in the devkit, ID 1 is not the "
            "first synset in sorted order). Kaggle's LOC_synset_mapping.txt is such a file. Pass "
            "the devkit's data/meta.mat, or use Kaggle's LOC_val_solution.csv as label_file."
        )
    return synsets_by_id


def read_real_labels(path: Path) -> list[list[int]]:
    """Read ImageNet-ReaL's real.json: entry n-1 lists the class indices for ILSVRC2012_val_<n>."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"ReaL label file {path} is not valid JSON ({error}). "
            "Pass real.json from ImageNet-ReaL."
        ) from error

    if not isinstance(entries, list) or len(entries) != ILSVRC2012_VAL_SIZE:
        size = len(entries) if isinstance(entries, list) else type(entries).__name__
        raise DatasetError(
            f"ReaL label file {path} has {size} entries, not a list of {ILSVRC2012_VAL_SIZE:,} lists "
            "(one per validation image, in file-name order). Pass real.json from ImageNet-ReaL unchanged."
        )

    for index, entry in enumerate(entries):
        valid = isinstance(entry, list) and all(
            isinstance(label, int) and not isinstance(label, bool) and 0 <= label < NUM_CLASSES for label in entry
        )
        if not valid:
            raise DatasetError(
                f"entry {index} of ReaL label file {path} is {entry!r}, not a list of class indices "
                f"0..{NUM_CLASSES - 1}. Pass real.json from ImageNet-ReaL unchanged."
            )
    return entries


def real_labels_for(images: Sequence[LabeledImage], *, real_labels_file: Path) -> list[list[int]]:
    """Return each image's ReaL labels, found by the number in its file name, and check their order.

    Raises DatasetError when an image name has no validation number, or when the ReaL
    labels rarely contain the image's own label, which means the two are in different orders.
    """
    real_labels = read_real_labels(real_labels_file)

    per_image = []
    for image in images:
        number = val_image_number(image.path)
        if number is None or not 1 <= number <= ILSVRC2012_VAL_SIZE:
            raise DatasetError(
                f"image {image.path} has no ILSVRC2012 validation file name (ILSVRC2012_val_<8 digits>), "
                f"so it has no entry in ReaL label file {real_labels_file}. Remove real_labels_file "
                "for datasets that are not the ILSVRC2012 validation images."
            )
        per_image.append(real_labels[number - 1])

    _check_real_labels_agree(images, per_image, real_labels_file=real_labels_file)
    return per_image


def _parse_solution_row(row: list[str], *, path: Path, line: int) -> tuple[str, str]:
    if len(row) != 2 or not row[0].strip():
        raise DatasetError(f"line {line} of label file {path} is not 'ImageId,PredictionString': {row!r}.")

    image_id = row[0].strip()
    tokens = row[1].split()
    box_synsets = set(tokens[0::5])
    if not tokens or len(tokens) % 5 != 0 or not all(SYNSET_PATTERN.fullmatch(synset) for synset in box_synsets):
        raise DatasetError(
            f"line {line} of label file {path} has prediction string {row[1]!r}. Expected one or more "
            "'<synset> x_min y_min x_max y_max' groups, like 'n01751748 1 2 3 4'."
        )
    if len(box_synsets) > 1:
        raise DatasetError(
            f"line {line} of label file {path} gives image {image_id} boxes of several synsets "
            f"({', '.join(sorted(box_synsets))}), so its class is ambiguous. Fix the row."
        )
    return image_id, tokens[0]


def _label_by_solution_csv(
    root: Path, names: Sequence[str], labels: dict[str, int], label_file: Path
) -> list[LabeledImage]:
    stems = {os.path.splitext(name)[0]: name for name in names}
    _check_same_images(root, image_ids=set(stems), listed_ids=set(labels), label_file=label_file)
    return [LabeledImage(path=stems[image_id], label=labels[image_id]) for image_id in sorted(stems)]


def _label_by_devkit(root: Path, names: Sequence[str], *, label_file: Path, synsets_file: Path) -> list[LabeledImage]:
    unnumbered = [name for name in names if val_image_number(name) is None]
    if unnumbered:
        raise DatasetError(
            f"{len(unnumbered)} images in {root} are not named ILSVRC2012_val_<8 digits> (first: "
            f"{format_examples(unnumbered)}), so devkit ground truth {label_file} cannot label them. Rename "
            "or remove them."
        )

    devkit_ids = read_devkit_ground_truth(label_file)
    image_ids = {_val_stem(val_image_number(name)) for name in names}
    listed = {_val_stem(number) for number in range(1, len(devkit_ids) + 1)}
    _check_same_images(root, image_ids=image_ids, listed_ids=listed, label_file=label_file)

    synsets_by_id = read_devkit_synsets(synsets_file)
    images = []
    for name in names:
        devkit_id = devkit_ids[val_image_number(name) - 1]
        if devkit_id not in synsets_by_id:
            raise DatasetError(
                f"ground truth {label_file} gives image {name} the ILSVRC2012_ID {devkit_id}, which "
                f"synset file {synsets_file} does not list. Pass the meta.mat of the same devkit."
            )
        source = f"synset file {synsets_file} (ILSVRC2012_ID {devkit_id})"
        images.append(LabeledImage(path=name, label=label_for_synset(synsets_by_id[devkit_id], source=source)))
    return images


def _check_same_images(root: Path, *, image_ids: set[str], listed_ids: set[str], label_file: Path) -> None:
    unlabeled = sorted(image_ids - listed_ids)
    if unlabeled:
        raise DatasetError(
            f"{len(unlabeled)} images in {root} are missing from label file {label_file} (first: "
            f"{format_examples(unlabeled)}). Remove them or pass the label file that lists them."
        )

    absent = sorted(listed_ids - image_ids)
    if absent:
        raise DatasetError(
            f"label file {label_file} lists {len(absent)} images that are not in {root} (first: "
            f"{format_examples(absent)}). Restore the missing images, or pass a label file that lists only "
            "the images present."
        )


def _default_devkit_synsets_file(label_file: Path) -> Path:
    candidate = label_file.parent / DEVKIT_META
    if not candidate.is_file():
        raise DatasetError(
            f"devkit ground truth {label_file} needs the devkit's synset map to turn ILSVRC2012_IDs "
            f"into synsets, but {candidate} does not exist. Pass class_map_file: the devkit's "
            "data/meta.mat or a synset list in devkit ID order."
        )
    return candidate


def _read_meta_mat(path: Path) -> dict[int, str]:
    try:
        import scipy.io
    except ImportError as error:
        raise DatasetError(f"reading {path} needs scipy: run 'pip install scipy'.") from error

    try:
        contents = scipy.io.loadmat(path)
    except (OSError, ValueError, TypeError) as error:
        raise DatasetError(
            f"cannot read {path} as a MATLAB file ({error}). "
            "Pass the devkit's data/meta.mat."
        ) from error

    synsets = contents.get("synsets")
    if synsets is None or synsets.dtype.names is None or not {"ILSVRC2012_ID", "WNID"} <= set(synsets.dtype.names):
        raise DatasetError(
            f"{path} has no 'synsets' struct with fields ILSVRC2012_ID and WNID. Pass the devkit's data/meta.mat."
        )

    # loadmat keeps MATLAB's 2-D shapes, so each field of each record is a 1x1 or 1-element array.
    # NOTE: only meta.mat files written by scipy.io.savemat in the shape that torchvision's
    # ImageNet parser expects have been read here, not the devkit's own file.
    synsets_by_id = {}
    for record in synsets.ravel():
        synsets_by_id[int(record["ILSVRC2012_ID"].item())] = str(record["WNID"].item())
    return synsets_by_id


def _read_synset_list(path: Path) -> dict[int, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()

    synsets_by_id = {}
    for devkit_id, line in enumerate(lines, start=1):
        words = line.split()
        if not words or not SYNSET_PATTERN.fullmatch(words[0]):
            raise DatasetError(
                f"line {devkit_id} of synset list {path} is {line!r}. Each line must start with the "
                "synset of that devkit ILSVRC2012_ID, like 'n02119789 kit fox'."
            )
        synsets_by_id[devkit_id] = words[0]

    if len(set(synsets_by_id.values())) != len(synsets_by_id):
        raise DatasetError(
            f"synset list {path} names a synset more than once. "
            "Pass the list in devkit ID order unchanged."
        )
    return synsets_by_id


def _cross_check_with_solution_csv(
    root: Path, images: Sequence[LabeledImage], *, label_file: Path, synsets_file: Path
) -> None:
    """Compare devkit labels with LOC_val_solution.csv when that file is at its default place.

    Both files carry the same ILSVRC2012 validation labels, so a difference means that
    one of them is wrong, most often the synset map of the devkit IDs.
    """
    try:
        solution_file = default_label_file(root)
    except DatasetError:
        return

    expected = read_loc_val_solution(solution_file)
    differing = [image for image in images if expected.get(os.path.splitext(image.path)[0], image.label) != image.label]
    if differing:
        first = differing[0]
        raise DatasetError(
            f"devkit labels from {label_file} with synset map {synsets_file} differ from {solution_file} "
            f"for {len(differing)} of {len(images)} images (first: {first.path} gets class "
            f"{first.label} from the devkit and {expected[os.path.splitext(first.path)[0]]} from the CSV). "
            "The synset map is probably not in devkit ILSVRC2012_ID order, so pass the devkit's meta.mat. "
            "Otherwise check that both files are unchanged."
        )
    logger.info("devkit labels agree with %s for all %d images", solution_file, len(images))


def _check_real_labels_agree(
    images: Sequence[LabeledImage], real_labels: Sequence[list[int]], *, real_labels_file: Path
) -> None:
    judged = [(image, labels) for image, labels in zip(images, real_labels, strict=True) if labels]
    if len(judged) < _MIN_REAL_IMAGES_CHECKED:
        logger.info("skipping the ReaL order check: only %d images have ReaL labels", len(judged))
        return

    agreeing = sum(image.label in labels for image, labels in judged)
    if agreeing < _MIN_REAL_AGREEMENT * len(judged):
        raise DatasetError(
            f"ReaL labels from {real_labels_file} contain the dataset's own label for only {agreeing} of "
            f"{len(judged)} images, so the file is not in the order of these images (entry n-1 must "
            "belong to ILSVRC2012_val_<n>). Pass real.json from ImageNet-ReaL unchanged."
        )


def _val_stem(number: int) -> str:
    return f"ILSVRC2012_val_{number:08d}"
