"""Two CPU processes (gloo) train the tiny model under torchrun: the replicas stay identical."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from evad.engine import distributed
from evad.engine.checkpoint import load_checkpoint
from evad.engine.distributed import resolve_device
from evad.engine.epoch import train_one_epoch
from evad.engine.optim import build_optimizer, build_scheduler
from evad.errors import UserError
from evad.models.factory import build_criterion, build_model, get_config
from tiny_data import CrowdedFirstClip, loader

HERE = Path(__file__).resolve().parents[1]  # tests/, where tiny_data.py lives

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    sys.path.insert(0, {here!r})
    import torch

    torch.set_num_threads(1)
    from torch.utils.data import DistributedSampler
    from tiny_data import TinyDataset, loader

    from evad.config import load_config
    from evad.engine.train import TrainData, train

    out = Path(sys.argv[1])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.distributed.init_process_group("gloo")  # one group for the three runs below

    def config(run, *extra):
        return load_config(None, [
            "model.preset=tiny", "model.drop_path_rate=0.1", "train.epochs=2", "train.batch_size=1",
            "train.accum_steps=2", "train.base_lr=1e-3", "train.log_every=1", "train.device=cpu",
            "train.tensorboard=false", f"output_dir={{out / run}}", *extra,
        ])

    def data():
        train_set = TinyDataset(8)
        val_set = TinyDataset(5, flip=False, root=out / f"gt{{rank}}")
        # The padded validation shard repeats a keyframe on rank 1; gathering must drop it.
        samplers = (
            DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=0),
            DistributedSampler(val_set, num_replicas=world, rank=rank, shuffle=False),
        )
        return TrainData(train_set, loader(train_set, 1, sampler=samplers[0]), val_set,
                         loader(val_set, 2, sampler=samplers[1]))

    # A run cut by max_steps inside its first epoch, then resumed to the end.
    train(config("cut", "train.max_steps=1"), data=data(), progress=False)
    train(config("cut"), resume="auto", data=data(), progress=False)

    result = train(config("run"), data=data(), progress=False)
    torch.save(result["model"].state_dict(), out / f"rank{{rank}}.pt")
    summary = {{k: v for k, v in result["metrics"].items() if k != "report"}}
    (out / f"rank{{rank}}.json").write_text(json.dumps({{"steps": result["global_step"], **summary}}))
    torch.distributed.destroy_process_group()
    """
)


