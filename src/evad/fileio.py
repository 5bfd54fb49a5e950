"""Writing result files so that nothing half-written ever looks complete."""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from evad.errors import UserError


def make_dirs(path: str | Path) -> Path:
    """Create folder `path` with its missing parents; a one-line UserError naming it if it cannot
    be (a file in the way, no permission)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"cannot create folder {path}: a file of that name is in the way") from None
    except OSError as err:
        raise UserError(f"cannot create folder {path}: {err.strerror or err}") from None
    return path


def folder_entries(path: str | Path) -> set[str]:
    """Names in the output folder `path` (none if it does not exist yet); a one-line UserError if
    a file of that name is in the way. Each command then applies its own rule for what may be there."""
    path = Path(path)
    if not path.exists():
        return set()
    if not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder")
    return {entry.name for entry in path.iterdir()}


def check_output_file(
    path: str | Path,
    overwrite: bool,
    inputs: Iterable[str | Path | None] = (),
    create_folders: bool = False,
) -> None:
    """Refuse, before any work, an output file that cannot or may not be written.

    Args:
        path: The file the command will write.
        overwrite: Whether an existing file may be replaced.
        inputs: The command's input files; `path` may never be one of them, even with `overwrite`
            (one typo would destroy it).
        create_folders: Whether the command creates missing folders on the way to `path`; else
            its folder must exist.

    Raises:
        UserError: For a folder named `path`, an input, an existing file without `overwrite`, a
            missing folder, or a folder that cannot be written in.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; name a file")
    if any(
        other is not None and Path(other).exists() and path.resolve() == Path(other).resolve()
        for other in inputs
    ):
        raise UserError(f"{path}: is also one of this command's inputs; write the output elsewhere")
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it")
    folder = path.parent
    while create_folders and not folder.exists() and folder.parent != folder:
        folder = folder.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"{path}: {folder} {what}")
    try:  # a real try: permission bits do not tell of read-only file systems (or of root)
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as err:
        raise UserError(f"{path}: cannot write in {folder}: {err.strerror or err}") from None


def write_atomically(path: str | Path, write: Callable[[str], None]) -> None:
    """Let `write` fill a temporary file next to `path`, then rename it over `path`.

    The rename is atomic on one file system, so readers see either the old file or the whole new one.
    The file's data reach the disk before the rename, so a machine that crashes right after it
    does not leave an empty `path` behind. An OSError becomes a one-line UserError naming `path`;
    the temporary file never survives. A symbolic link stays: the file it names is replaced.
    """
    path = Path(path)
    target = link_target(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:  # no such folder, no permission, a read-only file system
        raise UserError(f"{path}: cannot write: {err.strerror or err}") from None
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results should be readable like any other
        with open(tmp, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write: {err.strerror or err}") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def link_target(path: Path) -> Path:
    """The file a symbolic link names (renaming a temporary over the link would replace the link
    with a plain file); any other path as it is."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def remove_stale_temporaries(path: str | Path) -> int:
    """Delete the temporary files that `write_atomically(path, ...)` calls left behind when their
    process was killed mid-write (nothing else names files so); return how many there were.

    Call it only where no other process may be writing `path` at the same time.
    """
    path = link_target(Path(path))
    stale = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def write_json_atomically(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically."""

    def dump(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
            file.write("\n")

    write_atomically(path, dump)
