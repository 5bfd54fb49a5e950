"""`evad demo` end to end at a toy size: every artefact, the report's fields, and the output-folder rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evad.cli import build_parser, main
from evad.demo import REPORT_HTML, REPORT_JSON, DemoSettings

TOY = ["--videos", "4", "--seconds", "5", "--no-progress"]
TOY += ["train.epochs=1", "train.eval_every=1", "train.batch_size=2", "train.log_every=1"]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo-output"
    assert main(["demo", "--out", str(out), *TOY]) == 0
    return out


def test_demo_writes_the_report_and_every_artefact(demo_out: Path) -> None:
    report = json.loads((demo_out / REPORT_JSON).read_text())
    assert 0.0 <= report["frame_mAP"] <= 1.0
    # AVA protocol: the classes with ground truth in the held-out video are scored.
    assert report["per_class"] and set(report["per_class"]) <= {str(c) for c in range(1, 14)}
    assert set(report["group_mAP"]) <= {"pose", "motion", "object", "interaction"}
    assert report["train_minutes"] > 0 and report["steps"] >= 1
    assert report["tokens_per_stage"][0] > report["tokens_per_stage"][-1]  # pruning happened
    # The reference points beside the frame-mAP (evad.evaluation.baselines).
    assert 0.0 <= report["person_AP"] <= 1.0 and 0.0 <= report["class_share_mAP"] <= 1.0
    assert set(report["class_share_per_class"]) == set(report["per_class"])  # drawn beside them
    for name in ("detect/annotated.mp4", "detect/detections.json", "detect/detections.csv", "tokens.png"):
        assert (demo_out / name).stat().st_size > 0, name
    assert (demo_out / "train" / "eval" / "metrics.json").is_file()
    html = (demo_out / REPORT_HTML).read_text()
    # Self-contained: the clip and the pictures are inline, nothing is linked from disk.
    assert "data:video/mp4;base64," in html and html.count("data:image/png;base64,") >= 2
    assert "<svg" in html  # the loss curve
    assert "person AP@0.5" in html and "class shares as action scores" in html
    assert 'src="' not in html.replace('src="data:', "")


def test_a_finished_demo_is_replaced_only_with_overwrite(demo_out: Path, capsys) -> None:
    before = (demo_out / REPORT_JSON).read_bytes()
    assert main(["demo", "--out", str(demo_out), *TOY]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (demo_out / REPORT_JSON).read_bytes() == before


def test_a_folder_with_other_files_is_never_used(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my own file")
    assert main(["demo", "--out", str(out), "--overwrite", *TOY]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "my own file"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_results_of_another_run_are_replaced_only_with_overwrite(tmp_path: Path, capsys) -> None:
    # A folder holding a `train/` run (the user's own, or an unfinished demo's) and no report.json
    # is no finished demo, but the demo would delete that run: only with --overwrite.
    out = tmp_path / "work"
    (out / "train").mkdir(parents=True)
    (out / "train" / "last.pt").write_text("hours of training")
    assert main(["demo", "--out", str(out), *TOY]) == 2
    assert "train, which the demo would replace; pass --overwrite" in capsys.readouterr().err
    # With --overwrite, a bad world setting is refused before anything is deleted.
    assert main(["demo", "--out", str(out), "--overwrite", *TOY, "--videos", "1"]) == 2
    assert "num_videos (--videos) must be at least 2" in capsys.readouterr().err
    assert main(["demo", "--out", str(out), "--overwrite", *TOY, "--seconds", "2"]) == 2
    assert "too short for one 64-frame clip window" in capsys.readouterr().err
    assert (out / "train" / "last.pt").read_text() == "hours of training"
    assert sorted(p.name for p in out.iterdir()) == ["train"]


def test_a_mistyped_override_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo-output"
    assert main(["demo", "--out", str(out), *TOY, "train.epochz=3"]) == 2
    assert "did you mean 'train.epochs'" in capsys.readouterr().err
    assert not out.exists()
    # The demo places its data and run inside --out: elsewhere they would not meet.
    assert main(["demo", "--out", str(out), *TOY, f"data.root={tmp_path}"]) == 2
    assert "data.root: the demo writes its data and its run inside --out" in capsys.readouterr().err
    if not torch.cuda.is_available():  # the device, before minutes of data generation
        assert main(["demo", "--out", str(out), *TOY, "train.device=cuda"]) == 2
        assert capsys.readouterr().err == "evad: error: train.device cuda: no CUDA device is available\n"
    assert not out.exists()


def test_demo_world_options_reach_the_data_and_match_the_settings(demo_out: Path) -> None:
    # `evad demo` with no world options uses DemoSettings' world (the calmer one of the README).
    args = build_parser().parse_args(["demo", "--out", "x"])
    defaults = DemoSettings(out=Path("x"))
    assert (args.videos, args.seconds) == (defaults.videos, defaults.seconds)
    assert tuple(args.actor_height) == defaults.actor_height and args.max_actors == defaults.max_actors
    assert tuple(args.background_shapes) == defaults.background_shapes
    world = json.loads((demo_out / "data" / "synth.json").read_text())["config"]
    assert world["actor_height"] == list(defaults.actor_height) and world["max_actors"] == defaults.max_actors
    assert world["background_shapes"] == list(defaults.background_shapes) and world["seconds"] == 5


def test_rerun_reuses_the_data_only_for_the_same_world(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo-output"
    assert main(["demo", "--out", str(out), *TOY]) == 0
    assert "generating" in capsys.readouterr().out
    # What a killed demo leaves half written is its own: neither foreign nor kept.
    (out / ".data.partial-123-456" / "frames").mkdir(parents=True)
    (out / ".report.json.k2j4x9.tmp").write_text("{")
    (out / ".heldout.mp4.partial").write_bytes(b"")
    assert main(["demo", "--out", str(out), "--overwrite", *TOY]) == 0
    assert "reusing the synthetic benchmark" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert main(["demo", "--out", str(out), "--overwrite", "--max-actors", "5", *TOY]) == 0
    assert "generating" in capsys.readouterr().out
    assert json.loads((out / "data" / "synth.json").read_text())["config"]["max_actors"] == 5
    (out / "data" / "synth.json").write_bytes(b'{"seed": \xff')  # damaged: generated anew
    assert main(["demo", "--out", str(out), "--overwrite", "--max-actors", "5", *TOY]) == 0
    assert "generating" in capsys.readouterr().out


def _benchmark_script(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_box_limits_scores_the_boxes_without_and_with_a_classifier(tmp_path: Path, capsys) -> None:
    # benchmarks/box_limits.py (the README's diagnosis of the demo's boxes) on a hand-made keyframe.
    ann = tmp_path / "annotations"
    ann.mkdir()
    labelmap = "".join(
        f'item {{\n  name: "{name}"\n  id: {i}\n}}\n' for i, name in ((1, "stand"), (2, "wave"))
    )
    (ann / "labelmap.pbtxt").write_text(labelmap)
    # Training boxes: 4, all standing, one waving -> class shares 1.0 and 0.25.
    train = [f"t,{s},0.1,0.1,0.4,0.9,1,0" for s in range(4)] + ["t,0,0.1,0.1,0.4,0.9,2,0"]
    (ann / "train.csv").write_text("\n".join(train) + "\n")
    # Held out: P (stand, wave) and Q (stand) on one keyframe.
    p, q = "0.1,0.1,0.4,0.9", "0.6,0.1,0.9,0.9"
    (ann / "val.csv").write_text(f"v,2,{p},1,0\nv,2,{p},2,0\nv,2,{q},1,1\n")
    # Detections: a box on P, a second box on P (IoU 0.8), a box on nobody; none on Q.
    boxes = {p: (0.9, 0.8), "0.1,0.1,0.4,0.74": (0.5, 0.1), "0.45,0.0,0.55,0.1": (0.7, 0.9)}
    rows = [
        f"v,2,{b},{c},{score}" for b, (stand, wave) in boxes.items() for c, score in ((1, stand), (2, wave))
    ]
    (tmp_path / "det.csv").write_text("\n".join(rows) + "\n")

    limits = _benchmark_script("box_limits")
    out = tmp_path / "limits.json"
    assert limits.main([str(tmp_path), str(tmp_path / "det.csv"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    cover = result["coverage"]
    assert (cover["boxes_per_keyframe"], cover["people_per_keyframe"], cover["people_found"]) == (3, 2, 0.5)
    assert cover["boxes_on_nobody"] == cover["extra_boxes_on_a_found_person"] == pytest.approx(1 / 3)
    assert cover["median_best_iou"] == 0.5  # P 1.0, Q 0.0
    assert cover["median_width_error"] == cover["median_height_error"] == 0.0  # only P is overlapped
    assert cover["median_person_width"] == pytest.approx(0.3)
    # stand: P first, then the stray box and the duplicate -> AP 0.5; wave: the stray box first -> 0.5.
    assert result["detections"]["per_class"] == {"stand": 0.5, "wave": 0.5}
    shares = result["class_shares_on_true_boxes"]["per_class"]
    assert shares["stand"] == 1.0 and 0.5 < shares["wave"] < 1.0  # P or Q first, at random
    assert "class shares on true boxes" in capsys.readouterr().out

    assert limits.main([str(tmp_path), str(tmp_path / "nope.csv")]) == 2
    assert f"cannot read {tmp_path / 'nope.csv'}" in capsys.readouterr().err


def test_actor_probe_classifies_every_ground_truth_person(demo_out: Path, capsys) -> None:
    # benchmarks/actor_probe.py (the README's diagnosis of the demo) on the demo's own checkpoint.
    import csv

    probe = _benchmark_script("actor_probe")
    assert probe.main([str(demo_out / "train" / "best.pt")]) == 0
    out = capsys.readouterr().out.splitlines()

    def people(split: str) -> int:  # (video, second, person) triples of the split's CSV
        with open(demo_out / "data" / "annotations" / f"{split}.csv") as f:
            return len({(r[0], r[1], r[7]) for r in csv.reader(f)})

    assert out[0] == f"{people('train')} training actors, {people('val')} held-out actors"
    rows = [line.split("  ")[0] for line in out[2:]]
    assert rows == [
        "model's action head",
        "linear probe on features",
        "linear probe on geometry",
        "chance (share of positives)",
    ]


def test_cue_learnability_labels_cells_and_scores_every_person(demo_out: Path, tmp_path: Path) -> None:
    # benchmarks/cue_learnability.py (the README's learnability ceiling) on the demo's own data.
    import torch

    cues = _benchmark_script("cue_learnability")
    # A cell carries the labels of every box its centre lies in (16-px cells: centres at 8, 24, ...).
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [5.0, 0.0, 30.0, 20.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    cells = cues.cell_targets([boxes], [labels], h=2, w=3)[0]  # (6, 3)
    assert cells.tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]  # row-major

    result = tmp_path / "cues.json"
    root = demo_out / "data"
    assert (
        cues.main([str(root), "--model", "vit", "--steps", "2", "--evals", "1", "--json", str(result)]) == 0
    )
    report = json.loads(result.read_text())
    assert [h["step"] for h in report["history"]] == [2]
    assert len(report["val_per_class"]) == 13 and set(report["val_groups"]) == {
        "pose",
        "motion",
        "object",
        "interaction",
    }
    assert all(ap != ap or 0.0 <= ap <= 1.0 for ap in report["val_per_class"])  # NaN: no held-out positive
    assert cues.main([str(tmp_path / "nothing"), "--model", "cnn"]) == 2
