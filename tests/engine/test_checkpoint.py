"""Checkpoints: atomic writes, weights_only loading, refusal of foreign files, RNG states."""

import os
import pickle
import random

import numpy as np
import pytest
import torch

from evad.config import load_config
from evad.engine import checkpoint as ckpt
from evad.engine.optim import build_optimizer, build_scheduler
from evad.errors import UserError
from evad.models.factory import create_model
from evad.weights import load_pretrained


def training_state():
    model = create_model("tiny", num_classes=3)
    optimizer = build_optimizer(model, base_lr=1e-4)
    scheduler = build_scheduler(optimizer, 10)
    model(torch.randn(1, 3, 16, 32, 32))["pred_logits"].sum().backward()
    optimizer.step()
    scheduler.step()
    state = {
        "model": ckpt.model_state(model),
        "config": load_config(None, ["model.preset=tiny"]).to_dict(),
        "epoch": 1,
        "global_step": 1,
        "best_metric": None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": None,
        "rng": ckpt.rng_state(),
    }
    return model, optimizer, scheduler, state


def test_round_trip_with_weights_only(tmp_path):
    model, optimizer, scheduler, state = training_state()
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, state)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left
    loaded = ckpt.load_checkpoint(path)  # weights_only=True inside
    torch.load(path, weights_only=True)  # and nothing needs the unsafe unpickler
    assert loaded["format"] == ckpt.FORMAT and loaded["epoch"] == 1
    assert loaded["config"]["model"]["preset"] == "tiny"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model"][key], value)

    fresh = create_model("tiny", num_classes=3)
    ckpt.load_model_state(fresh, loaded["model"], str(path))
    opt2 = build_optimizer(fresh, base_lr=1e-4)
    sched2 = build_scheduler(opt2, 10)
    opt2.load_state_dict(loaded["optimizer"])
    sched2.load_state_dict(loaded["scheduler"])
    assert sched2.last_epoch == scheduler.last_epoch
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in optimizer.param_groups]


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, {"model": {"w": torch.ones(2)}, "epoch": 1})

    def failing_save(obj, f, *args, **kwargs):
        with open(f, "wb") as file:
            file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, {"model": {"w": torch.zeros(2)}, "epoch": 2})
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "not a readable checkpoint"),
        (b"this is not a checkpoint", "not a readable checkpoint"),
        (pickle.dumps({"model": Evil()}, protocol=2), "not a readable checkpoint"),
    ],
    ids=["empty", "text", "pickled-code"],
)
def test_garbage_files_are_refused(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=match) as err:
        ckpt.load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert "weights_only" not in message  # no advice to unpickle the file anyway


def test_foreign_torch_files_are_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, path)
    with pytest.raises(UserError, match="not an evad checkpoint"):
        ckpt.load_checkpoint(path)
    with pytest.raises(UserError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")


def test_mismatching_weights_are_a_user_error(tmp_path):
    state = ckpt.model_state(create_model("tiny", num_classes=3))
    with pytest.raises(UserError, match=r"do not fit.*4 of another shape \(.*\(3, 64\) vs \(5, 64\)"):
        ckpt.load_model_state(create_model("tiny", num_classes=5), state, "x.pt")
    # Another architecture: counted with a few names, not listed key by key.
    with pytest.raises(UserError, match=r"x.pt: .*\d+ missing \(.*, \.\.\.\)") as err:
        ckpt.load_model_state(create_model("tiny", num_classes=3, num_stages=4), state, "x.pt")
    assert len(str(err.value)) < 600


def test_pretrained_skips_only_the_classifier_of_another_class_count(tmp_path):
    source = create_model("tiny", num_classes=5)
    path = tmp_path / "pre.pt"
    torch.save(source.state_dict(), path)
    target = create_model("tiny", num_classes=3)
    report = load_pretrained(target, path)
    assert report.skipped and all("action_logits" in n for n in report.skipped)
    assert not report.missing and not report.ignored
    assert torch.equal(target.backbone.blocks[0].attn.qkv.weight, source.backbone.blocks[0].attn.qkv.weight)
    torch.save({"encoder.x": torch.ones(1)}, path)
    with pytest.raises(UserError, match="not a VideoMAE"):
        load_pretrained(target, path)


def test_rng_state_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(1)  # noqa: NPY002
    torch.manual_seed(1)
    state = ckpt.rng_state()
    ckpt.save_checkpoint(tmp_path / "r.pt", {"model": {}, "rng": state})
    expected = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    ckpt.set_rng_state(ckpt.load_checkpoint(tmp_path / "r.pt")["rng"])
    got = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])
