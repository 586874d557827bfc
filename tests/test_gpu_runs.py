"""scripts/gpu_runs.py (issue 25's one-call GPU session) end to end on the CPU at toy shapes (--smoke), and
scripts/plot_scaling.py on its rows."""
import json
import os
import subprocess
import sys
import tarfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_session_writes_rows_logs_weights_and_plot(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, "scripts/gpu_runs.py", "speed", "profile", "recipe", "--smoke", "--out", str(out), "--work",
           str(work), "--batches", "4", "--speed_batches", "0", "--share", "1", "--seeds", "0,1", "--curve", "1",
           "--workers", "0", "--variants", "lr2e-3=--lr 0.002 --batch_size 4"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [json.loads(line) for line in open(out / "rows.jsonl")]
    by = {(r["job"], r["what"]): r for r in rows}
    assert by["bench b4", "bench"]["rc"] == 0 and by["bench b4", "bench"]["img_per_s"] > 0
    assert by["train x1", "train"]["runs"][0]["step"] == 4  # --max_steps 4 in the smoke
    loader = by["loader", "loader"]  # bench_parts.py's lines, parsed: 1 worker (and more) at batch 256 and 1024
    assert loader["rc"] == 0 and {(1, 256), (1, 1024)} <= {(r["workers"], r["batch"]) for r in loader["rates"]}
    assert all(r["img_per_s"] > 0 for r in loader["rates"])
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import summarize_gpu  # docs/results.md's tables of these rows: the loader's and the profiled loop's too
    text = "\n".join(summarize_gpu.speed_tables(str(out / "rows.jsonl"), None))
    assert f"| 1 | 256 | {loader['rates'][0]['img_per_s']:,} |" in text
    prof = [x for x in text.split("sync debug mode")[1].split("cProfile")[0].splitlines() if x.startswith("| 4 |")]
    assert len(prof) == 1 and prof[0].endswith("| 0 |")  # the profile's 4 steps, no host sync counted on the CPU
    for job in ("gpu_s0", "gpu_s1", "curve1x_s0"):
        train, mrr = by[job, "train"], by[job, "mrr"]
        assert train["rc"] == 0 and not train["cut"] and train["step"] == 8 and train["batch_size"] == 8  # 64 / 8
        assert mrr["rc"] == 0 and 0 < mrr["chance"] <= mrr["mrr"] <= 1 and mrr["rank"] > 0 and mrr["mrr_images"] == 2
        assert {"mrr/clean", "mrr/brightness", "mrr/hue", "null", "mrr_ci", "mrr_ci/saturation"} <= set(mrr)
    variant = by["gpu_lr2e-3_s0", "mrr"]  # the recipe with one change: its own rows, probes only for the recipe
    assert variant["flags"] == "--lr 0.002 --batch_size 4" and variant["rc"] == 0 and 0 < variant["mrr"] <= 1
    assert by["gpu_lr2e-3_s0", "train"]["batch_size"] == 4 and by["gpu_lr2e-3_s0", "train"]["step"] == 16
    assert "'lr': 0.002" in (work / "logs" / "gpu_lr2e-3_s0.txt").read_text()  # train.py's config line
    assert by["profile", "train"]["rc"] == 0 and by["profile", "train"]["syncs"] == 0  # counted on CUDA only
    cprof = by["cprofile", "cprofile"]  # the main thread's ms per step: the step and its stages inside the loop
    ms, calls = cprof["ms_per_step"], cprof["calls"]
    assert cprof["rc"] == 0 and cprof["step"] == 4 and calls["train_step"] == calls["next batch"] == 4
    assert 0 < ms["masks + params"] + ms["iwm_loss"] + ms["backward"] < ms["train_step"] < ms["loop"]
    assert "| steps | loop | next batch | train_step |" in text
    recipe = "\n".join(summarize_gpu.recipe_tables(str(out / "rows.jsonl")))  # 3 × 8 steps of 8, 16 of 4
    assert "All 4 runs together, " in recipe and " at most at once: 256 images in " in recipe
    probes = [r for r in rows if r["what"].startswith("linear ")]  # every seed's, one random init for them all
    assert sorted((r["job"], r["what"].split()[-1]) for r in probes) == sorted(
        [("gpu_s0", "checkpoint")] * 3 + [("gpu_s0", "random")] * 3 + [("gpu_s1", "checkpoint")] * 3)
    assert all(r["rc"] == 0 and 0 <= r["top1"] <= 100 for r in probes)
    goal = [x for x in recipe.split("goal 2, seed by seed")[1].split("###")[0].splitlines() if x.startswith("| gpu_")]
    assert [x.split(" | ")[0] for x in goal] == ["| gpu_s0", "| gpu_s1"]  # not the variant, not the curve
    ck, rnd = by["gpu_s1", "linear shape checkpoint"]["top1"], by["gpu_s0", "linear shape random"]["top1"]  # shared
    assert goal[1].endswith(f"| {ck:.1f} vs {rnd:.1f} {'✓' if ck >= rnd + 10 else '✗'} |")
    assert rows[-1]["what"] == "done"
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert "runs/gpu_s0/log.jsonl" in names and "logs/gpu_s0_mrr.txt" in names
    for name in ("gpu_s0", "gpu_s1", "gpu_lr2e-3_s0"):  # every seed's and variant's networks, no optimizer state
        ck = torch.load(out / f"{name}.pt", weights_only=True)
        assert {"encoder", "predictor", "target_encoder", "config"} <= set(ck) and "opt" not in ck
    assert not (out / "curve1x_s0.pt").exists()  # a point of the curve is not kept
    png = tmp_path / "scaling.png"
    p = subprocess.run([sys.executable, "scripts/plot_scaling.py", str(out / "rows.jsonl"), str(png)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "| 44,800 (1.0x) | curve1x_s0 |" in p.stdout
    assert "gpu_lr2e-3_s0" not in p.stdout  # a variant is not a point of the curve
    minutes = [x.split(" | ")[3] for x in goal]
    p = subprocess.run([sys.executable, "scripts/gpu_runs.py", "rescore", "--smoke", "--weights", str(out), "--rows",
                        str(out / "rows.jsonl"), "--work", str(work), "--out", str(tmp_path / "re"), "--mrr_images",
                        "3"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [json.loads(line) for line in open(out / "rows.jsonl")]
    again = {r["job"]: r for r in rows if r["stage"] == "rescore"}  # the returned weights, scored on 3 images
    assert sorted(again) == ["gpu_lr2e-3_s0", "gpu_s0", "gpu_s1"] and again["gpu_lr2e-3_s0"]["seed"] == 0
    assert all(r["rc"] == 0 and r["mrr_images"] == 3 for r in again.values())
    recipe = "\n".join(summarize_gpu.recipe_tables(str(out / "rows.jsonl")))
    goal = [x for x in recipe.split("goal 2, seed by seed")[1].split("###")[0].splitlines() if x.startswith("| gpu_")]
    for line, job, before in zip(goal, ("gpu_s0", "gpu_s1"), minutes):  # the rescore's figures, the call's minutes
        cells = line.split(" | ")
        assert cells[2] == "3" and cells[3] == before and cells[4].startswith(f"{again[job]['mrr']:.3f} ")
    assert not (tmp_path / "re" / "logs.tar.gz").exists()
    variants = recipe.split("variants: seed 0 of")[1].split("###")[0]  # the rescored seed 0 once, beside the variant
    lines = [x.split(" | ") for x in variants.splitlines() if x.startswith("| gpu_")]
    assert [x[0] for x in lines] == ["| gpu_s0", "| gpu_lr2e-3_s0"]  # the variant keeps its flags, read on 3 images
    assert lines[1][1] == "--lr 0.002 --batch_size 4" and lines[1][2] == f"{again['gpu_lr2e-3_s0']['mrr']:.3f}"


def test_rescore_without_weights_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "scripts/gpu_runs.py", "rescore", "--smoke", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert p.stderr.strip() == f"gpu_runs.py: error: no gpu_sN.pt or gpu_NAME_sN.pt under --weights {tmp_path}"


def test_a_bad_variant_is_one_line():
    p = subprocess.run([sys.executable, "scripts/gpu_runs.py", "recipe", "--smoke", "--variants", "a b=--lr 1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--variants must be" in p.stderr.strip().splitlines()[-1]


def test_plot_scaling_reads_the_recipes_cpu_runs_by_momentum(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import plot_scaling
    f = tmp_path / "batch256_8x.tsv"
    f.write_text("# title: t\nrun\timages\tEMA momentum\tseed\tmrr\tclean\thue\trank\tshape probe\n"
                 f"a\t358400\t{plot_scaling.RECIPE_EMA} (0.996^8)\t0\t0.3\t0.5\t0.1\t12.0\t30\n"
                 "a\t358400\t0.996→1\t0\t0.2\t0.4\t0.1\t12.0\t30\n"
                 f"b\t358400\t{plot_scaling.RECIPE_EMA}\t1\t0.5\t0.7\t\t9.0\t\n"
                 "random init\t\t\t0\t\t\t\t\t20\n")
    cpu = plot_scaling.load_cpu([str(f)])
    assert list(cpu) == [358400] and [r["mrr"] for r in cpu[358400]] == [0.3, 0.5]
    assert cpu[358400][0] == {"mrr": 0.3, "mrr/clean": 0.5, "mrr/hue": 0.1, "rank": 12.0}
    assert "mrr/hue" not in cpu[358400][1]  # an empty cell is no figure
