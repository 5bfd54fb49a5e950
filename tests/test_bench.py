"""`evad bench`: the JSON contract, keep-rate ordering of GFLOPs, training fields, argument errors."""

import json

import pytest
import torch

from evad import bench
from evad.cli import main
from evad.losses.criterion import validate_targets

KEYS = {
    "keep_rate",
    "img_size",
    "gflops",
    "tokens",
    "clips_per_s",
    "latency_ms",
    "latency_p90_ms",
    "peak_mem_mb",
    "train_step_ms",
    "train_peak_mem_mb",
}
TOP = {"results", "device", "torch", "threads", "dtype", "batch", "model", "date", "command"}
FAST = ["bench", "--model", "tiny", "--img-size", "64", "--batch", "1", "--warmup", "1", "--iters", "2"]


def run_bench(tmp_path, name, *extra):
    out = tmp_path / name
    assert main([*FAST, *extra, "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def inference(tmp_path_factory):
    return run_bench(tmp_path_factory.mktemp("bench"), "bench.json")


def test_json_has_every_key_for_every_keep_rate(inference, capsys):
    assert TOP <= set(inference)
    assert inference["model"] == "tiny" and inference["batch"] == 1 and inference["dtype"] == "fp32"
    assert inference["command"].startswith("evad bench --model tiny")
    results = inference["results"]
    assert [r["keep_rate"] for r in results] == [1.0, 0.9, 0.8, 0.7, 0.6]
    for r in results:
        assert set(r) == KEYS
        assert r["img_size"] == 64
        assert r["clips_per_s"] > 0 and r["latency_p90_ms"] >= r["latency_ms"] > 0
        assert r["peak_mem_mb"] > 0
        assert r["train_step_ms"] is None and r["train_peak_mem_mb"] is None


def test_gflops_and_tokens_decrease_with_keep_rate(inference):
    results = inference["results"]
    gflops = [r["gflops"] for r in results]
    assert gflops == sorted(gflops, reverse=True) and len(set(gflops)) == len(gflops)
    assert results[0]["tokens"] == [128]
    assert results[3]["tokens"] == [128, 90, 63, 45]  # keep rate 0.7, as `evad flops` counts


def test_train_adds_train_step_fields(tmp_path):
    record = run_bench(tmp_path, "train.json", "--keep-rate", "1.0", "0.6", "--train")
    assert record["train_batch"] == 1
    for r in record["results"]:
        assert r["train_step_ms"] > 0 and r["train_peak_mem_mb"] > 0


def test_the_progress_bar_ends_full(tmp_path, monkeypatch):
    """With --train its total counted the training steps as many as the inference calls, one more
    than are made: the bar stopped short of its end."""
    import tqdm

    bars = []

    class Recorder(tqdm.tqdm):  # counts the updates even when the bar is hidden (no terminal)
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls = 0
            bars.append(self)

        def update(self, n=1):
            self.calls += n
            return super().update(n)

    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    for extra, name in (([], "infer.json"), (["--train"], "train.json")):
        run_bench(tmp_path, name, "--keep-rate", "1.0", "0.6", *extra)
    assert [(bar.calls, bar.total) for bar in bars] == [(10, 10), (18, 18)]  # 2 rates x (5 | 5 + 4)


def test_json_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "exists.json"
    out.write_text("keep me")
    assert main([*FAST, "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert out.read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--img-size", "60"], "multiples of the patch size 16"),
        (["--img-size", "16"], "at least 32"),  # one patch: no stride-32 pyramid level
        (["--train", "--backbone-only"], "whole detector"),
        (["--model", "vit-q"], "unknown model"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message, capsys):
    assert main([*FAST, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evad: error:") and err.count("\n") == 1 and message in err


def test_cpu_peak_memory_counts_live_tensors():
    def step():
        a = torch.ones(2**20)  # 4 MiB
        b = a * 2  # 4 MiB more while a lives
        del a
        return b.sum()

    assert bench.peak_memory_mb(step, torch.device("cpu")) == pytest.approx(8.0, abs=0.1)


def test_interleaved_rounds_rotate_the_order():
    calls = []
    steps = {key: (lambda key=key: calls.append(key)) for key in "abc"}
    times = bench.interleaved_times(steps, warmup=1, iters=3, device=torch.device("cpu"), tick=lambda: None)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert all(len(v) == 3 for v in times.values())


def test_synthetic_targets_are_valid():
    targets = bench.synthetic_targets(4, 64, 80, torch.device("cpu"), seed=3)
    validate_targets(targets, num_classes=80, batch_size=4)
    for target in targets:
        assert ((target["boxes"] >= 0) & (target["boxes"] <= 64)).all()
        assert (target["labels"].sum(dim=1) >= 1).all()


def test_percentile_interpolates():
    assert bench.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert bench.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
