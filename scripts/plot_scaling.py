"""The scaling curve (issue 25): MRR over sources, the clean source and each jitter component against images seen,
from the `mrr` rows of scripts/gpu_runs.py (results/gpu/DATE/recipe_rows.jsonl) and, for comparison, the quick
start's own runs at batch 32 (results/quickstart_scaling.tsv). Draws a PNG with Pillow (torchvision's own
dependency: nothing to install) and prints the table in markdown.

    python scripts/plot_scaling.py results/gpu/2026-12-04/recipe_rows.jsonl assets/scaling.png
"""
import collections
import csv
import glob
import json
import math
import os
import sys

from PIL import Image, ImageDraw, ImageFont

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
QUICK, LAPTOP = os.path.join(RESULTS, "quickstart_scaling.tsv"), os.path.join(RESULTS, "laptop")
RECIPE_EMA = "0.968→1"  # configs/gpu.json's momentum
KEYS = ("mrr", "clean", "grayscale", "solarize", "brightness", "contrast", "saturation", "hue", "rank")
SERIES = (("mrr", "over sources", (0, 0, 0)), ("mrr/clean", "clean source", (31, 119, 180)),
          ("mrr/brightness", "brightness", (255, 127, 14)), ("mrr/contrast", "contrast", (44, 160, 44)),
          ("mrr/saturation", "saturation", (214, 39, 40)), ("mrr/hue", "hue", (148, 103, 189)))


def images_seen(train_row):
    """The images a recipe run trained on: its steps times its batch (rows from before gpu_runs.py recorded the
    batch ran configs/gpu.json's 256)."""
    return train_row["step"] * train_row.get("batch_size", 256)


def load_cpu(paths=None):
    """{images seen: [rows]} of configs/gpu.json as it is now (EMA 0.968→1) trained on the CPU: the rows of
    results/laptop/batch256_*.tsv with that momentum (their `images` column; mrr, clean and jitter components)."""
    cpu = collections.defaultdict(list)
    for path in paths if paths is not None else sorted(glob.glob(os.path.join(LAPTOP, "batch256_*.tsv"))):
        lines = [x for x in open(path) if not x.startswith("#")]
        for r in csv.DictReader(lines, delimiter="\t"):
            if r.get("EMA momentum", "").startswith(RECIPE_EMA) and r.get("images") and r.get("mrr"):
                cpu[int(r["images"])].append({("mrr/" + k if k not in ("mrr", "rank") else k): float(v)
                                              for k, v in r.items() if k in KEYS and v})
    return cpu


def best_mrr(rows):
    """{job: its mrr row scored on the most images}: a seed rescored after the call (gpu_runs.py rescore, 64 images)
    over the call's own evaluation (16), the later row where they tie; what a rescore row does not say (images seen,
    flags) comes from the row it replaces."""
    best = {}
    for r in rows:
        if r.get("what") == "mrr" and "mrr" in r and r.get("mrr_images", 0) >= best.get(r["job"], {}).get(
                "mrr_images", 0):
            best[r["job"]] = dict(best.get(r["job"], {}), **r)
    return best


def load(rows_path):
    """{images seen: [rows]} of the GPU recipe (a cut run counts the images it saw) and the quick start's points."""
    rows = [json.loads(line) for line in open(rows_path)]
    trained = {(r["job"]): r for r in rows if r.get("what") == "train"}
    gpu = collections.defaultdict(list)
    for r in best_mrr(rows).values():
        if not r.get("flags"):  # gpu_runs.py --variants: not the curve
            t = trained.get(r["job"], {})
            seen = images_seen(t) if t.get("cut") else r["images"]
            gpu[seen].append(dict(r, cut=bool(t.get("cut")), step=t.get("step")))
    quick = collections.defaultdict(list)
    if os.path.exists(QUICK):
        for r in csv.DictReader(open(QUICK), delimiter="\t"):
            quick[int(r["images"])].append({"mrr": float(r["mrr"]), "mrr/clean": float(r["clean"])})
    return gpu, quick


def mean(xs):
    return sum(xs) / len(xs)


