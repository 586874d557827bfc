"""Unattended runs (issue 27): an error after start ends the run within seconds, with loader workers too; a second
Ctrl-C/SIGTERM exits at once; realistic seeds train, and seeds out of range get one line."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import common
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ("--data shapes --data_length 48 --img_size 16 --patch_size 4 --model micro --pred_depth 1 --pred_width 32 "
        "--min_keep 4 --batch_size 8 --eval_images 0 --device cpu").split()
RAISING_WORKER = """
import sys, torch, data, train
real = data.Shapes.render
def render(self, i):  # the start-up probe reads in this process; the loader worker raises
    if torch.utils.data.get_worker_info() is not None:
        raise RuntimeError("boom in a loader worker")
    return real(self, i)
data.Shapes.render = render
train.main(sys.argv[1:])
"""


def test_an_error_in_a_loader_worker_ends_the_run(tmp_path):
    """Before: a traceback, then a hang in the exit handler (the workers ignore SIGTERM) that only kill -9 ended."""
    t0 = time.time()
    try:
        p = subprocess.run([sys.executable, "-c", RAISING_WORKER, *TINY, "--workers", "2", "--out_dir",
                            str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the run hung after its loader worker raised")
    lines = [line for line in p.stderr.splitlines() if "error:" in line or "Traceback" in line]
    assert p.returncode == common.EXIT_FAILED and lines == [
        "train.py: error: RuntimeError: boom in a loader worker (in a loader worker: --workers 0 shows where)"]
    assert time.time() - t0 < 60


def test_a_second_stop_signal_exits_at_once(monkeypatch):
    killed, exits = [], []
    monkeypatch.setattr(common, "kill_workers", lambda: killed.append(1))
    monkeypatch.setattr(common.os, "_exit", lambda code: exits.append(code))
    stop = common.GracefulStop()
    try:
        stop._request(signal.SIGTERM, None)  # the first: finish the step, save, stop
        assert stop.requested and not exits
        stop._request(signal.SIGTERM, None)  # the second: now, unsaved, workers killed
        assert exits == [143] and killed == [1]
    finally:
        stop.restore()


def test_a_date_seed_trains_and_a_huge_seed_is_one_line(tmp_path, capsys):
    out = train.main(TINY + ["--workers", "0", "--seed", "20240101", "--max_steps", "2", "--out_dir",
                             str(tmp_path / "run")])  # overflowed in data.py's per-sample seeding
    assert out["step"] == 2
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--seed", str(2**40), "--out_dir", str(tmp_path / "huge")])
    assert e.value.code == 2 and not (tmp_path / "huge").exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"train.py: error: --seed must be between -(2**32 - 1) and 2**32 - 1, got {2**40}")


def digest(folder):  # every file's bytes: "untouched" means byte for byte
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_run_folder_belongs_to_one_run(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    train.main(TINY + ["--workers", "0", "--max_steps", "2", "--out_dir", str(a)])
    train.main(TINY + ["--workers", "0", "--max_steps", "1", "--seed", "7", "--out_dir", str(b)])
    before = digest(b)
    with pytest.raises(SystemExit) as e:  # before: B's latest.pt replaced by A's continuation, A's steps in B's log
        train.main(TINY + ["--workers", "0", "--resume", str(a / "latest.pt"), "--max_steps", "3", "--out_dir", str(b)])
    assert e.value.code == 2 and "holds another run" in capsys.readouterr().err and digest(b) == before
    snaps = tmp_path / "snaps"  # snapshots alone: a fresh run would write over them
    snaps.mkdir()
    (snaps / "ep0001.pt").write_bytes(b"a snapshot")
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--workers", "0", "--max_steps", "1", "--out_dir", str(snaps)])
    assert e.value.code == 2 and "already holds a run (ep0001.pt)" in capsys.readouterr().err
    assert (snaps / "ep0001.pt").read_bytes() == b"a snapshot"


def test_resume_drops_log_rows_past_the_checkpoint_and_only_its_own_temp_files(tmp_path, capsys):
    out = tmp_path / "run"
    train.main(TINY + ["--workers", "0", "--max_steps", "2", "--log_every", "1", "--out_dir", str(out)])
    with open(out / "log.jsonl", "a") as f:  # a crash after the checkpoint at step 2 left step 3's row
        f.write('{"step": 3, "loss": 9.0}\n')
    (out / "notes.tmp.20240101").write_text("mine")  # not a name this tool writes
    (out / "latest.pt.tmp.999999999").write_bytes(b"")  # a killed save's, of a process that is gone
    train.main(TINY + ["--workers", "0", "--max_steps", "4", "--log_every", "1", "--resume", "latest", "--out_dir",
                       str(out)])
    steps = [json.loads(line)["step"] for line in open(out / "log.jsonl")]
    assert steps == [1, 2, 3, 4]  # every step once, step 3 from the resumed run
    assert (out / "notes.tmp.20240101").read_text() == "mine" and not (out / "latest.pt.tmp.999999999").exists()
    assert "removed" in capsys.readouterr().err


HOLDER = """
import sys, time, common
common.lock_out_dir(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def test_a_live_runs_folder_is_refused_even_with_overwrite_and_a_dead_runs_lock_is_stale(tmp_path, capsys):
    out = tmp_path / "run"
    train.main(TINY + ["--workers", "0", "--max_steps", "1", "--out_dir", str(out)])
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"  # a live run holds the folder
        before = digest(out)
        for extra in (["--overwrite", "true"], ["--resume", "latest", "--max_steps", "2"]):
            with pytest.raises(SystemExit) as e:
                train.main(TINY + ["--workers", "0", "--out_dir", str(out)] + extra)
            err = capsys.readouterr().err.strip().splitlines()
            assert e.value.code == 2 and err[-1].startswith(f"train.py: error: --out_dir {out} is in use by a live run")
            assert f"pid {holder.pid}" in err[-1] and digest(out) == before  # nothing deleted or written
    finally:
        holder.kill()  # as kill -9 would: the kernel drops its lock
        holder.wait()
    assert train.main(TINY + ["--workers", "0", "--max_steps", "2", "--resume", "latest", "--out_dir", str(out)])[
        "step"] == 2


def test_every_kept_epoch_gets_its_snapshot_also_after_a_kill_mid_save(tmp_path, monkeypatch):
    out, ipe = tmp_path / "run", 6  # 48 images, batch 8
    args = TINY + ["--workers", "0", "--epochs", "3", "--save_every", "2", "--keep_every", "1", "--out_dir", str(out)]
    save = common.save_atomic
    def killed_in_the_second_snapshot(obj, path):
        if path.endswith("ep0002.pt"):
            open(f"{path}.tmp.{os.getpid()}", "wb").write(b"half")  # then the process dies
            raise KeyboardInterrupt("killed")
        save(obj, path)
    monkeypatch.setattr(common, "save_atomic", killed_in_the_second_snapshot)
    with pytest.raises(KeyboardInterrupt):
        train.main(args)
    monkeypatch.setattr(common, "save_atomic", save)
    # before: ep0001.pt was never written with --save_every 2, and a kill during ep0002.pt's save lost it for good
    assert torch.load(out / "ep0001.pt", weights_only=True)["step"] == ipe
    assert torch.load(out / "latest.pt", weights_only=True)["step"] == ipe  # still the epoch before the kill
    first = (out / "ep0001.pt").read_bytes()
    train.main(args + ["--resume", "latest"])
    assert [torch.load(out / f"ep000{e}.pt", weights_only=True)["step"] for e in (1, 2, 3)] == [ipe, 2 * ipe, 3 * ipe]
    assert (out / "ep0001.pt").read_bytes() == first  # a snapshot is never written twice
    assert not [p for p in os.listdir(out) if ".tmp." in p]


FULL_DISK = """
import resource, sys, train
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # ulimit -f: a checkpoint does not fit
train.main(sys.argv[1:])
"""


def test_a_failed_save_is_one_line_and_leaves_no_temp_file(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", FULL_DISK, *TINY, "--workers", "1", "--max_steps", "2", "--out_dir",
                        str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [line for line in p.stderr.splitlines() if "error:" in line or "Traceback" in line]
    assert p.returncode == common.EXIT_FAILED and lines == [
        f"train.py: error: cannot save {out}/latest.pt (the write failed: is the disk full, or a file-size limit "
        "set?); there is no previous one"], p.stderr[-2000:]
    assert sorted(os.listdir(out)) == [common.LOCK, "log.jsonl"]  # no temp file, no latest.pt to resume from


def test_a_stop_during_the_evaluation_saves_that_step(tmp_path, monkeypatch, capsys):
    evaluate = train.in_training_eval
    def stopped_meanwhile(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's pre-emption while the evaluation runs
        return evaluate(*a, **k)
    monkeypatch.setattr(train, "in_training_eval", stopped_meanwhile)
    with pytest.raises(SystemExit) as e:
        train.main([*TINY, "--workers", "0", "--eval_images", "2", "--eval_bank", "4", "--probe_images", "16",
                    "--eval_every", "2", "--max_steps", "6", "--out_dir", str(tmp_path / "run")])
    assert e.value.code == 143 and "stopped by SIGTERM at step 2" in capsys.readouterr().err  # before: step 3
    assert torch.load(tmp_path / "run" / "latest.pt", weights_only=True)["step"] == 2


def test_a_nan_stop_says_whether_a_checkpoint_exists(tmp_path, monkeypatch, capsys):
    loss = train.iwm_loss
    monkeypatch.setattr(train, "iwm_loss", lambda *a, **k: (lambda t: (t[0] * float("nan"), *t[1:]))(loss(*a, **k)))
    with pytest.raises(SystemExit) as e:
        train.main([*TINY, "--workers", "0", "--max_steps", "2", "--out_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == common.EXIT_NONFINITE and "\ntrain.py: error: loss became NaN/Inf before step 2" in err
    assert "no checkpoint was saved before" in err and not (tmp_path / "run" / "latest.pt").exists()
