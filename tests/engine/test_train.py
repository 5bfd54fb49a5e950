"""The training loop: outputs, exact resume, output-directory protection, accumulation, logging."""

import copy
import json
import logging
import re
import sys

import pytest
import torch

import evad.engine.train as engine
from evad.config import load_config
from evad.engine import checkpoint as ckpt
from evad.engine.epoch import train_one_epoch
from evad.engine.optim import build_optimizer, build_scheduler
from evad.engine.train import TrainData, train, with_absolute_data_root
from evad.errors import UserError
from evad.losses import SetCriterion
from evad.models.detector import EVAD
from evad.models.factory import build_criterion, build_model, get_config
from tiny_data import TinyDataset, loader


def make_config(out, *extra):
    return load_config(
        None,
        [
            "model.preset=tiny",
            "model.drop_path_rate=0.1",  # the model draws random numbers too
            "train.epochs=2",
            "train.batch_size=2",
            "train.base_lr=1e-3",
            "train.log_every=1",
            "train.device=cpu",
            "train.tensorboard=false",
            f"output_dir={out}",
            *extra,
        ],
    )


def make_data(tmp_path=None, length=8):
    train_set = TinyDataset(length)
    if tmp_path is None:
        return TrainData(train_set, loader(train_set, 2))
    val_set = TinyDataset(6, flip=False, root=tmp_path / "gt")
    return TrainData(train_set, loader(train_set, 2), val_set, loader(val_set, 3, shuffle=False))


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_train_writes_checkpoints_logs_and_evaluations(tmp_path):
    out = tmp_path / "run"
    config = make_config(out, "eval.ava_max_per_keyframe=0", "eval.ava_input_order=true")
    result = train(config, data=make_data(tmp_path), progress=False)
    assert result["epochs"] == 2 and result["global_step"] == 8
    assert 0.0 <= result["best_metric"] <= 1.0
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "log.jsonl", "last.pt", "best.pt", "eval"}
    assert (out / "eval" / "detections.csv").exists() and (out / "eval" / "metrics.json").exists()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["protocol"]["max_detections_per_keyframe"] == 0  # eval.ava_max_per_keyframe
    assert metrics["protocol"]["match_order"] == "input"  # eval.ava_input_order
    assert load_config(out / "config.yaml") == with_absolute_data_root(config)  # data.root made absolute

    records = read_log(out)
    kinds = [r["type"] for r in records]
    assert kinds.count("train") == 8 and kinds.count("epoch") == 2 and kinds.count("eval") == 2
    first = records[0]
    assert first["step"] == 1 and first["epoch"] == 1
    assert first["lr"] == pytest.approx(1e-4) and first["lr_head"] == pytest.approx(8e-4)  # warm-up start
    assert {"loss", "loss_ce", "loss_bbox", "loss_giou", "loss_action", "loss_ce_0", "clips_per_s"} <= set(
        first
    )
    evals = [r for r in records if r["type"] == "eval"]
    assert all("frame_mAP" in r and r["num_keyframes"] == 6 for r in evals)

    last = ckpt.load_checkpoint(out / "last.pt")
    assert last["epoch"] == 2 and last["global_step"] == 8 and last["dataset"]["num_classes"] == 3
    assert {"optimizer", "scheduler", "rng", "config"} <= set(last)
    best = ckpt.load_checkpoint(out / "best.pt")
    assert "optimizer" not in best and best["metrics"]["frame_mAP"] == result["best_metric"]


