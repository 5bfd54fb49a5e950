"""Dotted command-line overrides such as ``train.epochs=3 model.keep_rate=0.6 data.classes=[1,2]``.

Each value is read as YAML, except that a string setting (a path, a template, ``output_dir``)
takes its text as written: ``output_dir=2024-01-05`` stays a folder name rather than a date.
`apply_overrides` sets them on the annotated tree that `evad.config.files.read_yaml` makes, with
`COMMAND_LINE` as their source; their values are checked with the file's when the `Config` is
built (`evad.config.build`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import yaml

from evad.config.checks import SECTIONS, TOP_LEVEL, field_type, unknown
from evad.config.files import DuplicateKey, Sourced, annotate, load_yaml, merge
from evad.errors import UserError

COMMAND_LINE = "command line"


def _is_text(parts: Sequence[str]) -> bool:
    """Whether the dotted key names a string setting (a path, a template, a name)."""
    if list(parts) == ["output_dir"]:
        return True
    if len(parts) != 2 or parts[0] not in ("model", *SECTIONS):
        return False
    try:
        tp = field_type(".".join(parts))
    except KeyError:  # an unknown key: reported with its close matches later
        return False
    return tp is str or tp == str | None


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"{COMMAND_LINE}: override {text!r} must look like section.key=value")
    parts = key.split(".")
    # A string setting takes the text as written (output_dir=2024-01-05 is a folder, not a date;
    # frame_template={video}/{frame:05d}.jpg is not a YAML mapping); quotes are still removed and
    # null still unsets an optional one.
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
    if _is_text(parts) and not quoted and raw.strip() not in ("null", "~"):
        return parts, raw
    try:
        value = load_yaml(raw)
    except DuplicateKey as err:
        raise UserError(f"{COMMAND_LINE}: the value of {key!r} has the key {err.key!r} twice") from None
    except yaml.YAMLError:
        raise UserError(f"{COMMAND_LINE}: cannot read the value of {key!r} ({raw!r}) as YAML") from None
    return parts, value


def _wrap(parts: Sequence[str], value: Any, source: str) -> Any:
    """An override's value in the annotated form of the tree level it lands on."""
    if isinstance(value, dict) and len(parts) == 1 and parts[0] in ("model", *SECTIONS):
        return annotate({parts[0]: value}, source)[parts[0]]
    if isinstance(value, dict) and len(parts) == 2:
        return {k: Sourced(v, source) for k, v in value.items()}
    return Sourced(value, source)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set dotted `key=value` overrides on a raw (annotated) config tree; values read as YAML."""
    if isinstance(overrides, str):  # iterating it would give one override per character
        raise UserError(f"overrides must be a list of section.key=value strings, e.g. [{overrides!r}]")
    raw = copy.deepcopy(raw)
    for text in overrides:
        if not isinstance(text, str):
            raise UserError(f"{COMMAND_LINE}: override {text!r} must be a section.key=value string")
        parts, value = _parse_override(text)
        if parts[0] not in TOP_LEVEL:
            raise unknown(parts[0], TOP_LEVEL, COMMAND_LINE)
        if len(parts) > 1 and parts[0] == "output_dir":
            raise UserError(f"{COMMAND_LINE}: output_dir is a string, not a section")
        if len(parts) == 1 and parts[0] != "output_dir" and value is None:
            # A mapping merges into the section; null would silently drop every setting of the
            # file's section (model=null trains the default preset instead of the file's).
            raise UserError(
                f"{COMMAND_LINE}: {parts[0]}={text.partition('=')[2]} would drop every {parts[0]} "
                f"setting of the config; set single keys instead ({parts[0]}.KEY=VALUE)"
            )
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None or (isinstance(child, Sourced) and child.value is None):
                child = {}
            if not isinstance(child, dict):
                raise UserError(f"{COMMAND_LINE}: {'.'.join(parts[: depth + 1])} is not a section")
            node[part] = child
            node = child
        leaf = _wrap(parts, value, COMMAND_LINE)
        if isinstance(leaf, dict) and isinstance(node.get(parts[-1]), dict):
            leaf = merge(node[parts[-1]], leaf)
        node[parts[-1]] = leaf
    return raw