def draw(gpu, quick, cpu, chance, path, W=900, H=560):
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=13)
    x0, x1, y0, y1 = 80, W - 200, 40, H - 70
    xs = sorted(set(gpu) | set(quick) | set(cpu))
    lo, hi = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    px = lambda n: x0 + (math.log10(n) - lo) / (hi - lo) * (x1 - x0)
    py = lambda v: y1 - v / 0.8 * (y1 - y0)
    d.rectangle([x0, y0, x1, y1], outline="black")
    for v in (0.0, 0.2, 0.4, 0.6, 0.8):
        d.line([x0 - 5, py(v), x1, py(v)], fill=(220, 220, 220))
        d.text((x0 - 40, py(v) - 8), f"{v:.1f}", fill="black", font=small)
    for n in (44_800, 179_200, 716_800, 1_433_600):
        d.line([px(n), y1, px(n), y1 + 5], fill="black")
        d.text((px(n) - 22, y1 + 8), f"{n / 44_800:g}x", fill="black", font=small)
    d.text(((x0 + x1) // 2 - 170, H - 40), "images seen (multiples of the quick start's 44,800)", fill="black",
           font=font)
    d.text((x0, 12), "MRR (bank 256) against images seen: batch 256 (configs/gpu.json) and the quick start",
           fill="black", font=font)
    d.line([x0, py(chance), x1, py(chance)], fill=(150, 150, 150), width=1)
    d.text((x1 - 60, py(chance) - 16), "chance", fill=(120, 120, 120), font=small)
    for i, (key, name, rgb) in enumerate(SERIES):
        pts = [(px(n), py(mean([r[key] for r in gpu[n]]))) for n in sorted(gpu)]
        d.line(pts, fill=rgb, width=3 if key == "mrr" else 2)
        for n in sorted(gpu):
            for r in gpu[n]:
                x, y = px(n), py(r[key])
                d.ellipse([x - 3, y - 3, x + 3, y + 3], outline=rgb, fill=rgb if not r["cut"] else "white")
        d.line([x1 + 15, y0 + 20 * i + 8, x1 + 40, y0 + 20 * i + 8], fill=rgb, width=3)
        d.text((x1 + 45, y0 + 20 * i), name, fill="black", font=small)
    for j, (points, what, on, off) in enumerate(((quick, "batch 32", 6, 4), (cpu, "EMA .968", 2, 4))):
        for key, rgb, i in (("mrr", (0, 0, 0), 0), ("mrr/clean", (31, 119, 180), 1)):
            pts = [(px(n), py(mean([r[key] for r in points[n]]))) for n in sorted(points)]
            for a, b in zip(pts, pts[1:]):
                _dashed(d, a, b, rgb, on, off)
            for n in sorted(points) if j else []:  # the CPU runs: each seed a square
                for r in points[n]:
                    x, y = px(n), py(r[key])
                    d.rectangle([x - 3, y - 3, x + 3, y + 3], outline=rgb, fill=rgb)
            y = y0 + 20 * (len(SERIES) + 1 + 2 * j + i) + 8
            _dashed(d, (x1 + 15, y), (x1 + 40, y), rgb, on, off)
            d.text((x1 + 45, y - 8), ("over sources" if key == "mrr" else "clean") + ", " + what, fill="black",
                   font=small)
    d.text((x1 + 15, y0 + 20 * (len(SERIES) + 6)), "solid: EMA .996, H200\nopen dots: run cut at 82%\n"
           "dashed: quick start\n(batch 32, CPU/GPU)\ndotted, squares: gpu.json\nnow (EMA .968), CPU",
           fill=(80, 80, 80), font=small)
    img.save(path)


def _dashed(d, a, b, rgb, on=6, off=4):
    n = max(1, int(math.hypot(b[0] - a[0], b[1] - a[1]) // (on + off)))
    for k in range(n):
        t0, t1 = k / n, min(1.0, (k + on / (on + off)) / n)
        d.line([a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0, a[0] + (b[0] - a[0]) * t1,
                a[1] + (b[1] - a[1]) * t1], fill=rgb, width=2)


def table(gpu):
    """The scaling table in markdown, one line per images-seen point (scripts/summarize.py renders it too)."""
    keys = ["mrr", "mrr/clean", "mrr/grayscale", "mrr/solarize", "mrr/brightness", "mrr/contrast", "mrr/saturation",
            "mrr/hue", "null", "rank"]
    lines = ["| images seen | runs | " + " | ".join(k.replace("mrr/", "") for k in keys) + " |",
             "|" + "---|" * (len(keys) + 2)]
    for n in sorted(gpu):
        rs = gpu[n]
        cells = [" / ".join(f"{r[k]:.3f}" if k != "rank" else f"{r[k]:.1f}" for r in rs) for k in keys]
        runs = ", ".join(r["job"] + (f" (cut at step {r['step']})" if r["cut"] else "") for r in rs)
        lines.append(f"| {n:,} ({n / 44_800:.1f}x) | {runs} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: python scripts/plot_scaling.py ROWS.jsonl OUT.png")
    gpu, quick = load(argv[0])
    if not gpu:
        sys.exit(f"plot_scaling.py: error: no mrr rows in {argv[0]}")
    chance = next(r["chance"] for rs in gpu.values() for r in rs)
    draw(gpu, quick, load_cpu(), chance, argv[1])
    print(table(gpu))
    print(f"wrote {argv[1]}")


if __name__ == "__main__":
    main(sys.argv[1:])
