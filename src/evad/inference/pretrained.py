"""Where the detector of `evad detect` and `evad visualize` comes from.

Three sources, in this order of precedence: a checkpoint of `evad train` (architecture, classes and
input size are stored in it), a model preset with random weights (to try the pipeline), or the
small model trained on the synthetic benchmark that ships with the package
(`packaged_checkpoint`), used when neither is named.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from evad.errors import UserError
from evad.inference.preprocess import InputSettings

if TYPE_CHECKING:
    from evad.inference.results import DetectResult

PACKAGED_MODEL = "synthetic_tiny"


def packaged_checkpoint() -> Path:
    """The packaged model: an evad weights folder (``model.safetensors`` + ``config.json``).

    It is the tiny preset trained by `evad demo` (``configs/synthetic_tiny.yaml`` on the synthetic
    benchmark), stored as ``evad/inference/weights/synthetic_tiny/``. It may not be installed.
    """
    return Path(__file__).resolve().parent / "weights" / PACKAGED_MODEL


@dataclass
class LoadedModel:
    """A detector ready to run, with what it needs to be run right.

    Attributes:
        model: The detector, in eval mode (no drop-path: runs repeat exactly).
        class_ids: AVA id of each action output.
        class_names: Name of each action output.
        inputs: How clips are resized, sampled and normalised for it.
        source: What it was loaded from (a file, or ``preset <name>``).
        random_weights: Whether the weights are untrained (a preset).
        person_threshold: The person threshold it was evaluated with (the training run's
            ``eval.person_threshold``, else its model's, 0.7 unless changed).
    """

    model: nn.Module
    class_ids: list[int]
    class_names: list[str]
    inputs: InputSettings = field(default_factory=InputSettings)
    source: str = ""
    random_weights: bool = False
    person_threshold: float = 0.7

    def detect(self, video: str | Path, out_dir: str | Path, **options: Any) -> DetectResult:
        """`evad.inference.detect_video` with this model's classes, input settings and person
        threshold (what `evad detect` does); `options` are `detect_video`'s keyword arguments.

        Example:
            >>> loaded = load_detector("runs/ava/best.pt")  # doctest: +SKIP
            >>> result = loaded.detect("clip.mp4", "clip_detections", device="cuda")  # doctest: +SKIP
        """
        from evad.inference.detect import detect_video

        settings = {**asdict(self.inputs), "person_threshold": self.person_threshold, **options}
        return detect_video(self.model, video, out_dir, self.class_names, self.class_ids, **settings)


def class_list(labelmap: str | Path | None, num_classes: int | None) -> tuple[list[int], list[str]]:
    """Class ids and names from an AVA label map, or ids 1..K named ``class k`` (K = 80 by default)."""
    if labelmap is None:
        k = 80 if num_classes is None else num_classes
        return list(range(1, k + 1)), [f"class {i}" for i in range(1, k + 1)]
    from evad.evaluation.ava import read_labelmap

    names = read_labelmap(labelmap)
    if num_classes is not None and num_classes != len(names):
        raise UserError(f"--num-classes {num_classes} but {labelmap} names {len(names)} classes")
    return list(names), list(names.values())


def load_detector(
    checkpoint: str | Path | None = None,
    preset: str | None = None,
    *,
    num_classes: int | None = None,
    labelmap: str | Path | None = None,
    short_side: int | None = None,
) -> LoadedModel:
    """Load the detector from `checkpoint`, else build `preset`, else load the packaged model.

    Args:
        checkpoint: best.pt / last.pt of `evad train`, or an evad weights folder (`evad convert`).
        preset: Model preset name, with random weights.
        num_classes: Action classes of `preset` (80 if None; the label map's count if given).
        labelmap: AVA label map naming the classes (for a checkpoint: renames its stored classes, and
            must name exactly those ids).
        short_side: Input short side; the checkpoint's test size (or 256) if None.

    Returns:
        The detector in eval mode, with its classes and input settings.

    Raises:
        UserError: For an unreadable checkpoint, an unknown preset, no packaged model installed, or a
            label map that does not name a checkpoint's class ids.
    """
    if preset is None and num_classes is not None:
        raise UserError("--num-classes applies to --model only (a checkpoint stores its classes)")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
        raise UserError(f"num_classes must be a whole number >= 1, got {num_classes!r}")
    if short_side is not None and (
        isinstance(short_side, bool) or not isinstance(short_side, int) or short_side < 1
    ):
        raise UserError(f"short_side must be a whole number of pixels >= 1, got {short_side!r}")
    if checkpoint is None and preset is None:
        checkpoint = packaged_checkpoint()
        if not checkpoint.exists():
            raise UserError(
                f"no packaged model is installed ({checkpoint} is missing); pass --checkpoint or --model"
            )
    if checkpoint is not None:
        loaded = _load_checkpoint(Path(checkpoint), labelmap, short_side)
        loaded.model.eval()  # for inference: drop-path (0.1 in ViT-B) would make outputs random
        return loaded
    from evad.models import create_model

    class_ids, class_names = class_list(labelmap, num_classes)
    try:
        model = create_model(preset, num_classes=len(class_ids)).eval()
    except ValueError as err:
        raise UserError(str(err)) from None
    inputs = InputSettings(short_side=short_side or InputSettings.short_side)
    return LoadedModel(model, class_ids, class_names, inputs, f"preset {preset}", random_weights=True)


def _load_checkpoint(path: Path, labelmap: str | Path | None, short_side: int | None) -> LoadedModel:
    """A model trained by `evad train`: architecture, classes and input settings come from the file."""
    from evad.config import config_from_dict
    from evad.engine import checkpoint as ckpt
    from evad.engine.evaluate import make_model, make_postprocess

    state = ckpt.load_checkpoint(path)
    if "config" not in state or "dataset" not in state:
        raise UserError(f"{path}: not a checkpoint of `evad train` (no config or class list stored)")
    config = config_from_dict(state["config"], str(path))
    dataset = state["dataset"]
    try:
        class_ids = [int(c) for c in dataset["class_ids"]]
        class_names = [str(n) for n in dataset["class_names"]]
    except (KeyError, TypeError, ValueError):
        class_ids, class_names = [], None
    if not class_ids or class_names is None or len(class_names) != len(class_ids):
        raise UserError(
            f"{path}: the stored class list is damaged (expected as many integer class_ids as class_names)"
        )
    if labelmap is not None:
        from evad.evaluation.ava import read_labelmap

        names = read_labelmap(labelmap)
        unnamed = [c for c in class_ids if c not in names]
        unknown = [c for c in names if c not in class_ids]
        if unnamed or unknown:
            parts = [
                f"{what} {_ids(ids)}"
                for what, ids in (("no name for", unnamed), ("not in the model:", unknown))
                if ids
            ]
            raise UserError(
                f"{labelmap}: does not name exactly the checkpoint's classes ({'; '.join(parts)})"
            )
        class_names = [names[c] for c in class_ids]
    model_cfg, model = make_model(config, len(class_ids))
    ckpt.load_model_state(model, state["model"], str(path))
    data = config.data
    inputs = InputSettings(
        short_side=short_side if short_side is not None else data.test_short_side,
        max_long_side=data.max_long_side,
        sampling_rate=data.sampling_rate,
        clip_fps=data.fps,
        mean=tuple(data.mean),
        std=tuple(data.std),
    )
    threshold = make_postprocess(config, model_cfg).person_threshold
    return LoadedModel(model, class_ids, class_names, inputs, str(path), person_threshold=threshold)


def _ids(ids: list[int], shown: int = 5) -> str:
    """``ids 3, 7`` or ``ids 1, 2, 3, 4, 5, ... (80)`` for a message."""
    text = ", ".join(str(i) for i in ids[:shown])
    return f"id{'s' if len(ids) > 1 else ''} {text}" + (f", ... ({len(ids)})" if len(ids) > shown else "")
