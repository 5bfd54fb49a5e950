"""evad weights (model.safetensors + config.json): written by `evad convert`, read everywhere."""

import json
from pathlib import Path

import pytest
import torch

import evad
import evad.engine.eval_checkpoint as eval_checkpoint_module
from evad.cli import main
from evad.config import config_from_dict
from evad.engine import checkpoint as ckpt
from evad.errors import UserError
from evad.weights import load_pretrained, read_checkpoint
from evad.weights.evad_format import CONFIG_FILE, WEIGHTS_FILE
from tiny_data import TinyDataset, loader  # the engine tests' in-memory dataset (tests/)

CLASS_IDS, CLASS_NAMES = [1, 2, 3], ["class1", "class2", "class3"]


@pytest.fixture
def best_pt(tmp_path):
    """An `evad train` checkpoint of a random tiny model with 3 named classes, test size 32."""
    torch.manual_seed(0)
    model = evad.create_model("tiny", num_classes=3)
    config = config_from_dict({"model": {"preset": "tiny"}, "data": {"test_short_side": 32}}, "test")
    dataset = {"num_classes": 3, "class_ids": CLASS_IDS, "class_names": CLASS_NAMES}
    path = tmp_path / "best.pt"
    ckpt.save_checkpoint(
        path, {"model": ckpt.model_state(model), "config": config.to_dict(), "dataset": dataset}
    )
    return path


