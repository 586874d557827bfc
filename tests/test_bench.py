"""bench.py runs the real training step and reports every stage (figures are printed, never asserted);
scripts/gpu_check.sh runs its whole pipeline on the CPU with --smoke and ends in one summary table."""
import os
import subprocess

import pytest
import torch

import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_check.sh")


def test_bench_reports_all_stages(capsys, monkeypatch):
    calls, step = [], bench.train.train_step  # bench times train.py's own step: every pass goes through it
    monkeypatch.setattr(bench.train, "train_step", lambda *a, **k: calls.append((a[1], k.get("lap"))) or step(*a, **k))
    out = bench.main("--img_size 16 --patch_size 4 --model micro --pred_depth 1 --pred_width 32 --min_keep 4 "
                     "--batch_size 4 --steps 1 --warmup 1".split())  # on a GPU where there is one
    stages = set(out["stages_ms"])
    assert {"augment", "target fwd", "context fwd", "predictor fwd", "predictor bwd", "context bwd", "optimizer",
            "EMA"} <= stages
    assert out["ms_per_step"] > 0 and "GFLOP" in capsys.readouterr().out
    # warm-up on a step after the timed ones; first sight of the timed step's token counts, timed, staged, FLOPs
    assert [i for i, _ in calls] == [1, 0, 0, 0, 0] and [lap is not None for _, lap in calls].count(True) == 1
    assert 0 < out["ms_per_step_first"]
    lengths = lambda i: bench.token_counts(dict(bench.CONFIG, min_keep=4), i, 4, (4, 4))  # noqa: E731
    assert out["new_counts_first"] == (lengths(0) != lengths(1))  # step 0's token counts against the warm-up's
    assert out["batch_size"] == 4 and out["gflop_per_image"] > 0 and out["img_per_s"] > 0
    on_gpu = out["device"] != "cpu"
    assert (out["peak_mem_gib"] is not None) == on_gpu and (out["mib_per_image"] is not None) == on_gpu


def test_gpu_check_smoke_prints_summary_table(tmp_path):
    env = dict(os.environ, GPU_CHECK_DIR=str(tmp_path), IJEPA_DIR="")  # the counts below: no side-by-side
    p = subprocess.run(["bash", SCRIPT, "--smoke"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "gpu_check summary: SMOKE" in out
    assert "| check | batch | ms/step | first sight | images/s | MiB/image | MFU %" in out
    for row in ("| pytest: 1 passed", "| ViT-B/16 IWM-Equi 18x384, eager | 4 |", "| ViT-B/16 I-JEPA 6x384, eager | 4 |",
                "| ViT-H/14 IWM-Equi 18x384, eager | 4 |", "| train quickstart", "MRR ", "--compile true"):
        assert row in out, row
    assert out.rstrip().endswith("gpu_check: 5 ok, 0 failed, 2 skipped or cut")  # compile rows: not on CPU
    assert (tmp_path / "summary.md").read_text() == out


def test_gpu_check_time_budget_cuts_rows_not_the_table(tmp_path):
    env = dict(os.environ, GPU_CHECK_DIR=str(tmp_path), GPU_CHECK_BUDGET="5", IJEPA_DIR="")
    p = subprocess.run(["bash", SCRIPT, "--smoke"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("skipped: the time budget is spent") == 5 and "0 ok, 0 failed, 7 skipped" in p.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_check_without_gpu_says_so_and_exits_0():
    p = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.count("\n") == 1 and "no CUDA GPU" in p.stdout
