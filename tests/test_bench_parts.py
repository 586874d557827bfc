"""scripts/bench_parts.py: the token counts that configs/gpu.json's masks give and the ops its step dispatches
(docs/speed.md reads both), and the one-line error for an unknown part."""
import os
import re
import subprocess
import sys

import torch

import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "bench_parts.py")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_parts  # noqa: E402


def test_counts_match_the_steps_masks(capsys):
    threads = torch.get_num_threads()
    try:
        bench_parts.counts()  # sets one thread, as train.py's main process on a GPU
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    n, by50, by100, by300, last = map(int, re.search(r"batch 256: (\d+) token counts in 2,000 steps; met: (\d+) by "
                                                     r"step 50, (\d+) by step 100, (\d+) by step 300; the last new "
                                                     r"one at step (\d+)", lines[0]).groups())
    lengths = lambda step: bench.token_counts(bench_parts.GPU_CFG, step, 256, (8, 8))  # noqa: E731
    first_100 = {lengths(s) for s in range(100)}
    assert by100 == len(first_100) and by50 <= by100 <= by300 <= n  # "by step 100": steps 0..99
    assert lengths(last) not in {lengths(s) for s in range(last)}  # no earlier step had them
    assert n > by300 and 300 <= last < 2000


def test_unknown_part_is_one_line():
    p = subprocess.run([sys.executable, SCRIPT, "nope"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        "bench_parts.py: error: unknown part 'nope'; choose from views, masks, shapes, loader, counts, ops"]


def test_ops_per_stage_add_up_and_the_optimizer_is_fused(capsys):
    threads = torch.get_num_threads()
    try:
        bench_parts.ops()
    finally:
        torch.set_num_threads(threads)
    got = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"step, (.+?): (\d+) computing, (\d+) views",
                                                            capsys.readouterr().out)}
    total = got.pop("in all")
    assert list(got) == ["masks + params", "augment", "target fwd", "context fwd", "predictor fwd", "predictor bwd",
                         "context bwd", "optimizer", "EMA"]  # train_step's stages, in order (bench.py's breakdown)
    computing, views = map(sum, zip(*got.values()))
    assert total[0] == computing and total[1] >= views  # the step returns a detached view after the EMA's lap
    assert got["optimizer"][0] < 20 and got["EMA"] == (1, 0)  # fused; torch's per-tensor loop: ~1,470 for 159 tensors
