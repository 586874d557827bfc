"""Result tables in markdown.

    python scripts/summarize.py [runs/paper/results.tsv]   the paper's tables from scripts/paper_tables.sh's lines
                                                           (table, run, seed, metric, value, seconds): mean ± std over
                                                           seeds, the paper's numbers beside ours
    python scripts/summarize.py --docs [--out FILE]        docs/results.md from every result file under results/
    python scripts/summarize.py --docs --check             exit 1 if docs/results.md is not what --docs writes now

Result files (checked in; nothing else feeds docs/results.md):
  results/**/*.tsv          one table each: `# key: value` lines (title, table, order, config, commit, machine,
                            command, note), then a tab-separated header and rows. A `seed` column groups the rows
                            before it (the run) and joins the seeds' figures after it with " / ".
  results/gpu/DATE/         recipe_rows.jsonl and speed_rows.jsonl of scripts/gpu_runs.py (one JSON row per finished
                            command); results/gpu_meta.json names the machine, commit and commands of each DATE. The
                            scaling table is scripts/plot_scaling.py's (`load`, `table`); paper_tables.tsv, where
                            there is one, is scripts/paper_tables.sh's RES of a GPU call (PROFILE=gpu). Their
                            section is scripts/summarize_gpu.py's.
"""
import collections
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS, DOCS = os.path.join(ROOT, "results"), os.path.join(ROOT, "docs", "results.md")
GPU = os.path.join(RESULTS, "gpu")
# the paper's tables and figures, in the order docs/results.md shows them (a file's `# table:` line); then the rest
ORDER = (("Table 1", "Table 1: the world model needs the action (conditioning)"),
         ("Table 2", "Table 2: harder actions need a bigger predictor (difficulty × capacity)"),
         ("Tables 4 and 8", "Tables 4, 7 and 8: leveraging the world model (finetuning, multitask, probes)"),
         ("Figure 4", "Figure 4: does MRR go with the downstream protocols?"),
         ("recipe", "The laptop recipe: the quick start and its levers"))
CHANCE = {"shape": 100 / 6, "color": 100 / 6, "count": 25.0}  # data.Shapes: 6 / 6 / 4 classes


# ----------------------------------------------------------------------------- the paper's tables (paper_tables.sh)

def read_paper_results(path, collapse_rank):
    """scripts/paper_tables.sh's results.tsv → (values {(table, run, metric): {seed: value}}, seconds by kind, the
    label of its probes (its `# label:` line; files from before that line: color), the collapsed (run, seed) pairs:
    those whose log.jsonl beside the file ends with the target tokens' effective rank below `collapse_rank`)."""
    collapsed, label = set(), "color"
    for log in glob.glob(os.path.join(os.path.dirname(path), "*_s[0-9]*/log.jsonl")):
        last = [json.loads(line) for line in open(log) if '"rank"' in line][-1]
        if last["rank"] < collapse_rank:
            run, seed = os.path.basename(os.path.dirname(log)).rsplit("_s", 1)
            collapsed.add((run, int(seed)))
    val = collections.defaultdict(dict)
    secs = collections.Counter()
    for line in open(path):
        if line.startswith("# label:"):
            label = line.split(":", 1)[1].strip()
        elif line.strip() and not line.startswith("#"):
            table, run, seed, metric, value, sec = line.rstrip("\n").split("\t")
            val[table, run, metric][int(seed)] = float(value)
            secs["pretrain" if table in ("pretrain", "mrr") else table] += int(sec)
    return val, secs, label, collapsed


def paper_tables(path):
    """The paper's tables in markdown from scripts/paper_tables.sh's results.tsv, the paper's numbers beside ours."""
    import numpy as np
    sys.path.insert(0, ROOT)
    from evaluate_mrr import COLLAPSE_RANK  # train.py logs the rank at every log step (evaluate_mrr.token_stats)

    val, secs, label, collapsed = read_paper_results(path, COLLAPSE_RANK)

    def cell(table, run, metric, fmt="{:.3f}", seeds=None):
        by_seed = {k: x for k, x in val.get((table, run, metric), {}).items() if seeds is None or k in seeds}
        v = list(by_seed.values())
        if not v:
            return "–"
        c = sum((run, seed) in collapsed for seed in by_seed)
        return (fmt.format(np.mean(v)) + (f" ± {fmt.format(np.std(v))}" if len(v) > 1 else "")
                + f" ({len(v)}{f', {c} collapsed' if c else ''})")

    out = conditioning_tables(cell) + leverage_tables(cell, label) + multitask_table(val, cell)
    out += mrr_against_probes(val, cell, label)
    out += [f"\nCollapsed runs (final target-token effective rank < {COLLAPSE_RANK:g}): "
            + (", ".join(f"{r} seed {s}" for r, s in sorted(collapsed)) or "none"),
            "\nSummed run time (s; paper_tables.sh runs PAR of them side by side, so wall time is less): "
            + ", ".join(f"{k} {v}" for k, v in sorted(secs.items()))]
    return "\n".join(out)