ONE_STEP = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    sys.path.insert(0, {here!r})
    import torch

    torch.set_num_threads(1)
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import Subset
    from tiny_data import CrowdedFirstClip, loader

    from evad.engine.epoch import train_one_epoch
    from evad.engine.optim import build_optimizer, build_scheduler
    from evad.models.factory import build_criterion, build_model, get_config

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    config = get_config("tiny", num_classes=3)
    model, criterion = build_model(config), build_criterion(config)
    optimizer = build_optimizer(model, base_lr=0.0)
    clips = loader(Subset(CrowdedFirstClip(2, flip=False), [rank]), 1, shuffle=False)
    scheduler = build_scheduler(optimizer, 1)
    train_one_epoch(DistributedDataParallel(model), criterion, clips, optimizer, scheduler,
                    epoch=0, global_step=0, device=torch.device("cpu"), progress=False)
    if rank == 0:
        torch.save({{n: p.grad for n, p in model.named_parameters()}}, Path(sys.argv[1]) / "ddp_grads.pt")

    # A non-finite loss on rank 1 alone stops both processes at the same step.
    if rank == 1:
        total = criterion.weighted_total
        criterion.weighted_total = lambda losses: total(losses) * float("nan")
    try:
        train_one_epoch(DistributedDataParallel(model), criterion, clips, optimizer, scheduler,
                        epoch=0, global_step=1, device=torch.device("cpu"), progress=False)
        stopped = "no"
    except FloatingPointError as err:
        stopped = str(err)
    (Path(sys.argv[1]) / f"nan{{rank}}.txt").write_text(stopped)
    dist.destroy_process_group()
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_two_processes(script: str, tmp_path: Path) -> None:
    """Run `script` (formatted with the tests folder) in 2 processes under torchrun, with tmp_path
    as its argument; fail with its output if it fails."""
    path = tmp_path / "script.py"
    path.write_text(script.format(here=str(HERE)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(path), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_process_training_keeps_replicas_identical(tmp_path):
    torchrun_two_processes(SCRIPT, tmp_path)

    replicas = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.manual_seed(0)  # train() seeds with train.seed before building the model
    initial = build_model(get_config("tiny", num_classes=3)).state_dict()
    assert replicas[0].keys() == replicas[1].keys() == initial.keys()
    for key in initial:
        assert torch.equal(replicas[0][key], replicas[1][key]), key
    changed = [key for key in initial if not torch.equal(replicas[0][key], initial[key])]
    assert len(changed) > 0.9 * len(initial)

    summaries = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # 8 clips / 2 processes / batch 1 / accumulation 2 = 2 steps per epoch.
    assert summaries[0] == summaries[1] and summaries[0]["steps"] == 4
    assert summaries[0]["num_keyframes"] == 5
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert all(torch.equal(saved[k], replicas[0][k]) for k in saved)
    # Each process's drop path and flips go on from its own RNG state at the cut.
    resumed = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert all(torch.equal(saved[k], resumed[k]) for k in saved)
    log = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert sum('"type": "train"' in line for line in log) == 4  # rank 0 alone writes


def test_accumulation_gives_the_gradient_of_more_processes_and_nan_stops_every_process(tmp_path):
    """Two micro-batches of one clip accumulated in one process give the gradient of one clip on
    each of two processes, although the clips hold 4 and 1 people: the box losses are divided by
    the whole group's box count, as DDP's are by the count averaged over processes."""
    torchrun_two_processes(ONE_STEP, tmp_path)
    ddp = torch.load(tmp_path / "ddp_grads.pt", weights_only=True)
    for rank in range(2):  # rank 1's NaN loss stopped rank 0 too
        assert (tmp_path / f"nan{rank}.txt").read_text() == "loss is nan at epoch 1, step 2; stopping"

    torch.manual_seed(0)
    config = get_config("tiny", num_classes=3)
    model, criterion = build_model(config), build_criterion(config)
    optimizer = build_optimizer(model, base_lr=0.0)
    clips = loader(CrowdedFirstClip(2, flip=False), 1, shuffle=False)
    train_one_epoch(
        model,
        criterion,
        clips,
        optimizer,
        build_scheduler(optimizer, 1),
        epoch=0,
        global_step=0,
        device=torch.device("cpu"),
        accum_steps=2,
        progress=False,
    )
    for name, parameter in model.named_parameters():
        assert (parameter.grad is None) == (ddp[name] is None), name
        if parameter.grad is not None:
            torch.testing.assert_close(parameter.grad, ddp[name], rtol=1e-4, atol=1e-7, msg=name)


def test_helpers_without_a_process_group():
    assert distributed.get_rank() == 0 and distributed.get_world_size() == 1
    assert distributed.is_main_process()
    assert distributed.all_reduce_mean({"a": 1.5}) == {"a": 1.5}
    assert distributed.all_gather_objects({"x": 1}) == [{"x": 1}]
    assert distributed.broadcast_object(3) == 3
    distributed.barrier()
    info = distributed.init_from_env("cpu")
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    distributed.cleanup(info)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_devices_this_machine_lacks_are_one_line_errors(monkeypatch):
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(UserError, match=rf"^--device {name}: no CUDA device is available$"):
            resolve_device(name, "--device")


def test_a_cuda_index_past_the_last_device_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(UserError, match=r"train.device cuda:2: this machine has 2 CUDA device\(s\)"):
        resolve_device("cuda:2")


def test_more_processes_than_gpus_is_a_one_line_error(monkeypatch):
    # torchrun --nproc_per_node 2 on a machine with one GPU: the second process names the cause.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(UserError, match=r"LOCAL_RANK 1, but this machine has 1 CUDA device\(s\)"):
        distributed.init_from_env("cuda")
