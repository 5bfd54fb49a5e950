"""Where the detector comes from: a checkpoint, a preset, or the packaged model."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch

import evad
from evad.errors import UserError
from evad.inference import pretrained
from evad.inference.pretrained import load_detector, packaged_checkpoint
from evad.weights.evad_format import model_config_from_info


def _train_checkpoint(path):
    from evad.config import config_from_dict
    from evad.engine.checkpoint import model_state, save_checkpoint

    data = {"test_short_side": 48, "mean": [0.5, 0.5, 0.5], "sampling_rate": 2}
    config = config_from_dict({"model": {"preset": "tiny"}, "data": data}, "test")
    torch.manual_seed(0)
    model = evad.create_model("tiny", num_classes=2)
    dataset = {"num_classes": 2, "class_ids": [4, 9], "class_names": ["walk", "turn around"]}
    save_checkpoint(path, {"model": model_state(model), "config": config.to_dict(), "dataset": dataset})
    return path


def test_a_checkpoint_brings_its_classes_and_input_settings(tmp_path):
    loaded = load_detector(_train_checkpoint(tmp_path / "best.pt"))
    assert (loaded.class_ids, loaded.class_names) == ([4, 9], ["walk", "turn around"])
    assert loaded.inputs.short_side == 48 and loaded.inputs.sampling_rate == 2
    assert loaded.inputs.mean == (0.5, 0.5, 0.5) and not loaded.random_weights
    assert load_detector(tmp_path / "best.pt", short_side=64).inputs.short_side == 64


def _labelmap(path, names):
    path.write_text("".join(f'item {{\n  name: "{name}"\n  id: {i}\n}}\n' for i, name in names.items()))
    return path


def test_a_label_map_renames_a_checkpoints_classes_only_if_it_names_exactly_them(tmp_path):
    path = _train_checkpoint(tmp_path / "best.pt")  # class ids 4 and 9
    labelmap = _labelmap(tmp_path / "lm.pbtxt", {9: "go", 4: "stop"})
    assert load_detector(path, labelmap=labelmap).class_names == ["stop", "go"]
    _labelmap(labelmap, {4: "stop", 3: "jump"})  # used to name class 9 'turn around' from the checkpoint
    with pytest.raises(UserError, match=r"lm.pbtxt: .*classes \(no name for id 9; not in the model: id 3\)"):
        load_detector(path, labelmap=labelmap)


def test_a_preset_has_random_weights_and_numbered_classes():
    loaded = load_detector(preset="tiny", num_classes=3)
    assert loaded.random_weights and loaded.class_ids == [1, 2, 3] and loaded.inputs.short_side == 256
    with pytest.raises(UserError, match="unknown model"):
        load_detector(preset="vit-z")
    with pytest.raises(UserError, match="num_classes must be a whole number >= 1, got '3'"):
        load_detector(preset="tiny", num_classes="3")
    for short_side in (0, -5, 2.5):  # 0 silently gave the default 256
        with pytest.raises(UserError, match="short_side must be a whole number of pixels >= 1"):
            load_detector(preset="tiny", num_classes=3, short_side=short_side)
    for checkpoint in (None, "best.pt"):  # the packaged model, a checkpoint: their classes are stored
        with pytest.raises(UserError, match=r"^--num-classes applies to --model only"):
            load_detector(checkpoint, num_classes=3)


def test_a_loaded_detector_is_in_eval_mode_so_its_outputs_repeat(tmp_path):
    """A trained ViT-B has drop-path 0.1: a model left in training mode gave other outputs at every
    call of `loaded.model(clips)`."""
    from evad.config import config_from_dict
    from evad.engine.checkpoint import model_state, save_checkpoint

    model = {"preset": "tiny", "drop_path_rate": 0.5, "decoder_drop_path": 0.5}
    config = config_from_dict({"model": model, "data": {"test_short_side": 64}}, "test")
    net = evad.create_model("tiny", num_classes=2, drop_path_rate=0.5, decoder_drop_path=0.5)
    dataset = {"num_classes": 2, "class_ids": [4, 9], "class_names": ["walk", "turn around"]}
    save_checkpoint(
        tmp_path / "best.pt", {"model": model_state(net), "config": config.to_dict(), "dataset": dataset}
    )
    clips = torch.randn(1, 3, 16, 64, 64)
    for loaded in (load_detector(tmp_path / "best.pt"), load_detector(preset="tiny", num_classes=2)):
        assert not loaded.model.training
    loaded = load_detector(tmp_path / "best.pt")
    with torch.no_grad():
        first, second = (loaded.model(clips)["action_logits"] for _ in range(2))
    assert torch.equal(first, second)


def test_without_a_source_the_packaged_model_is_loaded_if_installed(tmp_path, monkeypatch):
    assert packaged_checkpoint().name == "synthetic_tiny"
    monkeypatch.setattr(pretrained, "packaged_checkpoint", lambda: tmp_path / "missing.pt")
    with pytest.raises(UserError, match=r"no packaged model is installed.*--checkpoint or --model"):
        load_detector()
    path = _train_checkpoint(tmp_path / "synthetic_tiny.pt")
    monkeypatch.setattr(pretrained, "packaged_checkpoint", lambda: path)
    assert load_detector().class_names == ["walk", "turn around"]


def test_the_packaged_model_is_installed_and_detects():
    # The model `evad detect` uses without --checkpoint: the demo's tiny model, 13 synthetic classes.
    loaded = load_detector()
    assert not loaded.random_weights
    assert loaded.class_names[:3] == ["stand", "sit", "lie down"] and len(loaded.class_ids) == 13
    assert loaded.inputs.short_side == 128
    clips = torch.zeros(1, 3, 16, 128, 192)
    with torch.no_grad():
        out = loaded.model.eval()(clips)
    assert out["action_logits"].shape == (1, 16, 13)


def test_create_model_names_the_settings_that_differ_from_the_stored_ones(caplog):
    """A keep rate or box extension changes the detections without changing a tensor's shape."""
    folder = packaged_checkpoint()
    stored = model_config_from_info(json.loads((folder / "config.json").read_text()), str(folder))
    same = {f.name: getattr(stored, f.name) for f in dataclasses.fields(stored) if f.name != "num_classes"}
    with caplog.at_level(logging.WARNING, logger="evad"):
        evad.create_model("tiny", num_classes=stored.num_classes, pretrained=folder, **same)
        assert not caplog.records
        settings = {**same, "keep_rate": 0.5, "roi_extend": (0.0, 0.0), "fused_attention": False}
        evad.create_model("tiny", num_classes=stored.num_classes, pretrained=folder, **settings)
    [record] = caplog.records
    assert "keep_rate 0.7 -> 0.5, roi_extend (0.4, 0.2) -> (0.0, 0.0)" in record.getMessage()
    assert "load_detector" in record.getMessage() and "fused_attention" not in record.getMessage()