def test_resume_is_bit_identical(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(make_config(straight), data=make_data(), progress=False)

    interrupted = tmp_path / "interrupted"
    real = engine.train_one_epoch

    def crash_in_second_epoch(*args, epoch, **kwargs):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(*args, epoch=epoch, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(make_config(interrupted), data=make_data(), progress=False)
    monkeypatch.undo()
    assert ckpt.load_checkpoint(interrupted / "last.pt")["epoch"] == 1
    torch.manual_seed(1234)  # whatever ran in between must not matter
    with open(interrupted / "log.jsonl", "ab") as log:  # a line cut short mid-write, not UTF-8
        log.write(b'{"type": "train", "step": 3, "loss": 0.\xff')
    train(make_config(interrupted), resume="auto", data=make_data(), progress=False)

    a = ckpt.load_checkpoint(straight / "last.pt")
    b = ckpt.load_checkpoint(interrupted / "last.pt")
    assert a["global_step"] == b["global_step"] == 8
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # The resumed log continues the interrupted one: same losses at the same steps.
    la = [(r["step"], r["loss"]) for r in read_log(straight) if r["type"] == "train"]
    lb = [(r["step"], r["loss"]) for r in read_log(interrupted) if r["type"] == "train"]
    assert la == lb


def test_output_dir_protection(tmp_path, caplog):
    out = tmp_path / "run"
    config = make_config(out, "train.epochs=1", "train.max_steps=1")
    train(config, data=make_data(), progress=False)
    with pytest.raises(UserError, match=r"--resume auto .* --overwrite"):
        train(config, data=make_data(), progress=False)
    with pytest.raises(UserError, match="contradict"):
        train(config, resume="auto", overwrite=True, data=make_data(), progress=False)
    (out / "stale.txt").write_text("user file")
    train(config, overwrite=True, data=make_data(), progress=False)
    assert (out / "stale.txt").exists()  # only the run's own files are replaced
    with pytest.raises(UserError, match="not found"):
        train(config, resume=str(tmp_path / "nope.pt"), data=make_data(), progress=False)
    (tmp_path / "garbage.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"garbage\.pt"):
        train(config, resume=str(tmp_path / "garbage.pt"), data=make_data(), progress=False)
    fresh = tmp_path / "fresh"
    with caplog.at_level(logging.INFO, logger="evad"):
        result = train(
            make_config(fresh, "train.max_steps=1"), resume="auto", data=make_data(), progress=False
        )
    assert result["global_step"] == 1 and "starting a new run" in caplog.text


def test_an_earlier_runs_files_are_never_replaced_by_accident(tmp_path):
    # A folder with only a config.yaml (the user's own, or a run that died before its first
    # checkpoint) is refused too; --resume auto has nothing to resume there.
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("# my notes\n")
    config = make_config(out, "train.max_steps=1")
    for resume in (None, "auto"):
        with pytest.raises(UserError, match=r"holds config\.yaml\b.*--overwrite"):
            train(config, resume=resume, data=make_data(), progress=False)
    assert (out / "config.yaml").read_text() == "# my notes\n"

    # best.pt without last.pt (an epoch that died after saving it): --resume auto refuses.
    run = tmp_path / "run"
    train(make_config(run, "train.max_steps=1"), data=make_data(tmp_path), progress=False)
    (run / "last.pt").unlink()
    best = (run / "best.pt").read_bytes()
    with pytest.raises(UserError, match=r"no last\.pt to resume"):
        train(make_config(run, "train.max_steps=1"), resume="auto", data=make_data(), progress=False)
    assert (run / "best.pt").read_bytes() == best

    # Another run's checkpoint is not resumed into a folder that holds a run.
    other = tmp_path / "other"
    train(make_config(other, "train.max_steps=1"), data=make_data(), progress=False)
    with pytest.raises(UserError, match="mix the two runs"):
        train(make_config(run), resume=str(other / "last.pt"), data=make_data(), progress=False)
    # ...but may continue in a new folder.
    result = train(
        make_config(tmp_path / "new"), resume=str(other / "last.pt"), data=make_data(), progress=False
    )
    assert result["global_step"] == 8  # the rest of the cut first epoch, then the second one


def test_a_checkpoint_resumed_into_a_new_folder_writes_best_pt_there(tmp_path, monkeypatch):
    # The other folder's best frame-mAP (0.5) belongs to its own best.pt: the new folder's first
    # evaluation (0.25) writes best.pt there, else the new folder never had one.
    scores = iter([0.5, 0.25])
    monkeypatch.setattr(engine, "evaluate", lambda *args, **kwargs: {"frame_mAP": next(scores)})
    other = tmp_path / "other"
    train(make_config(other, "train.epochs=1"), data=make_data(tmp_path), progress=False)
    new = tmp_path / "new"
    result = train(make_config(new), resume=str(other / "last.pt"), data=make_data(tmp_path), progress=False)
    assert result["best_metric"] == 0.25
    assert ckpt.load_checkpoint(new / "best.pt")["metrics"]["frame_mAP"] == 0.25
    assert ckpt.load_checkpoint(new / "last.pt")["best_metric"] == 0.25
    assert ckpt.load_checkpoint(other / "best.pt")["metrics"]["frame_mAP"] == 0.5


def test_resuming_refuses_optimizer_settings_it_would_ignore(tmp_path, caplog):
    out = tmp_path / "run"
    train(make_config(out, "train.epochs=1"), data=make_data(), progress=False)
    for change in ("train.base_lr=1e-4", "train.head_lr_mult=2", "train.weight_decay=0.05"):
        with pytest.raises(UserError, match=rf"{change.split('=')[0]}=.* differs from the run's"):
            train(make_config(out, "train.epochs=2", change), resume="auto", data=make_data(), progress=False)
    # Other changes take effect, and the log says what changed.
    with caplog.at_level(logging.INFO, logger="evad"):
        result = train(make_config(out, "train.epochs=2"), resume="auto", data=make_data(), progress=False)
    assert result["epochs"] == 2 and "train.epochs 1 -> 2" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("train.epochs changed, so the learning-rate schedule is laid out anew" in m for m in warnings)
    assert load_config(out / "config.yaml").train.epochs == 2


def test_resuming_a_finished_run_with_fewer_epochs_is_refused(tmp_path, caplog):
    # It would train nothing, and config.yaml would then claim fewer epochs than were trained.
    out = tmp_path / "run"
    train(make_config(out, "train.epochs=2"), data=make_data(), progress=False)
    with pytest.raises(UserError, match=r"trained 2 epochs, more than train.epochs=1; pass train.epochs=2"):
        train(make_config(out, "train.epochs=1"), resume="auto", data=make_data(), progress=False)
    assert load_config(out / "config.yaml").train.epochs == 2
    with caplog.at_level(logging.INFO, logger="evad"):
        result = train(make_config(out, "train.epochs=2"), resume="auto", data=make_data(), progress=False)
    assert result["global_step"] == 8 and "has trained all its 2 epochs" in caplog.text


def test_resuming_with_other_steps_per_epoch_goes_on_at_the_same_point_of_the_schedule(tmp_path, caplog):
    """2 of 4 epochs done at 4 steps an epoch, then resumed where an epoch is 2 steps (another
    batch size or number of processes): the rest goes on at step 4 of 8, half-way through the
    schedule, not at step 8 of 8 where the LR is already cut."""
    out = tmp_path / "run"
    schedule = ["train.epochs=4", "train.warmup_fraction=0.25", "train.lr_steps=[0.75]"]
    train(make_config(out, *schedule, "train.max_steps=8"), data=make_data(), progress=False)
    halves = TinyDataset(8)
    with caplog.at_level(logging.INFO, logger="evad"):
        result = train(
            make_config(out, *schedule),
            resume="auto",
            data=TrainData(halves, loader(halves, 4)),
            progress=False,
        )
    assert result["global_step"] == 12 and "goes on at step 4 of 8" in caplog.text
    resumed = [r for r in read_log(out) if r["type"] == "train" and r["step"] > 8]
    assert [r["epoch"] for r in resumed] == [3, 3, 4, 4]
    assert [r["lr"] for r in resumed] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])


def test_an_evaluation_that_scores_nan_does_not_block_best_pt(tmp_path, monkeypatch):
    scores = iter([float("nan"), 0.25])
    monkeypatch.setattr(engine, "evaluate", lambda *args, **kwargs: {"frame_mAP": next(scores)})
    result = train(make_config(tmp_path / "run"), data=make_data(tmp_path), progress=False)
    assert result["best_metric"] == 0.25
    assert ckpt.load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 2


def test_a_failed_evaluation_keeps_the_epoch_and_is_owed_on_resume(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise UserError("frame file x.jpg cannot be decoded")

    monkeypatch.setattr(engine, "evaluate", broken)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="cannot be decoded") as err:
        train(make_config(out, "train.epochs=1"), data=make_data(tmp_path), progress=False)
    assert not err.value.every_process  # raised in the epochs: one process's error under torchrun
    state = ckpt.load_checkpoint(out / "last.pt")
    assert state["epoch"] == 1 and state["global_step"] == 4 and state["best_metric"] is None
    assert state["eval_pending"]
    # The frame is fixed and the run resumed: the owed evaluation runs (this was the last epoch).
    monkeypatch.undo()
    result = train(
        make_config(out, "train.epochs=1"), resume="auto", data=make_data(tmp_path), progress=False
    )
    assert result["best_metric"] is not None and (out / "best.pt").exists()
    assert [r["epoch"] for r in read_log(out) if r["type"] == "eval"] == [1]
    assert not ckpt.load_checkpoint(out / "last.pt")["eval_pending"]


def test_an_evaluation_owed_in_a_cut_epoch_keeps_the_cut(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(make_config(straight), data=make_data(), progress=False)

    def broken(*args, **kwargs):
        raise UserError("frame file x.jpg cannot be decoded")

    out = tmp_path / "run"
    monkeypatch.setattr(engine, "evaluate", broken)
    with pytest.raises(UserError):
        train(make_config(out, "train.max_steps=3"), data=make_data(tmp_path), progress=False)
    monkeypatch.undo()
    train(make_config(out, "train.max_steps=3"), resume="auto", data=make_data(tmp_path), progress=False)
    state = ckpt.load_checkpoint(out / "last.pt")
    assert not state["eval_pending"] and state["epoch_batches"] == 3 and len(state["epoch_rng"]) == 1
    train(make_config(out), resume="auto", data=make_data(tmp_path), progress=False)
    a, b = (ckpt.load_checkpoint(run / "last.pt")["model"] for run in (straight, out))
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_resume_auto_starts_again_a_run_that_stopped_before_its_first_checkpoint(tmp_path):
    # A preempted job requeued with the same command: config.yaml and a partial log, no last.pt.
    out = tmp_path / "run"
    out.mkdir()
    config = make_config(out, "train.max_steps=1")
    (out / "config.yaml").write_text(with_absolute_data_root(config).to_yaml())  # as train writes it
    (out / "log.jsonl").write_text('{"type": "train", "step": 1, "loss": 99.0}\n')
    with pytest.raises(UserError, match=r"stopped before its first last\.pt: pass --resume auto"):
        train(config, data=make_data(), progress=False)  # the same command again: what to do
    result = train(config, resume="auto", data=make_data(), progress=False)
    assert result["global_step"] == 1 and 99.0 not in [r.get("loss") for r in read_log(out)]
    # With another config in the folder it is not the same run: refused (see the test above).


def test_a_config_yaml_edited_in_another_encoding_is_another_config(tmp_path):
    """A note in Latin-1 in the run's config.yaml: the folder is refused in one line, as with any
    other config there, instead of a UnicodeDecodeError."""
    out = tmp_path / "run"
    out.mkdir()
    config = make_config(out, "train.max_steps=1")
    text = with_absolute_data_root(config).to_yaml() + "# r\xe9sum\xe9 of the run\n"
    (out / "config.yaml").write_bytes(text.encode("latin-1"))
    for resume in (None, "auto"):
        with pytest.raises(UserError, match=r"holds config\.yaml"):
            train(config, resume=resume, data=make_data(), progress=False)
    assert (out / "config.yaml").read_bytes() == text.encode("latin-1")


def test_resume_auto_keeps_files_it_cannot_tell_are_its_own(tmp_path):
    """A log and evaluation results without a config.yaml are not a run that stopped early."""
    out = tmp_path / "run"
    (out / "eval").mkdir(parents=True)
    (out / "log.jsonl").write_text('{"my": "experiment notes"}\n')
    (out / "eval" / "metrics.json").write_text('{"mAP": 0.5}\n')
    with pytest.raises(UserError, match=r"holds log\.jsonl and eval/metrics\.json of an earlier run"):
        train(make_config(out, "train.max_steps=1"), resume="auto", data=make_data(), progress=False)
    assert (out / "log.jsonl").read_text() == '{"my": "experiment notes"}\n'
    assert (out / "eval" / "metrics.json").read_text() == '{"mAP": 0.5}\n'


def test_a_new_run_does_not_replace_evaluation_results_or_event_files(tmp_path):
    for files in (["eval/metrics.json"], ["eval/detections.csv"], ["tensorboard/events.out.tfevents.1.host"]):
        out = tmp_path / files[0].replace("/", "_")
        for name in files:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text("mine")
        shown = "tensorboard/ event files" if "events" in files[0] else files[0]
        with pytest.raises(UserError, match=rf"already holds {re.escape(shown)}; there is no last\.pt"):
            train(make_config(out, "train.max_steps=1"), data=make_data(), progress=False)
        assert (out / files[0]).read_text() == "mine"


def test_setup_errors_are_the_same_on_every_process(tmp_path):
    out = tmp_path / "run"
    train(make_config(out, "train.max_steps=1"), data=make_data(), progress=False)
    with pytest.raises(UserError, match="already holds") as err:
        train(make_config(out, "train.max_steps=1"), data=make_data(), progress=False)
    assert err.value.every_process  # printed by rank 0 only under torchrun


def test_overwrite_removes_only_what_a_run_wrote(tmp_path):
    out = tmp_path / "run"
    config = make_config(out, "train.max_steps=1")
    train(config, data=make_data(tmp_path), progress=False)
    (out / "eval" / "my_analysis.txt").write_text("notes")
    train(config, overwrite=True, data=make_data(), progress=False)  # no evaluation this time
    assert (out / "eval" / "my_analysis.txt").read_text() == "notes"
    assert not (out / "eval" / "detections.csv").exists() and not (out / "best.pt").exists()


def test_resuming_removes_what_a_killed_checkpoint_save_left(tmp_path, caplog):
    out = tmp_path / "run"
    train(make_config(out, "train.max_steps=1"), data=make_data(), progress=False)
    (out / ".last.pt.k2j4x9.tmp").write_bytes(b"half a checkpoint")
    (out / ".best.pt.a8f1.tmp").write_bytes(b"half a checkpoint")
    with caplog.at_level(logging.INFO, logger="evad"):
        train(make_config(out, "train.max_steps=2"), resume="auto", data=make_data(), progress=False)
    assert not list(out.glob("*.tmp")) and "removed 2 partly written checkpoint file(s)" in caplog.text


def test_an_output_dir_that_cannot_be_a_folder(tmp_path):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        with pytest.raises(UserError, match="is a file, not a folder"):
            train(make_config(out), data=make_data(), progress=False)


def test_max_steps_stops_early(tmp_path):
    result = train(make_config(tmp_path / "run", "train.max_steps=3"), data=make_data(), progress=False)
    assert result["global_step"] == 3 and result["epochs"] == 0 and result["epoch_batches"] == 3
    state = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")
    assert (state["global_step"], state["epoch"], state["epoch_batches"]) == (3, 0, 3)


@pytest.mark.parametrize(("accum", "cuts"), [(1, [3]), (2, [3]), (1, [2, 5])])
def test_a_run_cut_by_max_steps_goes_on_where_it_stopped(tmp_path, accum, cuts):
    # 4 batches an epoch: with accum 2 the cut at step 3 falls after 2 of epoch 2's 4 batches.
    straight = tmp_path / "straight"
    train(make_config(straight, f"train.accum_steps={accum}"), data=make_data(), progress=False)

    cut = tmp_path / "cut"
    for max_steps in cuts:
        config = make_config(cut, f"train.accum_steps={accum}", f"train.max_steps={max_steps}")
        resume = "auto" if max_steps != cuts[0] else None
        assert train(config, resume=resume, data=make_data(), progress=False)["global_step"] == max_steps
        torch.manual_seed(1234)  # whatever ran in between must not matter
    result = train(
        make_config(cut, f"train.accum_steps={accum}"), resume="auto", data=make_data(), progress=False
    )

    a = ckpt.load_checkpoint(straight / "last.pt")
    b = ckpt.load_checkpoint(cut / "last.pt")
    assert result["epochs"] == b["epoch"] == a["epoch"] == 2 and b["epoch_batches"] == 0
    assert a["global_step"] == b["global_step"] == 8 // accum
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    la = [(r["step"], r["loss"]) for r in read_log(straight) if r["type"] == "train"]
    lb = [(r["step"], r["loss"]) for r in read_log(cut) if r["type"] == "train"]
    assert la == lb


def _one_step_gradients(batch_size, accum_steps, length=2):
    torch.manual_seed(0)
    cfg = get_config("tiny", num_classes=3)
    model = build_model(cfg)
    criterion = build_criterion(cfg)
    optimizer = build_optimizer(model, base_lr=0.0)  # gradients only; the weights stay put
    scheduler = build_scheduler(optimizer, 10)
    data = TinyDataset(length, flip=False)
    step, _ = train_one_epoch(
        model,
        criterion,
        loader(data, batch_size, shuffle=False),
        optimizer,
        scheduler,
        epoch=0,
        global_step=0,
        device=torch.device("cpu"),
        accum_steps=accum_steps,
        log_every=100,
        progress=False,
    )
    return step, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_accumulation_matches_the_larger_batch():
    # Each tiny clip has one box, so the batch-2 loss is the mean of the two clips' losses.
    step_big, big = _one_step_gradients(batch_size=2, accum_steps=1)
    step_acc, acc = _one_step_gradients(batch_size=1, accum_steps=2)
    assert step_big == step_acc == 1
    for name in big:  # equal up to float summation order (measured: relative error up to 1.2e-5)
        error = (acc[name] - big[name]).norm() / big[name].norm().clamp_min(1e-12)
        assert error < 1e-4, (name, error.item())
    step, _ = _one_step_gradients(batch_size=1, accum_steps=2, length=3)  # last group of one
    assert step == 2


def test_a_resumed_run_keeps_every_tensorboard_scalar(tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "run"
    train(make_config(out, "train.epochs=1", "train.tensorboard=true"), data=make_data(), progress=False)
    train(make_config(out, "train.tensorboard=true"), resume="auto", data=make_data(), progress=False)
    events = accumulator.EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 9))
    assert [e.step for e in events.Scalars("epoch/loss")] == [4, 8]  # step 4: the checkpoint's own


def test_tensorboard_is_optional(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    config = make_config(tmp_path / "run", "train.max_steps=1", "train.tensorboard=true")
    with caplog.at_level(logging.INFO, logger="evad"):
        train(config, data=make_data(), progress=False)
    assert "tensorboard is not installed" in caplog.text
    assert (tmp_path / "run" / "log.jsonl").exists() and not (tmp_path / "run" / "tensorboard").exists()


def test_tensorboard_scalars_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    config = make_config(tmp_path / "run", "train.max_steps=2", "train.tensorboard=true")
    train(config, data=make_data(), progress=False)
    assert any((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_non_finite_loss_stops_training(tmp_path, monkeypatch):
    real = SetCriterion.weighted_total

    def nan_total(self, losses):
        return real(self, losses) * float("nan")

    monkeypatch.setattr(SetCriterion, "weighted_total", nan_total)
    with pytest.raises(FloatingPointError, match="loss is nan"):
        train(make_config(tmp_path / "run"), data=make_data(), progress=False)


def test_non_finite_predictions_stop_training_as_a_non_finite_loss(tmp_path, monkeypatch):
    # A diverged model predicts NaN: the matcher does not fail on its costs, the loss is NaN and the
    # loop stops with its message (every process alike), not with scipy's ValueError on one process.
    real = EVAD.forward

    def nan_forward(self, *args, **kwargs):
        outputs = real(self, *args, **kwargs)
        outputs["pred_logits"] = outputs["pred_logits"] * float("nan")
        return outputs

    monkeypatch.setattr(EVAD, "forward", nan_forward)
    with pytest.raises(FloatingPointError, match="loss is nan"):
        train(make_config(tmp_path / "run"), data=make_data(), progress=False)


def test_amp_is_ignored_on_cpu(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="evad"):
        train(
            make_config(tmp_path / "run", "train.amp=bf16", "train.max_steps=1"),
            data=make_data(),
            progress=False,
        )
    assert "needs CUDA" in caplog.text


def test_train_returns_the_model_for_further_use(tmp_path):
    result = train(make_config(tmp_path / "run", "train.max_steps=1"), data=make_data(), progress=False)
    state = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert all(torch.equal(v, state[k]) for k, v in copy.deepcopy(result["model"]).state_dict().items())


def test_evaluation_epochs_of_the_configs():
    def evaluated(train_config):
        return [e for e in range(1, train_config.epochs + 1) if engine.is_eval_epoch(e, train_config)]

    # As the official AVA runs: EVAL_PERIOD 5, then every epoch after TEST_AFTER_EPOCH 5.
    assert evaluated(load_config("ava_vit-b_16x4_kr0.7").train) == [5, 6, 7, 8, 9, 10, 11, 12]
    assert evaluated(load_config(None, ["train.eval_every=5"]).train) == [5, 10]
    assert evaluated(load_config(None, ["train.eval_every=4", "train.eval_after=9"]).train) == [
        4,
        8,
        10,
        11,
        12,
    ]


def test_the_loss_window_keeps_its_own_copy_of_a_step_loss():
    """Under torchrun the step's loss is summed over processes in place after the window took it;
    the window's first value aliased it, so the logged loss counted world_size times."""
    from evad.engine.runlog import LossWindow

    window = LossWindow()
    loss = torch.tensor(2.0)
    window.add({"loss": loss}, clips=1)
    loss.mul_(2)  # what torch.distributed.all_reduce(group_loss) does with 2 processes
    window.add({"loss": torch.tensor(4.0)}, clips=1)
    assert window.means() == {"loss": 3.0}


def test_model_options_no_module_accepts_are_a_user_error_before_training(tmp_path):
    """`load_config` refuses these itself; a Config put together in Python is checked when built."""
    out = tmp_path / "run"
    config = make_config(out)
    config.model.overrides["tubelet_size"] = 3
    with pytest.raises(UserError, match=r"^model: num_frames=16 must be a multiple of tubelet_size=3$"):
        train(config, data=make_data(), progress=False)
    assert not (out / "last.pt").exists()


def test_a_log_line_covers_every_step_since_the_previous_one_across_epochs(tmp_path):
    """4 steps an epoch, a line every 3: the line at step 6 holds steps 4, 5 and 6; step 4, the
    last of epoch 1, was in no line when each epoch started a new window."""
    train(make_config(tmp_path / "every"), data=make_data(), progress=False)
    train(make_config(tmp_path / "third", "train.log_every=3"), data=make_data(), progress=False)
    per_step = {r["step"]: r["loss"] for r in read_log(tmp_path / "every") if r["type"] == "train"}
    lines = {r["step"]: r for r in read_log(tmp_path / "third") if r["type"] == "train"}
    assert sorted(lines) == [3, 6]
    for step in (3, 6):
        expected = sum(per_step[s] for s in range(step - 2, step + 1)) / 3
        assert lines[step]["loss"] == pytest.approx(expected, rel=1e-6)
    assert lines[6]["clips_per_s"] > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("scheduler"), "it has no 'scheduler' entry"),
        (lambda s: s.pop("rng"), "it has no 'rng' entry"),
        (lambda s: s.__setitem__("optimizer", [1]), "its 'optimizer' entry is a list"),
        (lambda s: s.__setitem__("epoch", "x"), "its 'epoch' entry is 'x', not a count"),
        (lambda s: s.__setitem__("global_step", -3), "its 'global_step' entry is -3, not a count"),
        (lambda s: s.__setitem__("best_metric", "x"), "its 'best_metric' entry is a str"),
        (lambda s: s.__setitem__("epoch_rng", [1]), "its 'epoch_rng' entry is a list"),
    ],
    ids=["no-scheduler", "no-rng", "optimizer-list", "epoch-str", "step-negative", "best-str", "rng-ints"],
)
def test_a_damaged_last_pt_is_refused_in_one_line(tmp_path, change, message):
    """A last.pt with a training entry missing or of the wrong kind failed with a KeyError or
    TypeError deep in the optimizer, scheduler or RNG restore."""
    run = tmp_path / "run"
    train(make_config(run, "train.max_steps=1"), data=make_data(), progress=False)
    state = torch.load(run / "last.pt", weights_only=True)
    change(state)
    damaged = tmp_path / "damaged.pt"
    torch.save(state, damaged)
    with pytest.raises(UserError, match=f"^{re.escape(f'{damaged}: damaged evad checkpoint ({message}')}"):
        train(make_config(tmp_path / "new"), resume=str(damaged), data=make_data(), progress=False)
