"""Markdown tables (README "Results") from the lines scripts/paper_tables.sh appends to runs/paper/results.tsv:
table, run, seed, metric, value, seconds. Mean ± std over seeds; the paper's numbers beside ours."""
import collections
import glob
import json
import os
import sys

import numpy as np

path = sys.argv[1] if len(sys.argv) > 1 else "runs/paper/results.tsv"
rows = [line.rstrip("\n").split("\t") for line in open(path)]
# a run whose target tokens end with an effective rank below evaluate_mrr.COLLAPSE_RANK has collapsed (train.py
# logs "rank" at every log step, evaluate_mrr.token_stats)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evaluate_mrr import COLLAPSE_RANK  # noqa: E402

collapsed = set()
for log in glob.glob(os.path.join(os.path.dirname(path), "*_s[0-9]*/log.jsonl")):
    last = [json.loads(line) for line in open(log) if '"rank"' in line][-1]
    if last["rank"] < COLLAPSE_RANK:
        run, seed = os.path.basename(os.path.dirname(log)).rsplit("_s", 1)
        collapsed.add((run, int(seed)))
val = collections.defaultdict(dict)  # (table, run, metric) -> {seed: value}
secs = collections.Counter()
for table, run, seed, metric, value, s in rows:
    val[table, run, metric][int(seed)] = float(value)
    secs["pretrain" if table in ("pretrain", "mrr") else table] += int(s)


def cell(table, run, metric, fmt="{:.3f}", seeds=None):
    by_seed = {k: x for k, x in val.get((table, run, metric), {}).items() if seeds is None or k in seeds}
    v = list(by_seed.values())
    if not v:
        return "–"
    c = sum((run, seed) in collapsed for seed in by_seed)
    return (fmt.format(np.mean(v)) + (f" ± {fmt.format(np.std(v))}" if len(v) > 1 else "")
            + f" ({len(v)}{f', {c} collapsed' if c else ''})")


print("Table 1: conditioning, MRR (bank 256, chance 0.024); mean ± std over seeds (n)\n")
print("| conditioning | ours | paper |\n|---|---|---|")
for c, paper in (("none", "0.00"), ("sequence", "0.82"), ("feature", "0.79")):
    print(f"| {c} | {cell('mrr', 'cond_' + c, 'mrr')} | {paper} |")
print(f"| sequence, 4x the images | {cell('mrr', 'long_sequence', 'mrr')} | – |")

print("\nTable 2: difficulty x capacity, MRR; ours: predictor depth 1 / 6 (width 128); paper: 12 / 18 (width 384)\n")
print("| augmentation | I-JEPA | depth 1 | depth 6 | paper I-JEPA / 12 / 18 |\n|---|---|---|---|---|")
for a, name, paper in (("jitter", "jitter", "0.00 / 0.11 / 0.25"), ("iwm", "+ destructive", "0.00 / 0.09 / 0.79"),
                       ("strong", "+ strong jitter", "0.00 / 0.81 / 0.85")):
    d6 = "cond_sequence" if a == "strong" else f"{a}_d6"  # the quick start is the (strong, depth 6) cell
    ij = cell("mrr", "ijepa_d6", "mrr") if a == "jitter" else "(same)"
    print(f"| {name} | {ij} | {cell('mrr', a + '_d1', 'mrr')} | {cell('mrr', d6, 'mrr')} | {paper} |")

