"""`evad train` and `evad eval` end to end on the tiny in-memory dataset."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import evad.engine.eval_checkpoint as eval_checkpoint_module
import evad.engine.run_state as run_state_module
import evad.engine.train as train_module
from evad.cli import main
from evad.engine.train import TrainData
from tiny_data import TinyDataset, loader


@pytest.fixture
def tiny_data(tmp_path, monkeypatch):
    """Replace the dataset builders (which read real files) by the tiny dataset."""
    val_set = TinyDataset(6, flip=False, root=tmp_path / "gt")

    def build_data(config):
        train_set = TinyDataset(8)
        return TrainData(train_set, loader(train_set, 2), val_set, loader(val_set, 3, shuffle=False))

    monkeypatch.setattr(run_state_module, "build_data", build_data)
    monkeypatch.setattr(
        eval_checkpoint_module, "build_val_data", lambda config: (val_set, loader(val_set, 3, False))
    )


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "model: {preset: tiny}\n"
        "data: {format: ava, timestamp_start: 0}\n"
        "train: {epochs: 1, batch_size: 2, base_lr: 1.0e-3, device: cpu, tensorboard: false, log_every: 1}\n"
        f"output_dir: {tmp_path / 'run'}\n"
    )
    return path


def test_train_then_eval(tmp_path, config_file, tiny_data, capsys):
    assert main(["train", "--config", str(config_file), "--no-progress", "train.max_steps=2"]) == 0
    assert "trained 0 epochs and 2 batches of the next (2 steps)" in capsys.readouterr().out
    run = tmp_path / "run"
    assert (run / "last.pt").exists() and (run / "best.pt").exists()

    assert main(["train", "--config", str(config_file), "--no-progress"]) == 2
    assert "--resume auto" in capsys.readouterr().err
    # Resuming a max_steps run finishes its cut epoch, then goes on with the longer schedule.
    assert (
        main(["train", "--config", str(config_file), "--no-progress", "--resume", "auto", "train.epochs=2"])
        == 0
    )
    assert "trained 2 epochs (8 steps)" in capsys.readouterr().out

    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "frame-mAP @ IoU 0.5" in out and "keep rate 0.7" in out and "person_AP" in out
    metrics = json.loads((run / "eval-best" / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0 and (run / "eval-best" / "detections.csv").exists()
    assert 0.0 <= metrics["person_AP"] <= 1.0
    assert metrics["settings"] == {"keep_rate": 0.7, "person_threshold": 0.7}  # how they were made

    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (run / "eval-best" / "metrics.json").unlink()  # a detections.csv alone is not replaced either
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--no-progress"]) == 2
    assert "holds detections.csv" in capsys.readouterr().err
    # The model comes from the checkpoint: a model.* override is refused, not silently ignored.
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(run / "best.pt"),
                "--out",
                str(tmp_path / "e"),
                "model.keep_rate=0.5",
            ]
        )
        == 2
    )
    assert "model.keep_rate: the model comes from the checkpoint" in capsys.readouterr().err
    args = ["eval", "--checkpoint", str(run / "last.pt"), "--config", str(config_file), "--keep-rate", "0.5"]
    assert main([*args, "--no-progress", "eval.batch_size=2"]) == 0
    assert "keep rate 0.5" in capsys.readouterr().out
    assert json.loads((run / "eval-last-kr0.5" / "metrics.json").read_text())["settings"]["keep_rate"] == 0.5


def test_a_relative_data_root_is_stored_absolute(tmp_path, config_file, tiny_data, monkeypatch, capsys):
    """`evad eval --checkpoint` from another folder reads the data the run trained on."""
    monkeypatch.chdir(tmp_path)
    args = ["train", "--config", str(config_file), "--no-progress", "train.max_steps=1", "data.root=synth"]
    assert main(args) == 0
    run = tmp_path / "run"
    assert f"root: {tmp_path / 'synth'}" in (run / "config.yaml").read_text()
    roots = []

    def build_val_data(config):  # stops the evaluation once it knows where the data is
        roots.append(config.data.root)
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_checkpoint_module, "build_val_data", build_val_data)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    main(["eval", "--checkpoint", str(run / "last.pt"), "--no-progress"])
    assert roots == [str(tmp_path / "synth")]


def test_eval_refuses_a_validation_set_of_other_classes(tmp_path, config_file, tiny_data, capsys):
    """As many classes as the model predicts, but other ones (another data.classes): the scores
    were credited to the wrong classes without a word."""
    assert main(["train", "--config", str(config_file), "--no-progress", "train.max_steps=1"]) == 0
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    state["dataset"]["class_ids"] = [c + 1 for c in state["dataset"]["class_ids"]]
    torch.save(state, tmp_path / "other.pt")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "other.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "other.pt: the model predicts classes [2, 3" in err and "the validation set has [1, 2" in err
    assert not (tmp_path / "eval-other").exists()


def test_eval_refuses_an_out_folder_it_cannot_make_before_the_inference(
    tmp_path, config_file, tiny_data, monkeypatch, capsys
):
    assert main(["train", "--config", str(config_file), "--no-progress", "train.max_steps=1"]) == 0
    run = tmp_path / "run"
    capsys.readouterr()
    ran = []
    monkeypatch.setattr(eval_checkpoint_module, "evaluate", lambda *args, **kwargs: ran.append(1))
    for out in (run / "config.yaml", run / "config.yaml" / "e"):  # a file in the way
        assert main(["eval", "--checkpoint", str(run / "best.pt"), "--no-progress", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{run / 'config.yaml'} is not a folder" in err
    assert not ran  # refused before the hour of inference that AVA's validation set takes


def test_cli_errors_are_one_line(tmp_path, config_file, capsys):
    assert main(["train", "--config", str(config_file), "train.epohcs=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "command line" in err and "'train.epochs'" in err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert main(["eval", "--checkpoint", str(tmp_path / "junk.pt")]) == 2
    assert "junk.pt" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--checkpoint", "junk.pt"],
        ["detect", "v.mp4"],  # not blamed on the video
        ["visualize", "tokens", "v.mp4"],
        ["export", "--model", "tiny"],
        ["flops", "--model", "tiny"],
        ["bench", "--model", "tiny", "--keep-rate", "1.0"],
    ],
)
@pytest.mark.parametrize("rate", ["0", "1.5", "nan"])
def test_every_keep_rate_option_takes_only_rates_in_0_1(argv, rate, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--keep-rate", rate] if argv[0] != "bench" else [*argv, rate])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    command = " ".join(argv[:2] if argv[0] == "visualize" else argv[:1])
    assert (
        err.splitlines()[-1] == f"evad {command}: error: argument --keep-rate: must be in (0, 1], got {rate}"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["detect", "v.mp4", "--person-treshold", "0.5"],
            "evad detect: error: unrecognized arguments: --person-treshold 0.5 "
            "(did you mean --person-threshold?)",
        ),
        (
            ["evaluate", "tubes", "--groundtruth", "g.pkl", "--detections", "d.csv", "--bogus"],
            "evad evaluate tubes: error: unrecognized arguments: --bogus",
        ),
    ],
)
def test_an_unknown_option_is_named_with_its_commands_usage(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(f"usage: evad {argv[0]}") and expected in err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "train" in out and "eval" in out


def test_help_and_usage_errors_do_not_wait_for_torch():
    """`import evad` imported torch and the models (about 1.5 s) before `evad --help` printed; the
    package's names now load on first use, and `evad.<submodule>` still works after `import evad`."""
    script = (
        "import sys, evad, evad.cli\n"
        "for argv in (['--help'], ['train', '--help'], ['train']):\n"
        "    try:\n"
        "        evad.cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert callable(evad.create_model) and callable(evad.inference.load_detector)\n"
        "assert 'torch' in sys.modules and 'create_model' in dir(evad)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_overrides_may_sit_between_options(tmp_path, config_file, tiny_data, capsys):
    args = ["train", "train.max_steps=1", "--config", str(config_file), "train.epochs=3", "--no-progress"]
    assert main([*args, "train.log_every=1"]) == 0
    assert "trained 0 epochs and 1 batch of the next (1 steps)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # an unknown option is still refused
        main(["train", "--config", str(config_file), "--no-such-option"])


def test_a_closed_output_pipe_ends_quietly(tmp_path):
    """`evad ... | head` must not end in a BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before evad prints anything
    args = ["data", "synth", "--out", str(tmp_path / "s"), "--videos", "2", "--seconds", "3", "--no-progress"]
    command = [sys.executable, "-c", "import sys; from evad.cli import main; sys.exit(main())", *args]
    try:
        done = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 141 and done.stderr == b""


def test_under_torchrun_only_rank_0_prints_what_every_process_would(
    tmp_path, config_file, capsys, monkeypatch
):
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--config", str(config_file), "train.epohcs=2"]) == 2
    assert capsys.readouterr().err == ""  # rank 0 says it
    monkeypatch.setenv("RANK", "0")
    assert main(["train", "--config", str(config_file), "train.epohcs=2"]) == 2
    assert capsys.readouterr().err.count("unknown key 'train.epohcs'") == 1


def test_sigterm_during_evaluation_saves_the_epoch(tmp_path, config_file, tiny_data, capsys, monkeypatch):
    """SIGTERM (torchrun, SLURM, Kubernetes) stops training as Ctrl-C does: the epoch is kept."""

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler interrupts this

    def unhandled(signum, frame):  # without evad's handler the test fails instead of ending pytest
        raise AssertionError("evad train did not handle SIGTERM")

    monkeypatch.setattr(train_module, "evaluate", terminated)
    original = signal.signal(signal.SIGTERM, unhandled)
    try:
        assert main(["train", "--config", str(config_file), "--no-progress", "train.max_steps=2"]) == 130
        assert signal.getsignal(signal.SIGTERM) is unhandled  # evad's handler is gone afterwards
    finally:
        signal.signal(signal.SIGTERM, original)
    assert "evad: interrupted" in capsys.readouterr().err
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["global_step"] == 2 and state["eval_pending"]


def test_sigterm_stops_any_command_as_ctrl_c_does(tmp_path, capsys, monkeypatch):
    """SIGTERM (`kill`, a job scheduler's time limit) during `evad data synth`: its half-written
    folder is removed and it ends with 130, as after Ctrl-C, not killed with the folder left behind."""
    from evad.data.synthetic import simulate_video, writer

    calls = []

    def terminated(*args, **kwargs):
        if calls:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler interrupts this
        calls.append(1)
        return simulate_video(*args, **kwargs)

    def unhandled(signum, frame):  # without evad's handler the test fails instead of ending pytest
        raise AssertionError("evad data synth did not handle SIGTERM")

    monkeypatch.setattr(writer, "simulate_video", terminated)
    original = signal.signal(signal.SIGTERM, unhandled)
    try:
        argv = ["data", "synth", "--out", str(tmp_path / "synth"), "--videos", "3", "--size", "64", "80"]
        assert main([*argv, "--seconds", "4", "--no-progress"]) == 130
        assert signal.getsignal(signal.SIGTERM) is unhandled  # evad's handler is gone afterwards
    finally:
        signal.signal(signal.SIGTERM, original)
    assert capsys.readouterr().err == "evad: interrupted\n"
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_the_parser_is_built_is_one_line(capsys, monkeypatch):
    """The sub-commands' modules take 0.1 s to import before any command runs: Ctrl-C there is
    "interrupted" and 130 too, not a traceback."""
    import evad.cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(evad.cli, "build_parser", interrupted)
    try:
        code = main(["flops", "--model", "tiny"])
    except KeyboardInterrupt:  # not raised on: it would end pytest
        pytest.fail("Ctrl-C while the parser was built escaped evad.cli.main")
    assert code == 130
    assert capsys.readouterr().err == "evad: interrupted\n"


def test_a_dataloader_worker_ended_by_the_same_sigterm_is_the_interruption(capsys, monkeypatch):
    """SIGTERM to a whole job also ends its DataLoader workers; PyTorch's SIGCHLD handler then raises
    "worker is killed by signal" while the KeyboardInterrupt unwinds: one line, not a traceback."""
    import evad.cli.flops

    def terminated(args):
        try:
            raise KeyboardInterrupt  # what evad's SIGTERM handler raises
        except KeyboardInterrupt:
            raise RuntimeError("DataLoader worker (pid 123) is killed by signal: Terminated. ") from None

    monkeypatch.setattr(evad.cli.flops, "run", terminated)
    assert main(["flops", "--model", "tiny"]) == 130
    assert capsys.readouterr().err == "evad: interrupted\n"


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                "you tried to allocate 76800000000 bytes. Error code 12 (Cannot allocate memory)"
            ),
            "evad: error: out of CPU memory: one allocation needed 71.5 GiB;",
        ),
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total"),
            "evad: error: out of GPU memory: one allocation needed 2.00 GiB;",
        ),
        (  # NumPy's (`evad data synth --size 100000 100000`)
            MemoryError("Unable to allocate 169. GiB for an array with shape (100000, 100000, 3, 6)"),
            "evad: error: out of CPU memory: one allocation needed 169 GiB;",
        ),
    ],
)
def test_running_out_of_memory_is_one_line(error, line, monkeypatch, capsys):
    """A batch or input too big for the machine is a resource limit, not a bug: no traceback."""

    def allocate(args):
        raise error

    monkeypatch.setattr("evad.cli.flops.run", allocate)
    assert main(["flops", "--model", "tiny"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1


def test_other_runtime_errors_keep_their_traceback(monkeypatch):
    def broken(args):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr("evad.cli.flops.run", broken)
    with pytest.raises(RuntimeError, match="mat1"):
        main(["flops", "--model", "tiny"])


def test_eval_under_torchrun_says_once_that_the_model_comes_from_the_checkpoint(
    tmp_path, config_file, tiny_data, monkeypatch, caplog
):
    """The settings are read before the process group is joined, so every process logged it."""
    assert main(["train", "--config", str(config_file), "--no-progress", "train.max_steps=1"]) == 0
    other = tmp_path / "other.yaml"  # another model section: the checkpoint's is used
    other.write_text(config_file.read_text().replace("{preset: tiny}", "{preset: tiny, keep_rate: 0.5}"))
    settings = (tmp_path / "run" / "last.pt", other, (), None, tmp_path / "e", False)
    for rank, logged in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        caplog.clear()
        with caplog.at_level("INFO", logger="evad.engine.eval_checkpoint"):
            eval_checkpoint_module._checkpoint_settings(*settings)
        assert ("taken from the checkpoint" in caplog.text) == logged, rank
