"""ONNX / TorchScript export of the tiny detector at 64 x 96, checked against eager PyTorch."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

import evad
from evad import export
from evad.cli import main
from evad.errors import UserError
from evad.models import PostProcess

SIZE = (64, 96)
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return evad.create_model("tiny", num_classes=NUM_CLASSES).eval()


def _fresh_inputs(batch):
    """Clips other than the traced ones, with padded, per-clip image sizes and target sizes."""
    clips = torch.randn(batch, 3, 16, *SIZE, generator=torch.Generator().manual_seed(1))
    image_sizes = torch.tensor([[64.0, 96.0], [48.0, 80.0]])[:batch]
    target_sizes = torch.tensor([[480.0, 720.0], [360.0, 600.0]])[:batch]
    return clips, image_sizes, target_sizes


def _assert_outputs_close(got, expected):
    boxes, person, actions = got
    # Boxes are pixels of 720 x 480 targets: 1e-4 relative is a hundredth of a pixel.
    torch.testing.assert_close(boxes, expected[0], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(person, expected[1], rtol=0, atol=1e-4)
    torch.testing.assert_close(actions, expected[2], rtol=0, atol=1e-4)


def _expected(model, keep_rate, inputs):
    with torch.no_grad():
        return export.ExportableEVAD(model, keep_rate).eval()(*inputs)


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    info = export.export_onnx(model, path, SIZE, keep_rate=0.7, batch_size=2, metadata={"note": "test"})
    return path, info


def test_exportable_module_applies_postprocess_box_rule(model):
    clips, image_sizes, target_sizes = _fresh_inputs(2)
    with torch.no_grad():
        outputs = model(clips, image_sizes, keep_rate=0.7)
        boxes, person, actions = export.ExportableEVAD(model, 0.7)(clips, image_sizes, target_sizes)
    detections = PostProcess(person_threshold=0.0)(outputs, target_sizes)
    for b, det in enumerate(detections):
        torch.testing.assert_close(boxes[b], det.boxes)
        torch.testing.assert_close(person[b], det.person_scores)
        torch.testing.assert_close(actions[b], det.action_scores)


def test_onnx_matches_pytorch_at_keep_rate_0_7_on_new_inputs(model, onnx_file):
    path, info = onnx_file
    inputs = _fresh_inputs(2)
    got = export.run_exported(path, "onnx", inputs)
    assert [tuple(x.shape) for x in got] == [(2, 10, 4), (2, 10), (2, 10, NUM_CLASSES)]
    _assert_outputs_close(got, _expected(model, 0.7, inputs))
    assert info["inputs"]["clips"] == [2, 3, 16, *SIZE] and info["keep_rate"] == 0.7


def test_onnx_file_is_valid_and_carries_metadata(onnx_file):
    import onnx

    path, info = onnx_file
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    stored = json.loads({p.key: p.value for p in proto.metadata_props}["evad"])
    assert stored == info and stored["note"] == "test" and stored["opset"] == export.DEFAULT_OPSET
    assert [i.name for i in proto.graph.input] == list(export.INPUT_NAMES)
    assert [o.name for o in proto.graph.output] == list(export.OUTPUT_NAMES)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_matches_pytorch_without_size_inputs(model, tmp_path):
    path = tmp_path / "tiny.torchscript.pt"
    export.export_torchscript(model, path, SIZE, keep_rate=0.7, size_inputs=False)
    clips = _fresh_inputs(1)[0]
    got = export.run_exported(path, "torchscript", (clips,))
    _assert_outputs_close(got, _expected(model, 0.7, (clips,)))
    extra = {"evad.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["evad.json"])["inputs"] == {"clips": [1, 3, 16, *SIZE]}
    # Outputs are plain tensors even with gradients on (`.numpy()` works), and the model that was
    # exported still trains.
    assert not any(y.requires_grad for y in loaded(clips))
    assert all(p.requires_grad for p in model.parameters())


def test_cli_exports_a_checkpoint_at_keep_rate_1_and_refuses_to_overwrite(model, tmp_path, capsys):
    from evad.config import config_from_dict
    from evad.engine.checkpoint import model_state, save_checkpoint

    config = config_from_dict({"model": {"preset": "tiny"}}, "test")
    dataset = {"num_classes": NUM_CLASSES, "class_ids": [1, 4, 9], "class_names": ["a", "b", "c"]}
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(checkpoint, {"model": model_state(model), "config": config.to_dict(), "dataset": dataset})
    out = tmp_path / "sub" / "model.onnx"
    argv = ["export", "--checkpoint", str(checkpoint), "--img-size", *map(str, SIZE), "--out", str(out)]

    assert main([*argv, "--keep-rate", "1.0"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    inputs = _fresh_inputs(1)
    _assert_outputs_close(export.run_exported(out, "onnx", inputs), _expected(model, 1.0, inputs))

    before = out.read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--overwrite" in err
    assert out.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "tiny", "--img-size", "60", "96"], "--img-size 60 96"),
        (["--model", "tiny", "--img-size", "64", "0"], "--img-size 64 0"),
        (["--model", "tiny", "--img-size", "16", "512"], "at least 32, got 16x512"),
        (["--model", "nope"], "unknown model"),
        (["--checkpoint", "{tmp}/missing.pt"], "missing.pt: checkpoint not found"),
        (["--checkpoint", "{tmp}/missing.pt", "--num-classes", "3"], "--num-classes"),
        (["--model", "tiny", "--format", "torchscript", "--opset", "17"], "--opset"),
        (["--model", "tiny", "--format", "torchscript", "--out", "{tmp}/m.onnx"], ".onnx is the onnx suffix"),
    ],
)
def test_cli_rejects_bad_arguments_with_one_line(args, message, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(["export", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("evad: error: ") and message in err
    assert not out.exists()


def test_missing_onnx_package_is_a_user_error_with_install_hint(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(UserError, match="pip install onnx"):
        export.export_onnx(model, tmp_path / "x.onnx", SIZE)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"opset": 15}, "opset"), ({"keep_rate": 0.0}, "keep_rate"), ({"batch_size": 0}, "batch size")],
)
def test_export_rejects_bad_settings(model, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export.export_onnx(model, tmp_path / "x.onnx", SIZE, **kwargs)


def test_onnx_refuses_weights_over_the_protobuf_limit(model, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "ONNX_MAX_BYTES", 1024)
    with pytest.raises(ValueError, match="TorchScript"):
        export.export_onnx(model, tmp_path / "x.onnx", SIZE)


def _no_model_loading(monkeypatch):
    """Make `evad export` fail loudly if it gets as far as loading a model."""
    import evad.cli.export as cli_export

    def load(args):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(cli_export, "_load", load)


@pytest.mark.parametrize(
    ("fmt", "name", "message"),
    [
        ("onnx", "t.pt", ".pt is the torchscript suffix, but the format is onnx; onnx files end in .onnx"),
        ("onnx", "m.txt", "onnx files end in .onnx, not .txt"),
        ("onnx", "model", "no extension; onnx files end in .onnx"),
        ("torchscript", "t.onnx", ".onnx is the onnx suffix, but the format is torchscript"),
        ("torchscript", "t.bin", "torchscript files end in .pt, .pth or .ts, not .bin"),
    ],
)
def test_cli_out_extension_must_match_the_format_both_ways(fmt, name, message, tmp_path, capsys, monkeypatch):
    _no_model_loading(monkeypatch)
    out = tmp_path / name
    assert main(["export", "--model", "tiny", "--format", fmt, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"evad: error: {out}: ") and message in err, err
    assert not out.exists()


def test_the_extensions_of_each_format_are_accepted_in_any_case(tmp_path):
    for fmt, names in {
        "onnx": ["m.onnx", "M.ONNX"],
        "torchscript": ["m.pt", "m.pth", "m.ts", "m.torchscript.pt"],
    }.items():
        for name in names:
            export.check_extension(tmp_path / name, fmt)
            assert export.check_destination(tmp_path / name, fmt) == tmp_path / name
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the writability probe leaves nothing


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("{tmp}/a_file/sub/m.onnx", "{tmp}/a_file is not a folder"),
        ("{tmp}/folder.onnx", "is a folder"),
        ("/proc/evad_no_such_folder/m.onnx", "cannot write in /proc"),
    ],
)
def test_cli_refuses_an_out_it_cannot_write_before_loading_the_model(
    out, message, tmp_path, capsys, monkeypatch
):
    if out.startswith("/proc") and not (os.path.isdir("/proc") and sys.platform.startswith("linux")):
        pytest.skip("needs Linux's /proc")
    _no_model_loading(monkeypatch)
    (tmp_path / "a_file").write_text("mine\n")
    (tmp_path / "folder.onnx").mkdir()
    out, message = out.format(tmp=tmp_path), message.format(tmp=tmp_path)
    for extra in ([], ["--overwrite"]):
        assert main(["export", "--model", "tiny", "--out", out, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"evad: error: {out}: ") and message in err, err
    assert (tmp_path / "a_file").read_text() == "mine\n" and not any((tmp_path / "folder.onnx").iterdir())


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_cli_refuses_an_out_in_a_read_only_folder_before_loading_the_model(tmp_path, capsys, monkeypatch):
    _no_model_loading(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for out in (locked / "m.onnx", locked / "sub" / "m.onnx"):
            assert main(["export", "--model", "tiny", "--out", str(out)]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"cannot write in {locked}" in err, err
        assert not any(locked.iterdir())
    finally:
        locked.chmod(0o755)


def test_export_functions_check_the_destination_before_the_trace(model, tmp_path, monkeypatch):
    def trace(*args, **kwargs):
        raise AssertionError("traced before the destination was checked")

    monkeypatch.setattr(torch.jit, "trace", trace)
    monkeypatch.setattr(torch.onnx, "export", trace)
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(UserError, match="missing does not exist"):
        export.export_torchscript(model, tmp_path / "missing" / "x.pt", SIZE)
    with pytest.raises(UserError, match="is a folder"):
        export.export_onnx(model, tmp_path / "folder.onnx", SIZE)
    assert not (tmp_path / "missing").exists()


def test_cli_never_exports_over_its_own_checkpoint(model, tmp_path, capsys, monkeypatch):
    # A checkpoint ends in .pt, as a TorchScript file may: one typo in --out must not replace it.
    _no_model_loading(monkeypatch)
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"my weights")
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(checkpoint)]
    assert main([*argv, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is also one of this command's inputs" in err, err
    assert checkpoint.read_bytes() == b"my weights"