print("\nTable 4: leveraging the world model, colour top-1 % (seed 0; chance 16.7)\n")
print("| setting | MRR | encoder FT | frozen enc + random pred | + pretrained pred | end-to-end | paper |")
print("|---|---|---|---|---|---|---|")
for run, name, paper in (("ijepa_d6", "I-JEPA", "83.0 / 79.1 / 80.0 / 82.0"),
                         ("strong_d1", "IWM Inv-like (depth 1)", "83.3 / 80.5 / 81.3 / 82.7"),
                         ("cond_sequence", "IWM Equi-like (depth 6)", "82.9 / 81.5 / 83.3 / 84.4"),
                         ("random", "random init (depth 6, no pretraining)", "–")):
    r = "_random" if run == "random" else ""  # the random-init row: every module random, so no "pretrained pred"
    cols = [cell("table4", run, m + r, "{:.1f}") if m else "n/a"
            for m in ("encoder", "predictor" if r else "predictor_random", "" if r else "predictor", "end_to_end")]
    print(f"| {name} | {cell('mrr', run, 'mrr', seeds=[0])} | " + " | ".join(cols) + f" | {paper} |")

print("\nTable 8: probes on the frozen target encoder, colour top-1 % (seed 0)\n")
print("| setting | linear | attentive | paper linear / attentive |\n|---|---|---|---|")
for run, name, paper in (("ijepa_d6", "I-JEPA", "–"), ("strong_d1", "IWM Inv-like", "74.5 / 77.0"),
                         ("cond_sequence", "IWM Equi-like", "67.5 / 75.1"), ("random", "random init", "–")):
    r = "_random" if run == "random" else ""
    lin, att = (cell("table4", run, m + r, "{:.1f}") for m in ("linear", "attentive"))
    print(f"| {name} | {lin} | {att} | {paper} |")

print("\nTable 8 / Figure 4, every pretraining setting: MRR and colour top-1 % of the linear probe and of predictor "
      "finetuning, mean ± std over seeds\n")
print("| run | MRR | linear | predictor FT |\n|---|---|---|---|")
runs = ("cond_none", "cond_sequence", "cond_feature", "jitter_d1", "iwm_d1", "strong_d1", "jitter_d6", "iwm_d6",
        "ijepa_d6", "long_sequence")
for run in runs:
    for m in ("linear", "predictor"):  # seed 0 of the Table 4 runs was measured there (same protocol and flags)
        val["probe", run, m] = {**val.get(("table8", run, m), {}), **val.get(("table4", run, m), {})}
    print(f"| {run} | {cell('mrr', run, 'mrr')} | {cell('probe', run, 'linear', '{:.1f}')} "
          f"| {cell('probe', run, 'predictor', '{:.1f}')} |")

# Figure 4 / §4: across all pretraining runs, does MRR go with predictor finetuning and against linear probing?
pairs = collections.defaultdict(list)
for run in runs:
    for metric in ("linear", "predictor"):
        for seed, v in val["probe", run, metric].items():
            m = val.get(("mrr", run, "mrr"), {}).get(seed)
            if m is not None:
                pairs[metric].append((m, v))
if pairs:
    print("\nFigure 4: correlation with MRR across every pretraining run x seed (paper: predictor ρ 0.93, linear "
          "ρ −0.85)\n")
    print("| protocol | runs | Pearson ρ | Spearman ρ |\n|---|---|---|---|")
    for metric, p in sorted(pairs.items()):
        x, y = np.array(p).T
        def rank(a):  # average ranks, so tied MRRs (every run at chance) do not depend on the order of the rows
            r = np.empty(len(a))
            r[np.argsort(a)] = np.arange(len(a))
            _, tie = np.unique(a, return_inverse=True)
            return (np.bincount(tie, r) / np.bincount(tie))[tie]
        print(f"| {metric} | {len(p)} | {np.corrcoef(x, y)[0, 1]:.2f} | {np.corrcoef(rank(x), rank(y))[0, 1]:.2f} |")

print(f"\nCollapsed runs (final target-token effective rank < {COLLAPSE_RANK:g}): "
      + (", ".join(f"{r} seed {s}" for r, s in sorted(collapsed)) or "none"))
print("\nSummed run time (s; paper_tables.sh runs PAR of them side by side, so wall time is less): "
      + ", ".join(f"{k} {v}" for k, v in sorted(secs.items())))
