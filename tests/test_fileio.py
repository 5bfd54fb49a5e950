"""Output folders and atomic writes: what every command that writes results relies on."""

import signal
import subprocess
import sys

import pytest

from evad.data.synthetic import generate
from evad.demo import check_output
from evad.errors import UserError
from evad.fileio import (
    check_output_file,
    folder_entries,
    make_dirs,
    remove_stale_temporaries,
    write_json_atomically,
)
from evad.inference.results import check_output_dir
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


def test_a_write_killed_midway_leaves_a_temporary_that_can_be_removed(tmp_path):
    target = tmp_path / "last.pt"
    script = (
        "import os, signal, sys\n"
        "from evad.fileio import write_atomically\n"
        "def half(tmp):\n"
        "    open(tmp, 'w').write('half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"write_atomically({str(target)!r}, half)\n"
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == -signal.SIGKILL
    (tmp_path / ".last.pt.notes").write_text("mine")  # not a temporary of write_atomically
    (tmp_path / "last.pt.tmp").write_text("mine")
    assert not target.exists() and len(list(tmp_path.glob(".last.pt.*.tmp"))) == 1
    assert remove_stale_temporaries(target) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.pt.notes", "last.pt.tmp"]


def test_output_files_are_checked_before_any_work(tmp_path):
    (tmp_path / "in.csv").write_text("data")
    (tmp_path / "old.json").write_text("{}")
    (tmp_path / "afile").write_text("x")
    cases = [
        (tmp_path, {}, "is a folder; name a file"),
        (
            tmp_path / "in.csv",
            {"overwrite": True, "inputs": [tmp_path / "in.csv"]},
            "also one of this command's inputs",
        ),
        (tmp_path / "old.json", {}, "exists; pass --overwrite"),
        (tmp_path / "no" / "m.json", {}, "no does not exist"),
        (tmp_path / "afile" / "m.json", {"create_folders": True}, "afile is not a folder"),
    ]
    for path, options, message in cases:
        with pytest.raises(UserError, match=message):
            check_output_file(path, options.pop("overwrite", False), **options)
    check_output_file(tmp_path / "old.json", True, [tmp_path / "in.csv", None])
    check_output_file(tmp_path / "new" / "deeper" / "m.png", False, create_folders=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "in.csv", "old.json"]  # nothing made


def test_an_atomic_write_through_a_symbolic_link_replaces_the_file_it_names(tmp_path):
    """`--json results/metrics.json`, a link to a file kept elsewhere: the link stays and the file it
    names gets the result (renaming the temporary over the link replaced it with a plain file)."""
    (tmp_path / "store").mkdir()
    kept = tmp_path / "store" / "metrics.json"
    kept.write_text("{}")
    link = tmp_path / "metrics.json"
    link.symlink_to(kept)
    write_json_atomically(link, {"mAP": 0.5})
    assert link.is_symlink() and link.resolve() == kept.resolve()
    assert '"mAP": 0.5' in kept.read_text()
    dangling = tmp_path / "new.json"
    dangling.symlink_to(tmp_path / "store" / "new.json")  # a link made before its file
    write_json_atomically(dangling, [1])
    assert dangling.is_symlink() and (tmp_path / "store" / "new.json").read_text().startswith("[")
    assert remove_stale_temporaries(link) == 0 and sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics.json",
        "new.json",
        "store",
    ]


def test_an_atomic_write_where_no_folder_is_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"m\.json: cannot write: No such file or directory"):
        write_json_atomically(tmp_path / "missing" / "m.json", {})