def write_video(path: Path, frames: int = 8, size: int = 32) -> Path:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.full((size, size, 3), 8 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_evad_tensors_without_their_config_say_so(tmp_path, capsys):
    from safetensors.torch import save_file

    model = evad.create_model("tiny", num_classes=3, fpn_dim=64)  # heads wider than the preset's
    save_file(ckpt.model_state(model), str(tmp_path / "lone.safetensors"))
    assert main(["convert", str(tmp_path / "lone.safetensors"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (
        "has shape (64,) in the checkpoint but (32,) in the model: evad tensors without their config.json"
        in err
    )
    assert "another architecture" not in err and err.count("\n") == 1


def test_convert_writes_safetensors_and_config(tmp_path, best_pt, capsys):
    out = tmp_path / "weights"
    assert main(["convert", str(best_pt), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    info = json.loads((out / CONFIG_FILE).read_text())
    assert info["format"] == "evad-weights" and info["num_classes"] == 3
    assert info["classes"] == {"ids": CLASS_IDS, "names": CLASS_NAMES} and info["test_short_side"] == 32
    stored = ckpt.load_checkpoint(best_pt)["model"]
    for path in (out, out / WEIGHTS_FILE):  # the folder, or the file with config.json beside it
        state = ckpt.load_checkpoint(path)
        assert state["dataset"]["class_ids"] == CLASS_IDS and state["partial_config"]
        assert state["model"].keys() == stored.keys()
        assert all(torch.equal(state["model"][k], v) for k, v in stored.items())
    assert "loaded" in capsys.readouterr().out

    assert main(["convert", str(best_pt), str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["convert", str(best_pt), str(out), "--overwrite"]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["convert", str(best_pt), str(out), "--overwrite"]) == 2
    assert "holds other files (notes.txt)" in capsys.readouterr().err
    assert main(["convert", str(best_pt), str(tmp_path / "w.safetensors")]) == 2
    assert main(["convert", str(best_pt), str(tmp_path / "x"), "--num-classes", "5"]) == 2
    assert "predicts 3 classes" in capsys.readouterr().err


def test_convert_into_a_symbolic_link_writes_the_folder_it_names(tmp_path, best_pt):
    # weights -> a folder on another disk: the link stays and the folder gets the files (the link
    # was replaced by a new folder and kept as a hidden `.weights.*.tmp.old` link).
    (tmp_path / "disk").mkdir()
    link = tmp_path / "weights"
    link.symlink_to(tmp_path / "disk", target_is_directory=True)
    assert main(["convert", str(best_pt), str(link), "--overwrite"]) == 0
    assert main(["convert", str(best_pt), str(link), "--overwrite"]) == 0
    assert link.is_symlink()
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "disk", "weights"]


def test_interrupted_write_leaves_the_old_folder(tmp_path, best_pt, monkeypatch):
    import safetensors.torch

    out = tmp_path / "weights"
    assert main(["convert", str(best_pt), str(out)]) == 0
    before = (out / WEIGHTS_FILE).read_bytes()

    def failing_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    assert main(["convert", str(best_pt), str(out), "--overwrite"]) == 130  # interrupted
    assert (out / WEIGHTS_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "weights"]


def test_detect_and_eval_read_the_weights(tmp_path, best_pt, monkeypatch, capsys):
    weights = tmp_path / "weights"
    assert main(["convert", str(best_pt), str(weights)]) == 0
    video = write_video(tmp_path / "a.mp4")
    args = ["detect", str(video), "--checkpoint", str(weights), "--out", str(tmp_path / "det")]
    assert main([*args, "--no-progress", "--person-threshold", "0"]) == 0
    result = json.loads((tmp_path / "det" / "detections.json").read_text())
    assert [c["id"] for c in result["classes"]] == CLASS_IDS
    assert [c["name"] for c in result["classes"]] == CLASS_NAMES

    assert main(["eval", "--checkpoint", str(weights)]) == 2
    assert "pass --config" in capsys.readouterr().err
    val_set = TinyDataset(6, flip=False, root=tmp_path / "gt")
    monkeypatch.setattr(
        eval_checkpoint_module, "build_val_data", lambda config: (val_set, loader(val_set, 3, False))
    )
    config = tmp_path / "eval.yaml"
    config.write_text("data: {format: ava, timestamp_start: 0}\ntrain: {device: cpu}\n")
    args = ["eval", "--checkpoint", str(weights), "--config", str(config), "--out", str(tmp_path / "ev")]
    assert main([*args, "--no-progress"]) == 0
    assert (tmp_path / "ev" / "metrics.json").exists()


@pytest.mark.parametrize(
    "classes", ["walk, run, sit", ["walk", "run", "sit"], {"ids": ["a", "b", "c"]}, {"ids": 3}]
)
def test_a_hand_edited_class_list_is_one_line(tmp_path, best_pt, capsys, classes):
    weights = tmp_path / "weights"
    assert main(["convert", str(best_pt), str(weights)]) == 0
    info = json.loads((weights / "config.json").read_text())
    (weights / "config.json").write_text(json.dumps({**info, "classes": classes}))
    video = write_video(tmp_path / "a.mp4")
    args = ["detect", str(video), "--checkpoint", str(weights), "--out", str(tmp_path / "det")]
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert (
        err == f'evad: error: {weights}: "classes" must be {{"ids": [integers], "names": [names]}} or null\n'
    )


def test_create_model_and_training_read_the_weights(tmp_path, best_pt):
    weights = tmp_path / "weights"
    assert main(["convert", str(best_pt), str(weights)]) == 0
    stored = read_checkpoint(weights).tensors
    model = evad.create_model("tiny", num_classes=3, pretrained=weights)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stored.items())

    other = evad.create_model("tiny", num_classes=5)
    report = load_pretrained(other, weights)
    assert sorted(report.skipped) == sorted(k for k in stored if "action_logits" in k)
    assert not report.missing and not report.ignored
    assert "another class count" in report.summary()

    with pytest.raises(
        UserError, match=r"has shape .*stores its own model settings: .*load_detector\("
    ) as err:
        evad.create_model("tiny", num_classes=3, embed_dim=96, pretrained=weights)
    assert "pass it as --checkpoint to evad eval / evad detect" in str(err.value)  # what a CLI user does


def _videomae_backbone(path: Path, **settings) -> Path:
    """A VideoMAE-layout file holding a backbone only (what pre-training publishes)."""
    torch.save({"model": evad.create_model("tiny", **settings).backbone.state_dict()}, path)
    return path


def test_the_stored_preset_is_named_only_for_its_architecture(tmp_path, best_pt):
    """A 2-block backbone completed by vit-b's detector settings is not "vit-b": it is "custom"."""
    assert main(["convert", str(best_pt), str(tmp_path / "w")]) == 0
    assert json.loads((tmp_path / "w" / CONFIG_FILE).read_text())["model"]["preset"] == "tiny"
    assert main(["convert", str(_videomae_backbone(tmp_path / "t.pth")), str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / CONFIG_FILE).read_text())["model"]["preset"] == "tiny"

    shallow = _videomae_backbone(
        tmp_path / "shallow.pth", depth=2, prune_layers=(1,), tap_layers=(0, 0, 1, 1)
    )
    assert main(["convert", str(shallow), str(tmp_path / "s")]) == 0
    info = json.loads((tmp_path / "s" / CONFIG_FILE).read_text())
    assert info["model"]["preset"] == "custom"
    assert (info["model"]["embed_dim"], info["model"]["depth"]) == (64, 2)
    vit = evad.create_model("tiny", depth=2, prune_layers=(1,), tap_layers=(0, 0, 1, 1))
    load_pretrained(vit, tmp_path / "s")  # a custom folder reads back
    assert main(["convert", str(tmp_path / "s"), str(tmp_path / "s2")]) == 0  # and converts again
    assert json.loads((tmp_path / "s2" / CONFIG_FILE).read_text())["model"]["preset"] == "custom"


def test_backbone_weights_say_they_cannot_detect(tmp_path, capsys):
    weights = tmp_path / "backbone"
    assert main(["convert", str(_videomae_backbone(tmp_path / "vit.pth")), str(weights)]) == 0
    assert f"start training from them with model.pretrained={weights}" in capsys.readouterr().out
    expected = (
        f"{weights}: holds only a backbone (56 tensors), not a detector: it is meant for model.pretrained="
    )
    video = write_video(tmp_path / "a.mp4")
    config = tmp_path / "eval.yaml"
    config.write_text("data: {format: ava}\n")
    for args in (
        ["detect", str(video), "--checkpoint", str(weights), "--out", str(tmp_path / "det")],
        ["eval", "--checkpoint", str(weights), "--config", str(config)],
        ["eval", "--checkpoint", str(weights)],  # before asking for the data settings
        ["export", "--checkpoint", str(weights)],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"evad: error: {expected}") and err.count("\n") == 1
    # For training, a backbone of another size says which backbone it is.
    with pytest.raises(UserError, match=r"holds only a backbone of embed_dim 64, depth 4, num_heads 2"):
        evad.create_model("vit-s", pretrained=weights)
    evad.create_model("tiny", pretrained=weights)  # what it is for
