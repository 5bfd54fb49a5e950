"""A run's output directory: what a run writes there, and the checks before it starts or resumes.

`evad.engine.train` calls these before any training, so that a mistyped command fails at once and
no run's results are lost or mixed with another's:

- `check_creatable`: `output_dir` can be made a folder and written in.
- `resolve_resume`: a new run, `--resume auto` or a given checkpoint, refusing to replace an earlier
  run's files without `--overwrite` (`clear_outputs` then removes only the files a run writes).
- `check_same_run`: a checkpoint from elsewhere is not resumed into a folder that holds another run.
- `check_resumed_settings`: a resumed run refuses optimizer settings that differ from the
  checkpoint's (the resumed optimizer would keep the old ones) and names the other settings that
  changed.
- `prepare_output_dir`: once the checks pass, the folder is made (cleared with `--overwrite`) and
  the run's config written there.

The files and folders a run writes are listed in `evad.engine.train`'s docstring; `RUN_FILES` and
`RUN_FOLDERS` name those whose presence means an earlier run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from evad.config import Config
from evad.engine import checkpoint as ckpt
from evad.engine import distributed
from evad.engine.evaluate import DETECTIONS_CSV, METRICS_JSON, SCORED_LABELMAP
from evad.engine.runlog import LOG_FILE, TENSORBOARD_DIR, log_info
from evad.errors import UserError
from evad.fileio import make_dirs, remove_stale_temporaries

logger = logging.getLogger(__name__)

EVAL_DIR = "eval"

# What a run writes in its output directory; any of them means an earlier run is there.
RUN_FILES = (ckpt.LAST, ckpt.BEST, ckpt.CONFIG, LOG_FILE)
RUN_FOLDERS = (
    (EVAL_DIR, (DETECTIONS_CSV, METRICS_JSON, SCORED_LABELMAP)),
    (TENSORBOARD_DIR, ("events.out.tfevents.*",)),
)
# Settings a resumed optimizer takes from its checkpoint, whatever the config says.
OPTIMIZER_SETTINGS = ("base_lr", "head_lr_mult", "weight_decay", "betas")
# Settings that reshape the learning-rate schedule under a resumed run. (Another batch size,
# accum_steps or number of processes only changes the steps an epoch has: the run goes on at the
# same point of the schedule.)
SCHEDULE_SETTINGS = (
    "epochs",
    "warmup_fraction",
    "warmup_start_factor",
    "lr_steps",
    "lr_gamma",
)


def _earlier_run(out_dir: Path) -> list[str]:
    """The files of an earlier run in `out_dir` (TensorBoard's event files named as one)."""
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    for folder, patterns in RUN_FOLDERS:
        for pattern in patterns:
            paths = sorted((out_dir / folder).glob(pattern))
            if "*" in pattern:
                found += [f"{folder}/ event files"] if paths else []
            else:
                found += [f"{folder}/{path.name}" for path in paths]
    return found


def _listing(names: list[str]) -> str:
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def resolve_resume(
    out_dir: Path, resume: str | None, overwrite: bool, config_text: str
) -> tuple[Path | None, bool]:
    """The checkpoint to resume from (None: a new run) and whether an earlier run's files are to be
    cleared first, refusing whatever would mix two runs in one folder or replace an earlier run's
    files without --overwrite.

    `--resume auto` in a folder whose run stopped before its first checkpoint (only config.yaml and
    log.jsonl, the config the same as `config_text`) starts that run again: a job that is requeued
    with the same command after a preemption then goes on.
    """
    if resume is not None and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pass one")
    earlier = _earlier_run(out_dir)
    config_file = out_dir / ckpt.CONFIG
    # Compared as bytes: a config.yaml the user edited in another encoding is just another config.
    same_config = config_file.is_file() and config_file.read_bytes() == config_text.encode("utf-8")
    if resume == "auto":
        if (out_dir / ckpt.LAST).exists():
            return out_dir / ckpt.LAST, False
        if earlier and (ckpt.BEST in earlier or not same_config):
            raise UserError(
                f"{out_dir} holds {_listing(earlier)} of an earlier run but no {ckpt.LAST} to resume "
                "from; pass --overwrite to start a new run there, or choose another output_dir"
            )
        if earlier:
            log_info(f"{out_dir}: the run stopped before its first checkpoint; starting it again")
        else:
            log_info(f"no {out_dir / ckpt.LAST} to resume from; starting a new run")
        return None, bool(earlier)
    if resume is not None:
        return Path(resume), False
    if earlier and not overwrite:
        if ckpt.LAST in earlier:
            advice = "pass --resume auto to continue that run or --overwrite to start a new one there"
        elif same_config and ckpt.BEST not in earlier:
            advice = (
                f"that run, with this config, stopped before its first {ckpt.LAST}: pass --resume auto "
                "to start it again or --overwrite to start a new run there"
            )
        else:
            advice = f"there is no {ckpt.LAST} to resume from: pass --overwrite to start a new run there"
        raise UserError(f"{out_dir} already holds {_listing(earlier)}; {advice}")
    return None, overwrite


def check_same_run(out_dir: Path, source: Path) -> None:
    """Refuse to resume a checkpoint from elsewhere into a folder that holds another run."""
    earlier = _earlier_run(out_dir)
    if earlier and source.resolve().parent != out_dir.resolve():
        raise UserError(
            f"{out_dir} holds {_listing(earlier)} of another run; resuming {source} there would mix "
            f"the two runs: set output_dir to {source.parent} or to a new folder"
        )


def check_creatable(out_dir: Path) -> None:
    """Fail before any work if `out_dir` cannot be a folder (the nearest existing ancestor is a
    file, or cannot be written in)."""
    existing = out_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"output_dir {out_dir}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise UserError(f"output_dir {out_dir}: cannot write in {existing}")


def check_resumed_settings(state: dict[str, Any], config: Config, source: Path) -> None:
    """Refuse optimizer settings that differ from the checkpoint's (a resumed optimizer would keep
    the old ones while config.yaml said otherwise); name the other settings that changed."""
    stored = _flatten(state.get("config", {}))
    current = _flatten(config.to_dict())
    for name in OPTIMIZER_SETTINGS:
        key = f"train.{name}"
        if key in stored and stored[key] != current[key]:
            raise UserError(
                f"{source}: {key}={current[key]} differs from the run's {stored[key]}, and a resumed "
                f"optimizer keeps the run's value; resume without changing it, or start a new run "
                f"from these weights with model.pretrained={source}"
            )
    done, epochs = int(state.get("epoch", 0)), config.train.epochs
    if done > epochs:
        raise UserError(
            f"{source}: the run has trained {done} epochs, more than train.epochs={epochs}; "
            f"pass train.epochs={done} or more to resume it"
        )
    if done == epochs:
        log_info(f"{source}: the run has trained all its {epochs} epochs; raise train.epochs to train on")
    changed = [
        f"{key} {stored[key]} -> {value}"
        for key, value in current.items()
        if key in stored and stored[key] != value and key != "output_dir"
    ]
    if changed:
        log_info(f"resuming with changed settings: {', '.join(changed)}")
    schedule = [
        f"train.{name}"
        for name in SCHEDULE_SETTINGS
        if f"train.{name}" in stored and stored[f"train.{name}"] != current[f"train.{name}"]
    ]
    if schedule and distributed.is_main_process():
        logger.warning(
            "%s: %s changed, so the learning-rate schedule is laid out anew: the run goes on where "
            "it stopped, with warm-up and LR cuts at their fractions of the new length",
            source,
            " and ".join(schedule),
        )


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"epochs": 2}} -> {"train.epochs": 2}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and not prefix:
            flat.update(_flatten(value, f"{key}."))
        else:
            flat[prefix + key] = list(value) if isinstance(value, tuple) else value
    return flat


def clear_outputs(out_dir: Path) -> None:
    """Remove a previous run's results before starting over: only the files a run writes, and
    their folders if nothing else is left in them."""
    for name in (ckpt.LAST, ckpt.BEST, LOG_FILE):
        (out_dir / name).unlink(missing_ok=True)
    for name, patterns in RUN_FOLDERS:
        folder = out_dir / name
        if not folder.is_dir():
            continue
        for pattern in patterns:
            for path in folder.glob(pattern):
                path.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


def prepare_output_dir(out_dir: Path, config: Config, clear: bool) -> None:
    """Make `out_dir`, remove the partly written checkpoints of a killed save, and with `clear` an
    earlier run's outputs (`clear_outputs`); then write the run's config there."""
    make_dirs(out_dir)
    stale = sum(remove_stale_temporaries(out_dir / name) for name in (ckpt.LAST, ckpt.BEST))
    if stale:
        log_info(f"{out_dir}: removed {stale} partly written checkpoint file(s) of a killed save")
    if clear:
        clear_outputs(out_dir)
    config.save(out_dir / ckpt.CONFIG)
