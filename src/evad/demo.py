"""The main job on built-in data: synthetic benchmark -> training -> frame-mAP -> detection -> report.

`evad demo --out demo-output` (what `make demo` runs) needs nothing but the package:

1. `evad.data.synthetic.generate` writes the synthetic benchmark (AVA and UCF layouts) to
   `OUT/data`, or reuses one written there earlier with the same settings.
2. `evad.engine.train.train` trains the tiny preset with the packaged `synthetic_tiny.yaml` recipe
   on the CPU (checkpoints, `log.jsonl` and TensorBoard scalars in `OUT/train`).
3. The last evaluation scores frame-mAP@0.5 on the held-out videos with the AVA protocol.
4. One held-out video is encoded as MP4 and run through `evad.inference.detect_video`
   (`OUT/detect`: annotated MP4, JSON, CSV).
5. `OUT/report.json` and a self-contained `OUT/report.html` (annotated clip, per-class AP chart,
   loss curve, kept-token picture).

The output folder is the demo's own: results already there (a finished demo's, an interrupted one's,
or a `train/` run of the user's) are replaced only with `overwrite`, and a non-empty folder holding
other files is never touched.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evad.errors import UserError
from evad.fileio import folder_entries, make_dirs, write_atomically, write_json_atomically

if TYPE_CHECKING:
    from evad.data.synthetic import SynthConfig

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
# What a demo writes; only these are removed when a finished demo is replaced.
DEMO_OUTPUTS = (
    "data",
    "train",
    "detect",
    "heldout.mp4",
    "per_class_ap.png",
    "tokens.png",
    REPORT_JSON,
    REPORT_HTML,
)


@dataclass
class DemoSettings:
    """What `evad demo` can change (the training recipe itself is `configs/synthetic_tiny.yaml`)."""

    out: Path
    videos: int = 128
    seconds: int = 5
    # The demo's world (`evad.data.synthetic.SynthConfig`): calmer than `evad data synth`'s default,
    # with 4 bigger actors and less clutter; with many short videos it scored about 3x the default
    # world's frame-mAP at the same training budget (docs/demo_score.md, "What we tried").
    actor_height: tuple[float, float] = (0.5, 0.85)
    max_actors: int = 4
    background_shapes: tuple[int, int] = (3, 8)
    seed: int = 0
    overrides: tuple[str, ...] = ()
    overwrite: bool = False
    progress: bool = True


def packaged_config(name: str) -> Path:
    """Path of a config shipped in `evad/configs` (also the repository's `configs/`)."""
    path = Path(str(resources.files("evad") / "configs" / name))
    if not path.is_file():
        raise UserError(f"{path}: packaged config not found (is the package installed completely?)")
    return path


def _is_leftover(name: str) -> bool:
    """Whether `name` is what an interrupted demo leaves half written: the synthetic writer's
    `.data.partial-*` folder, the held-out clip's `.heldout.mp4.partial`, or the temporary file of
    an atomic write (`.report.json.*.tmp`, ...)."""
    half_written = (f".{output}.partial" for output in DEMO_OUTPUTS)
    temporaries = (f".{output}.*.tmp" for output in DEMO_OUTPUTS)
    return (
        name.startswith(".data.partial-")
        or name in half_written
        or any(fnmatch.fnmatchcase(name, pattern) for pattern in temporaries)
    )


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder that is not a demo's, and a finished demo without `overwrite`."""
    entries = folder_entries(out)
    foreign = sorted(name for name in entries - set(DEMO_OUTPUTS) if not _is_leftover(name))
    if foreign:
        raise UserError(
            f"{out}: holds files the demo did not write ({', '.join(foreign[:3])}); choose another --out"
        )
    if REPORT_JSON in entries and not overwrite:
        raise UserError(f"{out}: holds a finished demo; pass --overwrite to run it again")
    # The data is reused or regenerated (`evad data synth`'s own rules); anything else of these
    # names (an unfinished demo's, or the user's own `train/` run) is deleted: only with overwrite.
    replaced = sorted(entries & set(DEMO_OUTPUTS) - {"data"})
    if replaced and not overwrite:
        raise UserError(
            f"{out}: holds {', '.join(replaced[:3])}, which the demo would replace; "
            "pass --overwrite to replace them or choose another --out"
        )


def _world(settings: DemoSettings) -> SynthConfig:
    """The synthetic world of the demo's data (`evad.data.synthetic.SynthConfig`)."""
    from evad.data.synthetic import SynthConfig

    return SynthConfig(
        seconds=settings.seconds,
        actor_height=tuple(settings.actor_height),
        max_actors=settings.max_actors,
        background_shapes=tuple(settings.background_shapes),
    )


def _prepare_data(settings: DemoSettings) -> Path:
    from evad.data.synthetic import generate

    root = settings.out / "data"
    world = _world(settings)
    wanted = {"num_videos": settings.videos, "seed": settings.seed, "config": asdict(world)}
    meta = root / "synth.json"
    if meta.is_file():
        try:
            found = json.loads(meta.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError):
            found = None  # damaged: generated anew below
        # JSON has lists where the dataclass has tuples: compare through one JSON round trip.
        expected = json.loads(json.dumps(wanted))
        if isinstance(found, dict) and {key: found.get(key) for key in wanted} == expected:
            print(f"[1/5] reusing the synthetic benchmark in {root}")
            return root
    print(f"[1/5] generating the synthetic benchmark: {settings.videos} videos of {settings.seconds} s")
    summary = generate(
        root,
        num_videos=settings.videos,
        seed=settings.seed,
        config=world,
        overwrite=True,
        progress=settings.progress,
    )
    print(f"      {summary.seconds_taken:.0f} s, written to {root}")
    return root


def _encode_video(frame_dir: Path, path: Path, fps: int) -> None:
    """The JPEG frames of one video as an H.264 MP4: what a user would feed `evad detect`."""
    import av
    import cv2

    files = sorted(frame_dir.glob("*.jpg"))
    height, width = cv2.imread(str(files[0])).shape[:2]
    tmp = path.with_name(f".{path.name}.partial")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width - width % 2, height - height % 2  # 4:2:0 needs even sizes
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for file in files:
            rgb = cv2.imread(str(file))[: stream.height, : stream.width, ::-1]  # BGR -> RGB, even size
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def _loss_curve(log: Path) -> list[tuple[float, float]]:
    from evad.engine.runlog import read_log

    return [
        (float(record["step"]), float(record["loss"]))
        for record in read_log(log)
        if record.get("type", "train") == "train" and "loss" in record
    ]


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _class_groups(per_class: dict[str, float]) -> dict[str, float]:
    from evad.data.synthetic import SYNTH_CLASSES

    groups: dict[str, list[float]] = {}
    for c in SYNTH_CLASSES:
        if str(c.id) in per_class:
            groups.setdefault(c.kind, []).append(per_class[str(c.id)])
    return {kind: float(np.mean(aps)) for kind, aps in groups.items()}


def _class_share_map(config: Any, detections_csv: Path) -> dict[str, Any]:
    """Frame-mAP (`mAP`) and per-class AP of the held-out detections with class shares as action
    scores (a classifier that learned nothing; `evad.evaluation.baselines`)."""
    from evad.evaluation.ava import read_detections, read_exclusions, read_groundtruth, read_labelmap
    from evad.evaluation.baselines import class_share_map, class_shares

    root = Path(config.data.root)
    names = read_labelmap(root / config.data.labelmap)
    share = class_shares(read_groundtruth(root / config.data.train_annotations), names)
    exclusions = root / config.data.val_exclusions
    excluded = read_exclusions(exclusions) if exclusions.is_file() else set()
    truth = read_groundtruth(root / config.data.val_annotations)
    mean_ap, per_class = class_share_map(truth, read_detections(detections_csv), names, share, excluded)
    return {"mAP": mean_ap, "per_class": {str(c): ap for c, ap in per_class.items()}}


def run_demo(settings: DemoSettings) -> dict[str, Any]:
    """Run the whole demo; returns what `report.json` holds."""
    import torch

    from evad.config import load_config
    from evad.data.build import build_dataset
    from evad.data.collate import collate
    from evad.data.synthetic.writer import check_settings
    from evad.engine.distributed import resolve_device
    from evad.engine.train import train
    from evad.inference.detect import detect_video
    from evad.viz.ap_chart import plot_per_class_ap
    from evad.viz.report import write_report_html
    from evad.viz.tokens import render_kept_tokens, trace_kept_tokens

    started = time.perf_counter()
    out = settings.out
    check_output(out, settings.overwrite)
    # The overrides are checked before any work: a typo costs nothing.
    for override in settings.overrides:
        key = override.split("=", 1)[0].strip()
        if key in ("data.root", "output_dir"):
            raise UserError(
                f"{key}: the demo writes its data and its run inside --out ({out}); set --out instead"
            )
    overrides = [f"data.root={out / 'data'}", f"output_dir={out / 'train'}", *settings.overrides]
    config = load_config(packaged_config("synthetic_tiny.yaml"), overrides)
    device = resolve_device(config.train.device)  # no CUDA for train.device=cuda: say so now
    check_settings(_world(settings), settings.videos, settings.seed)  # --videos 1: before deleting
    for name in DEMO_OUTPUTS:  # a finished demo being replaced: its results go, its data stays
        if name != "data" and (out / name).exists():
            shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    for path in out.glob(".*"):  # what an interrupted demo left half written
        if _is_leftover(path.name):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    make_dirs(out)
    root = _prepare_data(settings)

    where = "the CPU" if device.type == "cpu" else str(device)
    print(f"[2/5] training the {config.model.preset} preset on {where} ({config.train.epochs} epochs)")
    train_start = time.perf_counter()
    result = train(config, overwrite=True, progress=settings.progress)
    train_minutes = (time.perf_counter() - train_start) / 60
    model = result["model"].eval()
    if result["metrics"] is None or result["metrics"].get("report") is None:
        raise RuntimeError("training ended without an evaluation; check train.eval_every")
    report_metrics = result["metrics"]["report"]  # also in OUT/train/eval/metrics.json
    prior = _class_share_map(config, Path(config.output_dir) / "eval" / "detections.csv")
    print(
        f"[3/5] frame-mAP@0.5 on the held-out videos: {report_metrics['mAP']:.3f} (person AP@0.5 "
        f"{report_metrics['person_AP']:.3f}; class shares as action scores on the same boxes "
        f"{prior['mAP']:.3f})"
    )
    # Each class's AP beside what class shares score on the same boxes: the names of the classes
    # whose action scores beat them by more than 5 points are black (green: more than doubled).
    labels = ("EVAD", "class shares as scores")
    title = "frame-AP @ IoU 0.5 per class, held-out videos"
    write_atomically(
        out / "per_class_ap.png", lambda tmp: plot_per_class_ap(tmp, report_metrics, prior, labels, title)
    )

    val = build_dataset(config.data, "val")
    video = val.keyframes[0][0]
    print(f"[4/5] detecting actions in held-out video {video}")
    _encode_video(root / "frames" / video, out / "heldout.mp4", int(config.data.fps))
    detected = detect_video(
        model,
        out / "heldout.mp4",
        out / "detect",
        val.class_names,
        val.class_ids,
        short_side=config.data.test_short_side,
        person_threshold=report_metrics["settings"]["person_threshold"],  # what evaluation used
        progress=settings.progress,
    )
    with torch.no_grad():
        batch = collate([val[len(val) // 2]], config.data.size_divisor)
        traced = trace_kept_tokens(model, batch.clips[0])
    render_kept_tokens(
        batch.clips[0],
        traced,
        out / "tokens.png",
        config.data.mean,
        config.data.std,
        image_size=tuple(batch.image_sizes[0].tolist()),
    )

    per_class = report_metrics["per_class"]
    groups = _class_groups(per_class)
    report = {
        "frame_mAP": report_metrics["mAP"],
        "per_class": per_class,
        "class_names": report_metrics.get("class_names", {}),
        "group_mAP": groups,
        "motion_mAP": groups.get("motion"),
        # Reference points (evad.evaluation.baselines): how well the kept boxes alone find people,
        # and the frame-mAP of the same boxes scored by a classifier that learned nothing.
        "person_AP": report_metrics["person_AP"],
        "class_share_mAP": prior["mAP"],
        "class_share_per_class": prior["per_class"],
        "train_minutes": round(train_minutes, 2),
        "total_minutes": round((time.perf_counter() - started) / 60, 2),
        "steps": result["global_step"],
        "epochs": result["epochs"],
        "keep_rate": model.backbone.keep_rate,
        "tokens_per_stage": traced["num_tokens"],
        "detected_keyframes": len(detected.keyframes),
        "detections": detected.num_detections,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "config": config.to_dict(),
    }
    print("[5/5] writing the report")
    write_report_html(
        out / REPORT_HTML,
        title="evad demo: EVAD (tiny) on the synthetic benchmark",
        # AVA's group means (person movement, ...) mean nothing for the synthetic classes.
        metrics={
            k: report_metrics[k] for k in ("per_class", "class_names", "num_groundtruth", "num_detections")
        },
        per_class_png=out / "per_class_ap.png",
        loss_curve=_loss_curve(Path(config.output_dir) / "log.jsonl"),
        tokens_png=out / "tokens.png",
        video_mp4=detected.video_path,
        extra_rows={
            f"frame-mAP@0.5, {len(val)} held-out keyframes": _percent(report["frame_mAP"]),
            **{f"frame-mAP, {kind} classes": _percent(ap) for kind, ap in report["group_mAP"].items()},
            "person AP@0.5 of the kept boxes (boxes alone)": _percent(report["person_AP"]),
            "frame-mAP with class shares as action scores (learned nothing)": _percent(
                report["class_share_mAP"]
            ),
            "training minutes": report["train_minutes"],
            "optimizer steps": report["steps"],
            "keep rate": report["keep_rate"],
            "tokens per stage": " -> ".join(map(str, report["tokens_per_stage"])),
        },
        loss_label="loss (weighted mean of terms)",
        captions={
            "tokens": "White: zero padding of the input to a multiple of 32 pixels; its tokens count "
            "in the totals.",
            "video": f"Held-out video {video}: boxes with person score >= "
            f"{report_metrics['settings']['person_threshold']}, labelled with their track number and "
            "the actions scored >= 0.5.",
        },
    )
    write_json_atomically(out / REPORT_JSON, report)
    return report
