"""Reading weights safely: no pickled code runs, and every bad input is one line with exit code 2."""

import argparse
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch

import evad
from evad.cli import main
from evad.errors import UserError
from evad.weights import read_checkpoint


class MakesAFile:
    """Unpickling this calls open(marker, "w"), which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def convert_error(capsys, src, *extra) -> str:
    """Run `evad convert SRC` expecting exit code 2; the one-line message."""
    dst = Path(src).parent / "converted"
    assert main(["convert", str(src), str(dst), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("evad: error: ") and "Traceback" not in err
    assert not dst.exists()
    return err


@pytest.mark.parametrize("pickled_by", ["torch", "pickle"])
def test_checkpoint_that_would_run_code_is_refused(tmp_path, capsys, pickled_by):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    payload = {"extra": MakesAFile(marker), "model": {"patch_embed.proj.weight": torch.zeros(1)}}
    if pickled_by == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    err = convert_error(capsys, path)
    assert str(path) in err and "refused" in err
    assert "would call" in err and "open" in err
    with pytest.raises(UserError, match="refused"):
        evad.create_model("tiny", pretrained=path)
    assert not marker.exists()


class CallsGetcwd:
    def __reduce__(self):
        return (os.getcwd, ())


def test_every_command_words_a_refused_or_damaged_file_alike(tmp_path, capsys):
    """convert, eval, detect, export and train --resume all read through load_torch_file."""
    evil = tmp_path / "evil.pt"
    torch.save({"model": CallsGetcwd()}, evil)  # a module torch blocks by name: posix
    script = tmp_path / "model.ts.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated; evad export may still write it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), script)
    config = tmp_path / "train.yaml"
    config.write_text(f"model: {{preset: tiny}}\noutput_dir: {tmp_path / 'run'}\n")
    for path, message in (
        (evil, "refused: unpickling it would call posix.getcwd; evad reads only tensors and plain values"),
        (script, "a TorchScript model (e.g. from evad export), not a checkpoint of weights"),
    ):
        assert f"{path}: {message}" in convert_error(capsys, path)
        for args in (
            ["eval", "--checkpoint", str(path)],
            ["export", "--checkpoint", str(path)],
            ["train", "--config", str(config), "--resume", str(path)],
        ):
            assert main(args) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"evad: error: {path}: {message}") and err.count("\n") == 1


def test_plain_values_beside_the_weights_are_read(tmp_path):
    weights = {"patch_embed.proj.weight": torch.ones(1)}
    torch.save({"model": weights, "args": argparse.Namespace(lr=1e-3), "epoch": 3}, tmp_path / "videomae.pth")
    assert read_checkpoint(tmp_path / "videomae.pth").tensors.keys() == weights.keys()
    torch.save({"module": {"module.blocks.0.norm1.weight": torch.ones(1)}}, tmp_path / "ddp.pth")
    assert list(read_checkpoint(tmp_path / "ddp.pth").tensors) == ["blocks.0.norm1.weight"]


def test_files_that_are_not_checkpoints(tmp_path, capsys):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    assert "not a readable checkpoint" in convert_error(capsys, text)

    torch.save({"model": evad.create_model("tiny").backbone.state_dict()}, tmp_path / "vit.pth")
    data = (tmp_path / "vit.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in convert_error(capsys, tmp_path / "cut.pth")

    from safetensors.torch import save_file

    save_file({"w": torch.ones(100)}, str(tmp_path / "w.safetensors"))
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-40])
    assert "not a readable safetensors file" in convert_error(capsys, tmp_path / "cut.safetensors")

    torch.save([1, 2, 3], tmp_path / "list.pth")
    assert "not a checkpoint" in convert_error(capsys, tmp_path / "list.pth")
    assert "not found" in convert_error(capsys, tmp_path / "missing.pth")


def test_folder_without_config(tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    torch.save({}, tmp_path / "hf" / "pytorch_model.bin")
    err = convert_error(capsys, tmp_path / "hf")
    assert f"{tmp_path / 'hf'}: a weights folder needs a config.json" in err
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "videomae"')
    assert "not valid JSON" in convert_error(capsys, tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "bert"}')
    assert "model_type 'bert' is not 'videomae'" in convert_error(capsys, tmp_path / "hf")


def test_checkpoint_of_another_architecture(tmp_path, capsys):
    resnet = {
        "conv1.weight": torch.ones(8, 3, 7, 7),
        "bn1.weight": torch.ones(8),
        "fc.weight": torch.ones(2, 8),
    }
    torch.save({"state_dict": resnet}, tmp_path / "resnet.pth")
    err = convert_error(capsys, tmp_path / "resnet.pth")
    assert "not a VideoMAE, Hugging Face VideoMAE, official EVAD or evad checkpoint" in err
    assert "conv1.weight" in err

    official = {"det_head.mask_token": torch.ones(1, 1, 4), "blocks.0.norm1.weight": torch.ones(4)}
    torch.save({"model_state": official}, tmp_path / "official.pth")
    err = convert_error(capsys, tmp_path / "official.pth", "--from", "videomae")
    assert "looks like official EVAD weights, not VideoMAE" in err


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    torch.save(evad.create_model("tiny", embed_dim=96).backbone.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(UserError) as err:
        evad.create_model("tiny", num_classes=3, pretrained=tmp_path / "wide.pth")
    message = str(err.value)
    assert "patch_embed.proj.weight" in message and "(96, 3, 2, 16, 16)" in message
    assert "(64, 3, 2, 16, 16)" in message and str(tmp_path / "wide.pth") in message


def test_weights_holding_nan_are_refused_before_loading(tmp_path):
    backbone = evad.create_model("tiny").backbone.state_dict()
    backbone["blocks.1.mlp.fc1.weight"][0, 0] = float("nan")
    backbone["norm.bias"][3] = float("inf")
    torch.save(backbone, tmp_path / "diverged.pth")
    model = evad.create_model("tiny", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = "blocks.1.mlp.fc1.weight, norm.bias"  # the file's names
    with pytest.raises(UserError, match=rf"diverged.pth: NaN or infinite weights in {names};"):
        evad.weights.load_pretrained(model, tmp_path / "diverged.pth")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kind", ["bin", "safetensors"])
def test_sharded_hugging_face_folder_reads_every_shard(tmp_path, kind):
    import json

    from safetensors.torch import save_file

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "videomae"}')
    shards = {"a": {"x.weight": torch.ones(2)}, "b": {"y.weight": torch.zeros(3)}}
    weight_map = {}
    for name, tensors in shards.items():
        file = f"model-{name}.{kind}"
        if kind == "bin":
            torch.save(tensors, folder / file)
        else:
            save_file(tensors, str(folder / file))
        weight_map.update(dict.fromkeys(tensors, file))
    index = "pytorch_model.bin.index.json" if kind == "bin" else "model.safetensors.index.json"
    (folder / index).write_text(json.dumps({"weight_map": weight_map}))

    ckpt = read_checkpoint(folder)
    assert sorted(ckpt.tensors) == ["x.weight", "y.weight"]
    assert torch.equal(ckpt.tensors["y.weight"], torch.zeros(3))

    (folder / f"model-b.{kind}").unlink()
    with pytest.raises(UserError, match=f"shard model-b.{kind} is missing"):
        read_checkpoint(folder)