def conditioning_tables(cell):
    """Tables 1 and 2: MRR by conditioning, and by difficulty × predictor depth."""
    out = ["Table 1: conditioning, MRR (bank 256, chance 0.024); mean ± std over seeds (n)\n",
           "| conditioning | ours | paper |\n|---|---|---|"]
    for c, paper in (("none", "0.00"), ("sequence", "0.82"), ("feature", "0.79")):
        out.append(f"| {c} | {cell('mrr', 'cond_' + c, 'mrr')} | {paper} |")
    out.append(f"| sequence, 4x the images | {cell('mrr', 'long_sequence', 'mrr')} | – |")
    out += ["\nTable 2: difficulty x capacity, MRR; ours: predictor depth 1 / 6 (width 128); paper: 12 / 18 "
            "(width 384)\n", "| augmentation | I-JEPA | depth 1 | depth 6 | paper I-JEPA / 12 / 18 |",
            "|---|---|---|---|---|"]
    for a, name, paper in (("jitter", "jitter", "0.00 / 0.11 / 0.25"), ("iwm", "+ destructive", "0.00 / 0.09 / 0.79"),
                           ("strong", "+ strong jitter", "0.00 / 0.81 / 0.85")):
        d6 = "cond_sequence" if a == "strong" else f"{a}_d6"  # the quick start is the (strong, depth 6) cell
        ij = cell("mrr", "ijepa_d6", "mrr") if a == "jitter" else "(same)"
        out.append(f"| {name} | {ij} | {cell('mrr', a + '_d1', 'mrr')} | {cell('mrr', d6, 'mrr')} | {paper} |")
    return out


def leverage_tables(cell, label):
    """Tables 4 and 8 (seed 0): the finetuning protocols and the probes, a random init of the architecture below."""
    chance = f"; chance {CHANCE[label]:.1f}" if label in CHANCE else ""
    runs = (("ijepa_d6", "I-JEPA", "83.0 / 79.1 / 80.0 / 82.0"),
            ("strong_d1", "IWM Inv-like (depth 1)", "83.3 / 80.5 / 81.3 / 82.7"),
            ("cond_sequence", "IWM Equi-like (depth 6)", "82.9 / 81.5 / 83.3 / 84.4"),
            ("random", "random init (depth 6, no pretraining)", "–"))
    # the random-init row: every module random, so no "pretrained pred"; PROFILE=gpu adds a random predictor at the
    # pretrained one's lr (predictor_samelr_random), shown where a file has it
    same = [cell("table4", run, "predictor_samelr_random", "{:.1f}") for run, _, _ in runs]
    same = same if any(c != "–" for c in same) else None
    extra = "random pred at the pretrained one's lr | " if same else ""
    out = [f"\nTable 4: leveraging the world model, {label} top-1 % (seed 0{chance})\n",
           f"| setting | MRR | encoder FT | frozen enc + random pred | {extra}+ pretrained pred | end-to-end | paper |",
           "|---" * (7 + bool(same)) + "|"]
    for i, (run, name, paper) in enumerate(runs):
        r = "_random" if run == "random" else ""
        cols = [cell("table4", run, m + r, "{:.1f}") if m else "n/a"
                for m in ("encoder", "predictor" if r else "predictor_random", "" if r else "predictor", "end_to_end")]
        cols[2:2] = [same[i]] if same else []
        out.append(f"| {name} | {cell('mrr', run, 'mrr', seeds=[0])} | " + " | ".join(cols) + f" | {paper} |")
    out += [f"\nTable 8: probes on the frozen target encoder, {label} top-1 % (seed 0)\n",
            "| setting | linear | attentive | paper linear / attentive |\n|---|---|---|---|"]
    for run, name, paper in (("ijepa_d6", "I-JEPA", "–"), ("strong_d1", "IWM Inv-like", "74.5 / 77.0"),
                             ("cond_sequence", "IWM Equi-like", "67.5 / 75.1"), ("random", "random init", "–")):
        r = "_random" if run == "random" else ""
        lin, att = (cell("table4", run, m + r, "{:.1f}") for m in ("linear", "attentive"))
        out.append(f"| {name} | {lin} | {att} | {paper} |")
    return out


