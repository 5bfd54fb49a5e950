"""Checkpoints: atomic writes, weights_only loading, refusal of foreign files, RNG states."""

import io
import os
import pickle
import random
import re

import numpy as np
import pytest
import torch

from evad.cli import main
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


class CallsGetcwd:
    """Pickled as a call of posix.getcwd (a module torch's safe unpickler blocks by name)."""

    def __reduce__(self):
        return (os.getcwd, ())


def _torch_saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _truncated_checkpoint() -> bytes:
    data = _torch_saved({"format": ckpt.FORMAT, "model": {"w": torch.ones(1000)}})
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable checkpoint (an empty file)"),
        (b"this is not a checkpoint", "not a readable checkpoint (not a PyTorch or safetensors file)"),
        (pickle.dumps({"model": Evil()}, protocol=2), "refused: unpickling it would call print"),
        (_torch_saved({"model": CallsGetcwd()}), "refused: unpickling it would call posix.getcwd"),
        (_truncated_checkpoint(), "not a readable checkpoint (truncated or corrupt)"),
    ],
    ids=["empty", "text", "pickled-code", "blocked-module", "truncated"],
)
def test_garbage_files_are_refused(tmp_path, content, message):
    """The same short line as `evad convert` gives (evad.weights.reading.load_torch_file)."""
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        ckpt.load_checkpoint(path)
    text = str(err.value)
    assert text.startswith(f"{path}: {message}") and "\n" not in text and len(text) < len(str(path)) + 150
    assert "False" not in text and "arbitrary code" not in text  # no advice to unpickle anyway


def test_a_train_output_folder_names_the_checkpoints_to_pass(tmp_path, capsys):
    run = tmp_path / "run1"
    run.mkdir()
    (run / "config.yaml").write_text("model: {preset: tiny}\n")
    ckpt.save_checkpoint(run / "last.pt", {"model": {"w": torch.ones(1)}})
    with pytest.raises(UserError) as err:
        ckpt.load_checkpoint(run)
    assert str(err.value) == f"{run} is an evad train output folder; pass {run / 'last.pt'}"
    ckpt.save_checkpoint(run / "best.pt", {"model": {"w": torch.ones(1)}})
    expected = (
        f"evad: error: {run} is an evad train output folder; pass {run / 'best.pt'} or {run / 'last.pt'}\n"
    )
    for args in (["eval"], ["eval", "--config", str(run / "config.yaml")], ["export"]):
        assert main([*args, "--checkpoint", str(run)]) == 2
        assert capsys.readouterr().err == expected


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


def test_cuda_rng_of_more_devices_resumes_on_fewer(monkeypatch):
    """A run saved where 8 GPUs were visible resumes on a 1-GPU machine with device 0's state."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state: restored.append(state))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.extend(states))
    state = ckpt.rng_state()
    saved = [torch.full((16,), device, dtype=torch.uint8) for device in range(8)]
    ckpt.set_rng_state({**state, "cuda": saved})  # the layout evad wrote before 2026-11-23
    ckpt.set_rng_state({**state, "cuda": saved[3]})  # one device's, as now
    assert [int(s[0]) for s in restored] == [0, 3]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"model": [1, 2]}, "its 'model' entry is not a mapping of names to tensors"),
        ({"model": {"w": 5}}, "its 'model' entry is not a mapping of names to tensors"),
        ({"model": {"w": torch.ones(1)}, "config": [1]}, "its 'config' entry is not a mapping"),
    ],
)
def test_a_checkpoint_with_a_damaged_model_or_config_entry_is_refused(tmp_path, entries, message, capsys):
    """`evad eval` and `--resume` failed with a TypeError or AttributeError on these."""
    path = tmp_path / "bad.pt"
    ckpt.save_checkpoint(path, entries)
    with pytest.raises(UserError, match=re.escape(f"{path}: damaged evad checkpoint ({message})")):
        ckpt.load_checkpoint(path)
    assert main(["eval", "--checkpoint", str(path)]) == 2
    assert capsys.readouterr().err == f"evad: error: {path}: damaged evad checkpoint ({message})\n"
