"""docs/results.md's section for one GPU session, results/gpu/DAY (scripts/summarize.py --docs calls `section`):
recipe_rows.jsonl and speed_rows.jsonl of scripts/gpu_runs.py (one JSON row per finished command), and
paper_tables.tsv, scripts/paper_tables.sh's RES of a GPU call (PROFILE=gpu). The scaling table is
scripts/plot_scaling.py's."""
import collections
import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_scaling as plot  # noqa: E402
import summarize as S  # noqa: E402  (md_table, paper_tables, CHANCE; summarize loads this module, not at import)

sys.path.insert(0, S.ROOT)
from augment import JITTER  # noqa: E402  (the jitter components evaluate_mrr.py scores one by one)


# bench.py's figures in the order of its table, with their formats (peak memory and MFU are None on a CPU)
BENCH = (("ms_per_step", ".1f"), ("ms_per_step_first", ".1f"), ("img_per_s", ",.0f"), ("gflop_per_image", ".2f"),
         ("peak_mem_gib", ".2f"), ("mib_per_image", ".1f"))


def cell(value, spec):
    return "" if value is None else format(value, spec)


def section(folder, day, m):
    """The section of the session in `folder`; m: its entry of results/gpu_meta.json (machine, commit, config,
    commands, note, and a line about each rows file)."""
    out = [f"## The GPU recipe, its scaling curve and speed ({day})", ""]
    out += [f"- {key}: {m[key]}" for key in ("machine", "commit", "config") if key in m]
    out += [f"- {what}: `{cmd}`" for what, cmd in m.get("commands", {}).items()]
    out += [f"- note: {m['note']}"] if "note" in m else []
    out.append("")
    recipe = os.path.join(folder, "recipe_rows.jsonl")
    if os.path.exists(recipe):
        out += recipe_tables(recipe)
    tables = os.path.join(folder, "paper_tables.tsv")
    if os.path.exists(tables):
        out += ["### The paper's tables at this scale", "", f"- file: {os.path.relpath(tables, S.ROOT)}", "",
                S.paper_tables(tables), ""]
    for name in ("speed_rows.jsonl", "recipe_rows.jsonl"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            out += speed_tables(path, m.get("files", {}).get(name))
    return "\n".join(out)


def recipe_tables(recipe):
    """The recipe call's tables: MRR against images seen, the quick start beside it, the variants, the linear probes
    and the training runs."""
    rel = os.path.relpath(recipe, S.ROOT)
    gpu, quick = plot.load(recipe)
    rows = [json.loads(x) for x in open(recipe)]
    start = next((r for r in rows if r.get("stage") == "start"), {})
    out = ["### MRR against images seen: configs/gpu.json and its scaling curve", "",
           f"- file: {rel} (`python scripts/gpu_runs.py {start.get('what', '')}`)",
           "- a cut run counts the images it saw; null: the null action; rank: the target tokens' effective rank",
           "", plot.table(gpu), ""]
    if quick:
        q = list(csv.DictReader(open(plot.QUICK), delimiter="\t"))
        out += ["### For comparison: the quick start at batch 32", "",
                f"- file: {os.path.relpath(plot.QUICK, S.ROOT)}; command: `{q[0]['command']}` ({q[0]['machine']})",
                "", S.md_table(["images seen", "seed", "MRR over sources", "clean", "flags"],
                               [[f"{int(r['images']):,} ({int(r['images']) / 44_800:g}x)", r["seed"], r["mrr"],
                                 r["clean"],
                                 r["command"][4:].strip(", ") if r["command"].startswith("same") else "(the command)"]
                                for r in q]), ""]
    out += goal2_table(rows, rel)
    variants = sorted((r for r in plot.best_mrr(rows).values() if r.get("flags") or r["job"] == "gpu_s0"),
                      key=lambda r: (bool(r.get("flags")), r["job"]))  # the recipe first, not in the runs' finish order
    if any(r.get("flags") for r in variants):
        keys = ("mrr", "mrr/clean", "mrr/brightness", "mrr/contrast", "mrr/saturation", "mrr/hue", "rank")
        out += ["### The recipe's variants: seed 0 of configs/gpu.json with one change", "", f"- file: {rel}", "",
                S.md_table(["run", "flags", "MRR over sources", "clean", "brightness", "contrast", "saturation",
                            "hue", "rank"], [[r["job"], r.get("flags") or "(the recipe)"] + [
                                f"{r[k]:.3f}" if k in r else "" for k in keys] for r in variants]), ""]
    out += probe_table(rows, rel)
    trains = [r for r in rows if r.get("what") == "train" and r.get("stage") == "recipe"]
    if trains:
        out += ["### The training runs of the recipe call", "", f"- file: {rel}", "",
                S.md_table(["run", "seed", "images asked", "steps done", "cut", "exit", "wall s", "images/s",
                            "data wait", "peak GB"],
                           [[r["job"], r.get("seed", ""), f"{r.get('images', 0):,}", r.get("step", ""),
                             "yes" if r.get("cut") else "no", r.get("rc", ""), r.get("wall_s", ""),
                             f"{r['img_per_s']:,.0f}" if "img_per_s" in r else "",
                             f"{100 * r['data_wait']:.1f} %" if "data_wait" in r else "",
                             f"{r['peak_mem_gb']:.2f}" if "peak_mem_gb" in r else ""] for r in trains]), ""]
        out += together(trains)
    return out


def goal2_table(rows, rel):
    """Each seed of configs/gpu.json against issue 25's goal 2, a cell per bar with its figure and ✓ / ✗: at most 10
    minutes from the start to the end of its evaluation (training, its in-run evaluation, evaluate_mrr.py; the
    probes come after), MRR over sources ≥ 0.5, clean source ≥ 0.7, every jitter component ≥ 3× chance, the null
    action at chance, rank ≥ 8, the shape probe ≥ a random init's + 10 points (the random init's row serves every
    seed: finetune.py's seed draws it)."""
    call = {r["job"]: r for r in rows if r.get("what") == "mrr" and r.get("stage") == "recipe" and "mrr" in r}
    mrr = plot.best_mrr(rows)  # the figures: a rescore on more images where there is one
    seeds = sorted(j for j in call if j.startswith("gpu_s") and j[5:].isdigit())
    if not seeds:
        return []
    train = {r["job"]: r for r in rows if r.get("what") == "train" and r.get("stage") == "recipe"}
    top1 = {(r["job"], r["what"]): r.get("top1") for r in rows if str(r.get("what", "")).startswith("linear ")}
    rnd = random_init_top1(rows).get("shape")
    mark = lambda text, ok: f"{text} {'✓' if ok else '✗'}"  # noqa: E731
    table = []
    for job in seeds:
        r = mrr[job]
        minutes = (train.get(job, {}).get("wall_s", float("nan")) + call[job]["wall_s"]) / 60  # on the GPU
        low = min(JITTER, key=lambda c: r.get(f"mrr/{c}", 0.0))
        cells = [mark(f"{minutes:.1f}", minutes <= 10), mark(f"{r['mrr']:.3f}", r["mrr"] >= 0.5),
                 mark(f"{r['mrr/clean']:.3f}", r["mrr/clean"] >= 0.7),
                 mark(f"{low} {r.get(f'mrr/{low}', 0.0):.3f}", r.get(f"mrr/{low}", 0.0) >= 3 * r["chance"]),
                 mark(f"{r['null']:.4f}", r["null"] <= r["chance"] + 1e-3), mark(f"{r['rank']:.1f}", r["rank"] >= 8)]
        ck = top1.get((job, "linear shape checkpoint"))
        cells.append(mark(f"{ck:.1f} vs {rnd:.1f}", ck >= rnd + 10) if ck is not None and rnd is not None else "")
        table.append([job, "yes" if train.get(job, {}).get("cut") else "no", r.get("mrr_images", 16)] + cells)
    return ["### Issue 25's goal 2, seed by seed", "", f"- file: {rel}; chance {mrr[seeds[0]]['chance']:.4f} "
            f"(3× chance: {3 * mrr[seeds[0]]['chance']:.4f}); minutes: the training run plus evaluate_mrr.py, each "
            "run beside the others on the one GPU; scored on: evaluate_mrr.py's images (64: rescored after the call, "
            "`gpu_runs.py rescore`)", "",
            S.md_table(["run", "cut", "scored on", "minutes ≤ 10", "MRR ≥ 0.5", "clean ≥ 0.7",
                        "lowest jitter ≥ 3× chance", "null at chance", "rank ≥ 8", "shape probe ≥ random + 10"],
                       table), ""]


def random_init_top1(rows):
    """{label: top-1 %} of the random-init linear probes: one per label serves every seed of the call (finetune.py's
    seed, not the run's, draws the init)."""
    probes = [r for r in rows if str(r.get("what", "")).startswith("linear ") and r.get("top1") is not None]
    return {r["what"].split()[1]: r["top1"] for r in probes if r["what"].endswith(" random")}


def together(trains):
    """The recipe call's runs as the work of one GPU: the images they trained on over the span from the first start
    to the last end (each run's start-up included; evaluations and probes come after)."""
    if not all("t_s" in r and "wall_s" in r and "step" in r for r in trains):
        return []
    begin, end = min(r["t_s"] - r["wall_s"] for r in trains), max(r["t_s"] for r in trains)
    seen = sum(plot.images_seen(r) for r in trains)
    return [f"All {len(trains)} runs together, {max_at_once(trains)} at most at once: {seen:,} images in "
            f"{end - begin:.0f} s = **{seen / (end - begin):,.0f} images/s** on the one GPU.", ""]


def max_at_once(trains):
    spans = [(r["t_s"] - r["wall_s"], r["t_s"]) for r in trains]
    return max(sum(a <= t < b for a, b in spans) for t, _ in spans)


def probe_table(rows, rel):
    """Linear probes of a checkpoint against a random init of its architecture, with their difference."""
    probes = collections.defaultdict(dict)
    for r in rows:
        if str(r.get("what", "")).startswith("linear ") and "top1" in r:
            _, label, init = r["what"].split()
            probes[(r["job"], label)][init] = r["top1"]
    if not probes:
        return []
    shared = random_init_top1(rows)
    table = []
    for (job, label), v in sorted(probes.items()):
        ck, rnd = v.get("checkpoint"), v.get("random", shared.get(label))
        diff = f"{ck - rnd:+.2f}" if ck is not None and rnd is not None else ""
        chance = f"{S.CHANCE[label]:.1f}" if label in S.CHANCE else ""
        table.append([job, label, chance, ck, rnd, diff])
    return ["### Linear probes of the checkpoint against a random init of its architecture (top-1 %)", "",
            f"- file: {rel}", "", S.md_table(["run", "label", "chance", "checkpoint", "random init", "difference"],
                                             table), ""]


def speed_tables(path, about):
    """A rows file's speed tables: bench.py, the loader alone, the real loop (alone and shared), the profiled loop
    (torch.profiler, then cProfile)."""
    rows = [json.loads(x) for x in open(path)]
    rel = os.path.relpath(path, S.ROOT)
    start = next((r for r in rows if r.get("stage") == "start"), {})
    call = f"- call: `python scripts/gpu_runs.py {start.get('what', '')}`"
    head = lambda title: [f"### {title} ({rel})", "", call] + ([f"- {about}", ""] if about else [""])  # noqa: E731
    out = []
    bench = [r for r in rows if r.get("what") == "bench" and "ms_per_step" in r]
    if bench:
        out += head("bench.py on the quick-start architecture")
        out += [S.md_table(["batch", "ms / step", "first pass ms", "images/s", "GFLOP / image", "peak GiB",
                            "MiB / image", "MFU %"] + list(bench[0].get("stages_ms", {})),
                           [[r["batch_size"]] + [cell(r.get(k), f) for k, f in BENCH] + [
                               cell(None if r.get("mfu") is None else 100 * r["mfu"], ".2f")]
                            + [f"{v:.1f}" for v in r.get("stages_ms", {}).values()] for r in bench]), ""]
    rates = [x for r in rows if r.get("what") == "loader" for x in r.get("rates", [])]
    if rates:
        out += head("train.py's loader alone (scripts/bench_parts.py loader)")
        out += [S.md_table(["workers", "batch", "images/s", "per worker"],
                           [[x["workers"], x["batch"], f"{x['img_per_s']:,}", f"{x['img_per_s'] / x['workers']:,.0f}"]
                            for x in rates]), ""]
    loops = [r for r in rows if r.get("what") == "train" and "runs" in r]
    if loops:
        out += head("The real training loop, configs/gpu.json")
        out += [S.md_table(["job", "runs at once", "steps", "cut", "images/s, total", "images/s per run", "data wait"],
                           [[r["job"], len(r["runs"]), " / ".join(str(x.get("step", "")) for x in r["runs"]),
                             "yes" if any(x.get("cut") for x in r["runs"]) else "no", f"{r['img_per_s_total']:,.0f}",
                             " / ".join(f"{x['img_per_s']:,.0f}" for x in r["runs"] if "img_per_s" in x),
                             " / ".join(f"{100 * x['data_wait']:.1f} %" for x in r["runs"] if "data_wait" in x)]
                            for r in loops]), ""]
    prof = [r for r in rows if r.get("stage") == "profile" and "img_per_s" in r]
    if prof:
        out += head("The real loop under torch.profiler and CUDA's sync debug mode (its tables: logs/profile.txt)")
        out += [S.md_table(["steps", "images/s (slowed by the profiler)", "data wait", "host syncs"],
                           [[r.get("step", ""), f"{r['img_per_s']:,.0f}", f"{100 * r['data_wait']:.1f} %",
                             r.get("syncs", "")] for r in prof]), ""]
    cprof = [r for r in rows if r.get("what") == "cprofile" and r.get("ms_per_step")]
    if cprof:  # loop = next batch + train_step + log_row + the rest; the stages are inside train_step
        out += head("The real loop's main thread under cProfile: ms per step by function (logs/cprofile.txt)")
        keys = list(cprof[0]["ms_per_step"])
        out += [S.md_table(["steps"] + keys, [[r["step"]] + [cell(r["ms_per_step"].get(k), ".1f") for k in keys]
                                              for r in cprof]), ""]
    return out