def multitask_table(val, cell):
    """Table 7: one predictor with a head per label against one single-task predictor per label, and their means."""
    tasks = list(dict.fromkeys(m[len("multi_"):] for t, r, m in list(val) if t == "table7" and m.startswith("multi_")))
    if not tasks:
        return []
    epochs = [sorted(set(val.get(("table7", "cond_sequence", f"epochs_{k}"), {}).values()))
              for k in ("multi", "single")]
    budget = ""  # files from before the epochs lines: the same steps
    if all(len(e) == 1 for e in epochs):
        (em,), (es,) = epochs
        alike = "as many images per head" if em == es * len(tasks) else "the same steps" if em == es else ""
        budget = f"; the multitask predictor {em:g} epochs, each single-task one {es:g}" + (alike and f": {alike}")
    out = [f"\nTable 7: multitask predictor finetuning of the quick start, top-1 % per label, mean ± std over seeds "
           f"(n){budget}\n", "| label | multitask (one predictor) | single-task (one predictor each) |\n|---|---|---|"]
    for kind in ("multi", "single"):  # the mean over the labels, seed by seed
        seeds = set.intersection(*(set(val["table7", "cond_sequence", f"{kind}_{t}"]) for t in tasks))
        val["table7", "cond_sequence", kind + "_mean"] = {
            s: sum(val["table7", "cond_sequence", f"{kind}_{t}"][s] for t in tasks) / len(tasks) for s in seeds}
    for t in tasks + ["mean"]:
        out.append(f"| {t} | " + " | ".join(cell("table7", "cond_sequence", f"{k}_{t}", "{:.1f}")
                                            for k in ("multi", "single")) + " |")
    return out + ["| paper (IWM-Equi, mean of 4 datasets) | 73.5 | 73.4 |"]


def mrr_against_probes(val, cell, label):
    """Table 8 / Figure 4: every pretraining setting's MRR beside its probes, and their correlation across runs."""
    import numpy as np
    out = [f"\nTable 8 / Figure 4, every pretraining setting: MRR and {label} top-1 % of the linear probe and of "
           "predictor finetuning, mean ± std over seeds\n", "| run | MRR | linear | predictor FT |\n|---|---|---|---|"]
    runs = ("cond_none", "cond_sequence", "cond_feature", "jitter_d1", "iwm_d1", "strong_d1", "jitter_d6", "iwm_d6",
            "ijepa_d6", "long_sequence")
    for run in runs:
        for m in ("linear", "predictor"):  # seed 0 of the Table 4 runs was measured there (same protocol and flags)
            val["probe", run, m] = {**val.get(("table8", run, m), {}), **val.get(("table4", run, m), {})}
        out.append(f"| {run} | {cell('mrr', run, 'mrr')} | {cell('probe', run, 'linear', '{:.1f}')} "
                   f"| {cell('probe', run, 'predictor', '{:.1f}')} |")
    pairs = collections.defaultdict(list)  # Figure 4 / §4: does MRR go with predictor FT and against linear probes?
    for run in runs:
        for metric in ("linear", "predictor"):
            for seed, v in val["probe", run, metric].items():
                m = val.get(("mrr", run, "mrr"), {}).get(seed)
                if m is not None:
                    pairs[metric].append((m, v))

    def rank(a):  # average ranks, so tied MRRs (every run at chance) do not depend on the order of the rows
        r = np.empty(len(a))
        r[np.argsort(a)] = np.arange(len(a))
        _, tie = np.unique(a, return_inverse=True)
        return (np.bincount(tie, r) / np.bincount(tie))[tie]

    if pairs:
        out += ["\nFigure 4: correlation with MRR across every pretraining run x seed (paper: predictor ρ 0.93, "
                "linear ρ −0.85)\n", "| protocol | runs | Pearson ρ | Spearman ρ |\n|---|---|---|---|"]
        for metric, p in sorted(pairs.items()):
            x, y = np.array(p).T
            out.append(f"| {metric} | {len(p)} | {np.corrcoef(x, y)[0, 1]:.2f} | "
                       f"{np.corrcoef(rank(x), rank(y))[0, 1]:.2f} |")
    return out


# ----------------------------------------------------------------------------- docs/results.md from results/