def test_a_train_output_folder_or_a_backbone_is_not_a_detector(tmp_path):
    """`evad detect --checkpoint RUN` names the files to pass; backbone weights say what they are for."""
    run = tmp_path / "run1"
    run.mkdir()
    _train_checkpoint(run / "best.pt")
    (run / "config.yaml").write_text("model: {preset: tiny}\n")
    with pytest.raises(UserError) as err:
        load_detector(run)
    assert str(err.value) == f"{run} is an evad train output folder; pass {run / 'best.pt'}"

    from evad.weights import convert_checkpoint

    torch.save(evad.create_model("tiny").backbone.state_dict(), tmp_path / "videomae.pth")
    convert_checkpoint(tmp_path / "videomae.pth", tmp_path / "backbone")
    with pytest.raises(
        UserError, match=r"backbone: holds only a backbone .*, not a detector: .*model\.pretrained="
    ):
        load_detector(tmp_path / "backbone")


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("stand, sit", "its 'dataset' entry is not a mapping"),
        ({"num_classes": 2}, "the stored class list is damaged"),
        ({"class_ids": ["a", "b"], "class_names": ["x", "y"]}, "the stored class list is damaged"),
        ({"class_ids": [4, 9], "class_names": ["walk"]}, "the stored class list is damaged"),
    ],
)
def test_a_damaged_class_list_in_a_checkpoint_is_one_line(tmp_path, dataset, message):
    path = _train_checkpoint(tmp_path / "best.pt")
    state = torch.load(path, weights_only=True)
    torch.save({**state, "dataset": dataset}, path)
    with pytest.raises(UserError, match=rf"^{path}: .*{message}"):
        load_detector(path)


def test_a_checkpoint_with_nan_weights_is_one_line(tmp_path, capsys):
    path = _train_checkpoint(tmp_path / "best.pt")
    state = torch.load(path, weights_only=True)
    name = next(k for k in state["model"] if k.endswith("action_logits.weight"))
    state["model"][name][0, 0] = float("nan")
    torch.save(state, path)
    with pytest.raises(UserError, match=rf"^{path}: NaN or infinite weights in {name};"):
        load_detector(path)
