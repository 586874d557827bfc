"""bench.py runs the real training step and reports every stage (figures are printed, never asserted)."""
import bench


def test_bench_reports_all_stages(capsys):
    out = bench.main("--img_size 16 --patch_size 4 --model micro --pred_depth 1 --pred_width 32 --min_keep 4 "
                     "--batch_size 4 --steps 1 --warmup 1".split())
    stages = set(out["stages_ms"])
    assert {"augment", "target fwd", "context fwd", "predictor fwd", "predictor bwd", "context bwd", "optimizer",
            "EMA"} <= stages
    assert out["ms_per_step"] > 0 and "GFLOP" in capsys.readouterr().out
