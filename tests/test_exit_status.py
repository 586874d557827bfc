"""The exit status of a run stopped by Ctrl-C / SIGTERM (saved, 128 + signal, with loader workers too) or by a NaN
loss (3), for train.py and finetune.py."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import common
import finetune
import train
from test_bad_inputs import BASE, ROOT, TINY


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    """A finished two-step train.py run's checkpoint, for finetune.py."""
    out = tmp_path_factory.mktemp("run")
    train.main(TINY + ["--epochs", "1", "--max_steps", "2", "--out_dir", str(out)])
    return str(out / "latest.pt")


def signal_at_call(n, signum):
    """A wrapper that sends this process `signum` during its n-th call, as a scheduler or Ctrl-C would."""
    calls = {"n": 0}
    def wrap(fn):
        def inner(*a, **k):
            calls["n"] += 1
            if calls["n"] == n:
                os.kill(os.getpid(), signum)
            return fn(*a, **k)
        return inner
    return wrap


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_and_exits_128_plus_signal(tmp_path, monkeypatch, capsys, signum, code):
    out, handler = str(tmp_path / "run"), signal.getsignal(signum)
    monkeypatch.setattr(train, "train_step", signal_at_call(3, signum)(train.train_step))
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--epochs", "3", "--out_dir", out])
    assert e.value.code == code
    err = capsys.readouterr().err
    assert f"stopped by {signal.Signals(signum).name} at step 3; saved {out}/latest.pt" in err
    assert torch.load(os.path.join(out, "latest.pt"), weights_only=True)["step"] == 3  # the step in flight finished
    assert signal.getsignal(signum) is handler  # the previous handler is back


def test_finetune_signal_saves_and_exits_143(ck, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "ft")
    objective = finetune.objective
    def poisoned(*a, **k):
        loss_fn, outputs = objective(*a, **k)
        return signal_at_call(1, signal.SIGTERM)(loss_fn), outputs  # mid-epoch (2 steps per epoch)
    monkeypatch.setattr(finetune, "objective", poisoned)
    with pytest.raises(SystemExit) as e:
        finetune.main([a.format(ck=ck, out=out) for a in BASE["finetune"]] + ["--protocol", "attentive"])
    assert e.value.code == 143 and "stopped by SIGTERM at step 1" in capsys.readouterr().err
    assert torch.load(os.path.join(out, "latest.pt"), weights_only=True)["step"] == 1


def test_finetune_nan_loss_exits_3(ck, tmp_path, monkeypatch, capsys):
    objective = finetune.objective
    def poisoned(*a, **k):
        loss_fn, outputs = objective(*a, **k)
        return (lambda x, y: loss_fn(x, y) * float("nan")), outputs
    monkeypatch.setattr(finetune, "objective", poisoned)
    with pytest.raises(SystemExit) as e:
        finetune.main([a.format(ck=ck, out=str(tmp_path / "ft")) for a in BASE["finetune"]]
                      + ["--protocol", "attentive", "--log_every", "1"])
    err = capsys.readouterr().err
    assert e.value.code == common.EXIT_NONFINITE == 3 and "loss became nan at step 1" in err and "Traceback" not in err


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_the_process_group_with_loader_workers(tmp_path, signum, code):
    """A terminal's Ctrl-C, or a scheduler's SIGTERM, reaches the whole process group, loader workers included (a
    worker killed by it would make the main process raise): no traceback, a checkpoint, exit status 128 + signal."""
    out = tmp_path / "run"
    cmd = [sys.executable, "train.py", *TINY, "--workers", "1", "--epochs", "1000", "--log_every", "1",
           "--out_dir", str(out)]
    p = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for _ in range(600):  # until the first step is logged (at most 120 s)
            if (out / "log.jsonl").exists() or p.poll() is not None:
                break
            time.sleep(0.2)
        os.killpg(p.pid, signum)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == code and "Traceback" not in err, err[-3000:]
    assert f"stopped by {signum.name}" in err and torch.load(out / "latest.pt", weights_only=True)["step"] >= 1