def md_table(header, rows):
    esc = lambda c: str(c).replace("|", "\\|") if str(c) != "" else "–"  # noqa: E731
    return "\n".join(["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(map(esc, r)) + " |" for r in rows])


def read_tsv(path):
    """(meta {key: value}, header, rows) of one result file."""
    meta, lines = {}, []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("# ") and ":" in line and not lines:
            key, _, value = line[2:].partition(":")
            meta[key.strip()] = value.strip()
        elif line.strip():
            lines.append(line.split("\t"))
    if not lines:
        raise ValueError(f"{path}: no header row")
    header, rows = lines[0], lines[1:]
    bad = [r for r in rows if len(r) != len(header)]
    if bad:
        raise ValueError(f"{path}: a row has {len(bad[0])} cells, the header {len(header)}: {bad[0]}")
    return meta, header, rows


def grouped(header, rows):
    """Rows with a `seed` column: one row per run (the columns before `seed`), each figure as its seeds' values
    joined with " / " ("v (all n)" if every seed reads the same), and the mean of a numeric `mrr` over two or more
    seeds."""
    if "seed" not in header:
        return header, rows
    k = header.index("seed")
    groups = collections.OrderedDict()
    for r in rows:
        groups.setdefault(tuple(r[:k]), []).append(r)
    out = []
    for key, rs in groups.items():
        cells = [", ".join(r[k] for r in rs)]
        for j in range(k + 1, len(header)):
            vals = [r[j] for r in rs if r[j] != ""]
            text = f"{vals[0]} (all {len(vals)})" if len(vals) > 1 and len(set(vals)) == 1 else " / ".join(vals)
            if header[j] == "mrr" and len(vals) > 1:
                try:
                    text += f" (mean {sum(map(float, vals)) / len(vals):.3f})"
                except ValueError:
                    pass
            cells.append(text)
        out.append(list(key) + cells)
    return header[:k] + ["seeds"] + header[k + 1:], out


def render_tsv(path):
    meta, header, rows = read_tsv(path)
    rel = os.path.relpath(path, ROOT)
    lines = [f"### {meta.get('title', os.path.basename(path))}", ""]
    for key in ("config", "commit", "machine"):
        if key in meta:
            lines.append(f"- {key}: {meta[key]}")
    if "command" in meta:
        lines.append(f"- command: `{meta['command']}`")
    if "note" in meta:
        lines.append(f"- note: {meta['note']}")
    lines += [f"- file: {rel}", "", md_table(*grouped(header, rows)), ""]
    return "\n".join(lines)


def gpu_section(day, meta):
    """The GPU session results/gpu/DAY (scripts/summarize_gpu.py): the recipe and its scaling curve, the linear
    probes, the speed rows, and the paper's tables at that scale."""
    sys.modules.setdefault("summarize", sys.modules[__name__])  # run as a script: summarize_gpu imports this module
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import summarize_gpu
    return summarize_gpu.section(os.path.join(GPU, day), day, meta.get(day, {}))


def render_docs():
    """docs/results.md as a string, from the files under results/ alone."""
    tsvs = sorted(p for p in glob.glob(os.path.join(RESULTS, "**", "*.tsv"), recursive=True)  # not gpu_section's
                  if os.path.relpath(p, RESULTS) != "quickstart_scaling.tsv" and not p.startswith(GPU + os.sep))
    by_table = collections.defaultdict(list)
    for p in tsvs:
        by_table[read_tsv(p)[0].get("table", "other")].append(p)
    out = ["# Results", "",
           "Generated by `python scripts/summarize.py --docs` from the result files under results/: edit those and "
           "rerun it, never this file (tests/test_summarize.py checks that they agree). Every table names the "
           "config, the commit, the machine and the command that made it. \"commit ... (recorded)\" is the commit "
           "that recorded the figures; they were measured on the code just before it. MRR is over the four "
           "sources (clean, grayscale, blur, solarize) unless a column says clean; chance is 0.024 at bank 256. "
           "Shapes is the built-in data set (data.py); the paper's numbers are ImageNet's, beside ours for "
           "direction, not for size.", ""]
    titles = dict(ORDER)
    for key in [k for k, _ in ORDER] + sorted(set(by_table) - set(titles)):
        if key not in by_table:
            continue
        out += [f"## {titles.get(key, key)}", ""]
        out += [render_tsv(p) for p in sorted(by_table[key], key=lambda p: (read_tsv(p)[0].get("order", "9"), p))]
    meta_path = os.path.join(RESULTS, "gpu_meta.json")
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    for day in sorted(os.listdir(GPU)) if os.path.isdir(GPU) else []:
        out.append(gpu_section(day, meta))
    return "\n".join(out).rstrip() + "\n"


def main(argv):
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    if argv and argv[0] == "--docs":
        check, rest = "--check" in argv, [a for a in argv[1:] if a != "--check"]
        out_path, rest = (rest[1], rest[2:]) if rest[:1] == ["--out"] and len(rest) > 1 else (DOCS, rest)
        if rest:
            print(f"summarize.py: error: unexpected {rest[0]!r} (see --help)", file=sys.stderr)
            return 2
        text = render_docs()
        if check:
            same = os.path.exists(out_path) and open(out_path, encoding="utf-8").read() == text
            if not same:
                print(f"summarize.py: {out_path} is stale: run python scripts/summarize.py --docs", file=sys.stderr)
            return 0 if same else 1
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {out_path}")
        return 0
    print(paper_tables(argv[0] if argv else "runs/paper/results.tsv"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
