"""Output folders and atomic writes: what every command that writes results relies on."""

import pytest

from evad.data.synthetic import generate
from evad.demo import check_output
from evad.errors import UserError
from evad.fileio import folder_entries, make_dirs, write_json_atomically
from evad.inference.detect import check_output_dir
from evad.weights.evad_format import check_destination


def test_folder_entries(tmp_path):
    assert folder_entries(tmp_path / "new") == set()
    (tmp_path / "a.txt").write_text("x")
    make_dirs(tmp_path / "sub" / "deeper")
    assert folder_entries(tmp_path) == {"a.txt", "sub"}
    with pytest.raises(UserError, match=r"a.txt: exists and is not a folder$"):
        folder_entries(tmp_path / "a.txt")


@pytest.mark.parametrize(
    "check",
    [
        lambda path: check_output(path, overwrite=True),
        lambda path: check_output_dir(path, overwrite=True),
        lambda path: check_destination(path, overwrite=True),
        lambda path: generate(path, num_videos=2, overwrite=True, progress=False),
    ],
    ids=["demo", "detect", "convert", "data synth"],
)
def test_every_output_folder_refuses_a_file_in_the_way_alike(tmp_path, check):
    user_file = tmp_path / "notes"
    user_file.write_text("mine")
    with pytest.raises(UserError, match=r"notes: exists and is not a folder$"):
        check(user_file)
    assert user_file.read_text() == "mine"


def test_atomic_json_write_replaces_whole_files_only(tmp_path):
    path = tmp_path / "result.json"
    write_json_atomically(path, {"mAP": 0.5})
    assert path.read_text() == '{\n  "mAP": 0.5\n}\n'
    with pytest.raises(TypeError):  # not serialisable: the old file stays whole
        write_json_atomically(path, {"mAP": object()})
    assert path.read_text() == '{\n  "mAP": 0.5\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left
