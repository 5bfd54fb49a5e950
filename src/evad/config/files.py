"""Reading config files: strict YAML, `_base_` inheritance and where each value came from.

A file must be UTF-8 text holding a mapping of sections (an empty one is logged as a warning); a
key given twice in one mapping is refused with its line, where `yaml.safe_load` would keep the
last. The files its `_base_` names (relative to it, in order) are merged underneath, the file
winning, and an inheritance loop is an error. Every leaf of the result is wrapped in `Sourced`
with the file it came from, so that the checks made later name the file that set a bad value.
`resolve_config_path` also finds the configs shipped in `evad/configs/` by name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

from evad.errors import UserError

logger = logging.getLogger(__name__)


class DuplicateKey(yaml.YAMLError):
    """A key given twice in one YAML mapping (lines count from 1)."""

    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r} on line {line} (first on line {first_line})")
        self.key = key
        self.line = line
        self.first_line = first_line


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (safe_load keeps the last).

    Keys that a ``<<`` merge brings in may still be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The mapping of `node`, or `DuplicateKey` for the second occurrence of a key.

        Args:
            node: The mapping node.
            deep: Whether to construct nested values at once (as `yaml.SafeLoader`).
        """
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise DuplicateKey(key, line, seen[key])
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    pass
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """`text` read as YAML with the safe loader, refusing duplicate keys."""
    return yaml.load(text, Loader=_StrictLoader)  # safe: _StrictLoader is a yaml.SafeLoader


def _yaml_error(path: Path, text: str, err: yaml.YAMLError) -> UserError:
    """A one-line error naming the file and the line of a YAML problem."""
    if isinstance(err, DuplicateKey):
        return UserError(f"{path}:{err.line}: duplicate key {err.key!r} (first on line {err.first_line})")
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        what = ", ".join(part for part in (err.context, err.problem) if part)
        start = err.context_mark
        if start is not None and start.line != err.problem_mark.line:
            what += f" (from line {start.line + 1})"
        return UserError(f"{path}:{err.problem_mark.line + 1}: not valid YAML: {what}")
    if isinstance(err, yaml.reader.ReaderError) and isinstance(err.character, int):
        line = text.count("\n", 0, err.position) + 1
        return UserError(f"{path}:{line}: not valid YAML: character #x{err.character:04x}: {err.reason}")
    return UserError(f"{path}: not valid YAML: {' '.join(str(err).split())}")


def read_yaml(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The file's mapping with its `_base_` files merged underneath (paths relative to the file)."""
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise UserError(f"{path}: _base_ inheritance loops ({cycle})")
    try:
        raw = path.read_bytes()
    except OSError as err:
        base_of = f" (the _base_ of {chain[-1]})" if chain else ""
        raise UserError(f"{path}: cannot read config{base_of}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start}); save the config as UTF-8"
        ) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        raise _yaml_error(path, text, err) from None
    if data is None:  # nothing but blanks and comments: allowed, but later errors would hide why
        if os.environ.get("RANK", "0") == "0":  # once per torchrun job
            logger.warning(
                "%s: the config file is empty; every setting is the default or from the command line", path
            )
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping of sections, got {type(data).__name__}")
    bases = data.pop("_base_", None)
    if bases is None:
        return annotate(data, str(path))
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{path}: _base_ must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = merge(merged, read_yaml((path.parent / base).resolve(), (*chain, path)))
    return merge(merged, annotate(data, str(path)))


class Sourced:
    """A leaf value with the file (or "command line") it came from."""

    def __init__(self, value: Any, source: str) -> None:
        self.value = value
        self.source = source


def annotate(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Wrap every leaf (scalars, lists, and the values of mapping-typed fields) with its source."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in ("model", "data", "train", "eval"):
            section = {}
            for name, item in value.items():
                if isinstance(item, dict):  # a mapping-valued field (model.loss_weights)
                    section[name] = {k: Sourced(v, source) for k, v in item.items()}
                else:
                    section[name] = Sourced(item, source)
            out[key] = section
        else:
            out[key] = Sourced(value, source)
    return out


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` merged onto `base`, mapping by mapping (a new dict; `top` wins where both set a leaf)."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_config_path(path: str | Path) -> Path:
    """`path` itself if it exists, else the packaged config of that name (with or without .yaml)."""
    given = Path(path)
    if given.exists() or given.parent != Path("."):
        return given.resolve()
    packaged = Path(__file__).resolve().parents[1] / "configs"  # evad/configs, beside this package
    for candidate in (packaged / given.name, packaged / f"{given.name}.yaml"):
        if candidate.is_file():
            return candidate
    return given.resolve()
