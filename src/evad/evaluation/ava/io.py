"""Reading and writing AVA files: ground-truth and detection CSVs, label maps, exclusions
(SPEC section 9). `evad.evaluation.ava` scores what these read.

Reading is vectorised (``python benchmarks/bench_ava_eval.py`` times it); files the fast path
cannot take (quoted fields, non-ASCII text, fields over 64 characters) go through a row-by-row
reader with the same results and the same one-line errors naming file, line and column (both in
`evad.evaluation.ava.csv_reader`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from evad.errors import UserError
from evad.evaluation.ava.csv_reader import read_csv

# The table names are re-exported (`x as x`): code that read them from here before the split still works.
from evad.evaluation.ava.table import AvaInputWarning as AvaInputWarning
from evad.evaluation.ava.table import AvaTable, Key
from evad.evaluation.ava.table import keyframe_key as keyframe_key


def read_labelmap(path: str | os.PathLike) -> dict[int, str]:
    """Read a label map ``.pbtxt``: items of a ``name: "..."`` followed by ``id: N`` or ``label_id: N``.

    Returns:
        Class id -> name, in file order (a repeated id keeps its last name, as officially).

    Raises:
        UserError: If the file cannot be read, a field is malformed, an id is below 1 (the official
            scorer rejects it) or has no name of its own (the official reader gives it the name
            before), or the file has no ids at all.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read label map {source}: {err}") from None
    names: dict[int, str] = {}
    name = None  # the name no id has taken yet
    text = re.sub(r"(?m)^[ \t]*#.*$", "", text)  # comment lines (line numbers stay)
    # Field by field, so that `item { name: "stand" id: 1 }` on one line reads too. A quoted name is
    # consumed whole (nothing inside it counts), and `\b` keeps `display_name:` from being a name.
    for match in re.finditer(r'\b(name|id|label_id):[ \t]*("[^"\n]*"|[^\s}]*)', text):
        key, value = match.groups()
        lineno = text.count("\n", 0, match.start()) + 1
        if key == "name":
            if len(value) < 2 or not value.startswith('"'):
                raise UserError(f"{source}:{lineno}: expected a quoted class name, got {value!r}")
            name = value[1:-1]
            continue
        try:
            class_id = int(value)
        except ValueError:
            raise UserError(f"{source}:{lineno}: class id {value!r} is not an integer") from None
        if class_id < 1:
            raise UserError(f"{source}:{lineno}: class id {class_id} is below 1")
        if class_id >= 2**63:  # class ids are int64 arrays in the scoring
            raise UserError(f"{source}:{lineno}: class id {class_id} is too large (at most 2**63 - 1)")
        if name is None:
            raise UserError(
                f"{source}:{lineno}: class id {class_id} has no name: expected 'name: \"...\"' before it"
            )
        names.pop(class_id, None)
        names[class_id] = name
        name = None
    if not names:
        raise UserError(
            f"{source}: label map has no class ids (expected 'id: N' or 'label_id: N' lines "
            "after each 'name: \"...\"')"
        )
    return names


def write_labelmap(path: str | os.PathLike, names: Mapping[int, str]) -> None:
    """Write ``names`` (class id -> name) as a label map `read_labelmap` reads back unchanged.

    Raises:
        ValueError: For a name with a double quote or a line break (the format cannot hold it).
    """
    for class_id, name in names.items():
        if '"' in name or "\n" in name:
            raise ValueError(f"class {class_id}: name {name!r} cannot be written to a label map")
    with open(path, "w", encoding="utf-8") as file:
        file.writelines(f'item {{\n  name: "{name}"\n  id: {int(i)}\n}}\n' for i, name in names.items())


def read_groundtruth(path: str | os.PathLike) -> AvaTable:
    """Read an AVA ground-truth CSV.

    Rows are ``video_id, second, x1, y1, x2, y2, action_id[, person_id]``; 2-column rows
    ``video_id, second`` mark keyframes without boxes.

    Raises:
        UserError: Naming the file and 1-based line of the first malformed row.
    """
    return read_csv(path, allowed=(2, 7, 8))


def read_detections(path: str | os.PathLike) -> AvaTable:
    """Read an AVA detections CSV: ``video_id, second, x1, y1, x2, y2, action_id, score``.

    7-column rows score 1.0 and 2-column rows are accepted and ignored, as officially.

    Raises:
        UserError: Naming the file and 1-based line of the first malformed row.
    """
    return read_csv(path, allowed=(2, 7, 8))


def read_exclusions(path: str | os.PathLike) -> set[Key]:
    """Read an excluded-timestamps CSV (``video_id, second`` rows) into keyframe keys.

    Raises:
        UserError: Naming the file and 1-based line of the first malformed row.
    """
    return set(read_csv(path, allowed=(2,)).keys)


def write_detections_csv(path: str | os.PathLike, table: AvaTable) -> None:
    """Write detections in the AVA CSV layout, floats in shortest round-trip form.

    Reading the file back with :func:`read_detections` gives the same numbers, so scoring the
    file and scoring the table in memory agree exactly.
    """
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        columns = (table.row_key.tolist(), table.boxes.tolist(), table.labels.tolist(), table.scores.tolist())
        for key, box, label, score in zip(*columns, strict=True):
            video_id, second = table.keys[key]
            file.write(f"{video_id},{second},{box[0]!r},{box[1]!r},{box[2]!r},{box[3]!r},{label},{score!r}\n")
