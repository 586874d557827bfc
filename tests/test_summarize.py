"""scripts/summarize.py turns runs/paper/results.tsv into the README's tables: means and stds over seeds, the
random-init row, collapse flags from the run logs and the MRR-vs-probe correlation."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def summarize(tmp_path, rows, collapsed=()):
    res = tmp_path / "results.tsv"
    res.write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
    for run, seed, rank in collapsed:  # train.py's log.jsonl: the last effective rank decides
        d = tmp_path / f"{run}_s{seed}"
        d.mkdir()
        (d / "log.jsonl").write_text(json.dumps({"step": 1, "rank": 12.0}) + "\n"
                                     + json.dumps({"step": 2, "rank": rank}) + "\n")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "summarize.py"), str(res)],
                       capture_output=True, text=True, check=True)
    return p.stdout.splitlines()


def row(lines, start):
    return next(line for line in lines if line.startswith(start))


def test_tables_from_results(tmp_path):
    rows = [("mrr", "cond_feature", s, "mrr", v, 40) for s, v in ((0, 0.05), (1, 0.07), (2, 0.09))]
    rows += [("mrr", "cond_none", s, "mrr", 0.0239, 40) for s in (0, 1)]
    rows += [("pretrain", "cond_none", 0, "seconds", 100, 100)]
    rows += [("table4", "random", 0, m + "_random", v, 5) for m, v in (("encoder", 58.7), ("predictor", 99.5),
                                                                       ("end_to_end", 15.4))]
    rows += [("table4", "cond_feature", 0, "linear", 70.0, 5)]
    rows += [("table8", "cond_feature", s, "linear", v, 5) for s, v in ((1, 60.0), (2, 50.0))]
    lines = summarize(tmp_path, rows, collapsed=[("cond_none", 1, 1.3), ("cond_feature", 0, 9.0)])
    assert row(lines, "| feature |") == "| feature | 0.070 ± 0.016 (3) | 0.79 |"
    assert row(lines, "| none |") == "| none | 0.024 ± 0.000 (2, 1 collapsed) | 0.00 |"
    # the random-init row reads the *_random metrics and has no pretrained predictor
    assert row(lines, "| random init (depth 6").endswith("| – | 58.7 (1) | 99.5 (1) | n/a | 15.4 (1) | – |")
    # seed 0 of a Table 4 run joins the other seeds of Table 8 in the per-setting table and the correlation
    assert row(lines, "| cond_feature |") == "| cond_feature | 0.070 ± 0.016 (3) | 60.0 ± 8.2 (3) | – |"
    assert row(lines, "| linear | 3 |") == "| linear | 3 | -1.00 | -1.00 |"
    assert row(lines, "Collapsed runs") == "Collapsed runs (final target-token effective rank < 4): cond_none seed 1"
