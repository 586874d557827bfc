"""Issue 25 on one lent GPU, as one call that keeps to a time budget and writes one JSON row per finished command to
OUT/rows.jsonl as it goes (a cut call still reports), plus OUT/logs.tar.gz (every command's output and log.jsonl).

Stages (run in the order given):
  speed    bench.py rows of the quick-start architecture (eager at several batches, then --compile true), what the
           loader delivers alone (scripts/bench_parts.py loader), and the real training loop of configs/gpu.json for
           --speed_steps steps alone, then --share copies at once (images/s, data wait and peak memory from each
           run's log.jsonl)
  profile  the real loop of configs/gpu.json for --speed_steps steps under torch.profiler (host and device time per
           op, in logs/profile.txt) and CUDA's sync debug mode (every host sync, counted by the line that made it),
           then under cProfile (the main thread's ms per step in the loader's next(), train_step and its stages):
           where the loop's time goes beyond bench.py's step
  recipe   configs/gpu.json for --seeds, and the scaling curve: the same recipe at --curve multiples of the quick
           start's 44,800 images (the largest multiple is gpu.json itself, so its seeds are the curve's last point);
           --variants are seed-0 runs of the recipe with other flags (an lr rule, say); each run gets evaluate_mrr.py
           (bank 256) and, for each of the recipe's seeds, linear probes of every label (against one random init of the
           same architecture); seeds' and variants' networks go to OUT/NAME.pt. Runs go --par at a time.
  rescore  after the call, on any machine: evaluate_mrr.py on --mrr_images images (64 halves a jitter component's
           CI) of every seed's and variant's networks that the call returned (--weights: its OUT/gpu_*.pt), one
           `rescore` row each appended to --rows (the call's rows, results/gpu/DAY/recipe_rows.jsonl once committed);
           the goal-2, variants and curve tables then read each run from the row scored on the most images
Every command gets at most what is left of --budget; a training run that reaches it is stopped by SIGTERM (train.py
saves, then exits 143) and its row says "cut". --smoke runs everything on the CPU at toy shapes in seconds
(tests/test_gpu_runs.py). Rows: {"stage", "job", "what", "rc", "wall_s", "cut", ...figures}.

    python scripts/gpu_runs.py speed recipe --out $OUT --budget 540
    python scripts/gpu_runs.py recipe --smoke --out /tmp/smoke
    python scripts/gpu_runs.py rescore --weights FILES_AT --rows results/gpu/DAY/recipe_rows.jsonl --mrr_images 64
"""
import argparse
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK_IMAGES = 44_800  # the quick start's images (configs/quickstart.json)
TOY = ("--device cpu --img_size 16 --patch_size 4 --model micro --pred_depth 1 --pred_width 32 --min_keep 4 "
       "--workers 0 --batch_size 8 --eval_images 2 --eval_bank 4 --probe_images 16").split()
LOCK = threading.Lock()


class Session:
    def __init__(self, args):
        self.args, self.t0 = args, time.time()
        self.deadline = self.t0 + args.budget
        self.runs = os.path.join(args.work, "runs")
        os.makedirs(self.runs, exist_ok=True)
        os.makedirs(args.out, exist_ok=True)
        self.rows = args.rows or os.path.join(args.out, "rows.jsonl")

    def left(self):
        return self.deadline - time.time()

    def row(self, **row):
        row["t_s"] = round(time.time() - self.t0, 1)
        with LOCK:
            with open(self.rows, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)

    def run(self, name, cmd, term_grace=60, reserve=0.0):
        """cmd (argv) in ROOT with stdout+stderr to work/logs/name.txt, within the budget: at the deadline a
        SIGTERM (train.py and finetune.py save and stop), then SIGKILL after term_grace; `reserve` seconds before it for
        a training run, so that its evaluation still fits. (rc, wall, cut, text)."""
        log = os.path.join(self.args.work, "logs", name + ".txt")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        if self.left() - reserve < 5:
            return None, 0.0, True, ""
        t0 = time.time()
        env = dict(os.environ, TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
        with open(log, "w") as f:
            f.write(" ".join(cmd) + "\n")
            f.flush()
            p = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
            cut = False
            try:
                p.wait(timeout=max(self.left() - reserve, 1))
            except subprocess.TimeoutExpired:
                cut = True
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=term_grace)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        with open(log) as f:
            return p.returncode, round(time.time() - t0, 1), cut, f.read()

    def pack(self):
        """Every log and log.jsonl so far in one archive under out (the device tool returns few files)."""
        with LOCK:
            tmp = os.path.join(self.args.out, "logs.tar.gz.tmp")
            with tarfile.open(tmp, "w:gz") as tar:
                tar.add(os.path.join(self.args.work, "logs"), arcname="logs")
                for d in sorted(os.listdir(self.runs)):
                    p = os.path.join(self.runs, d, "log.jsonl")
                    if os.path.exists(p):
                        tar.add(p, arcname=f"runs/{d}/log.jsonl")
            os.replace(tmp, os.path.join(self.args.out, "logs.tar.gz"))


def train_figures(out_dir, skip=1):
    """From a run's log.jsonl: its last step and loss, mean images/s and data wait over the log rows after the
    first `skip` (start-up), peak memory, the target tokens' rank, and the in-training MRR rows."""
    path = os.path.join(out_dir, "log.jsonl")
    rows = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
    tr = [r for r in rows if "img_per_s" in r]
    ev = [{k: r[k] for k in ("step", "mrr", "mrr_chance", "rank") if k in r} for r in rows if "mrr" in r]
    out = {"train_evals": ev}
    if tr:
        steady = tr[skip:] or tr
        out.update(step=tr[-1]["step"], loss=tr[-1]["loss"], rank=tr[-1].get("rank"),
                   img_per_s=sum(r["img_per_s"] for r in steady) / len(steady),
                   data_wait=sum(r["data_wait"] for r in steady) / len(steady),
                   peak_mem_gb=max(r["peak_mem_gb"] for r in tr))
    return out


def mrr_figures(text):
    """evaluate_mrr.py's printout → {mrr, mrr_ci, chance, mrr/<source or jitter component>, mrr_ci/<the same>
    (95 % CI half-widths over the images), rank, var_position, null}."""
    out = {}
    m = re.search(r"MRR over sources ([\d.]+) ± ([\d.]+) .*chance ([\d.]+)", text)
    if m:
        out.update(mrr=float(m.group(1)), mrr_ci=float(m.group(2)), chance=float(m.group(3)))
    for kind, name, v, ci in re.findall(r"^\s+(source|jitter) (\w+)\s+([\d.]+) ± ([\d.]+)", text, re.M):
        out[f"mrr/{name}"], out[f"mrr_ci/{name}"] = float(v), float(ci)
    m = re.search(r"effective rank ([\d.]+), .*position ([\d.]+)", text)
    if m:
        out.update(rank=float(m.group(1)), var_position=float(m.group(2)))
    m = re.search(r"null action \(clean\) ([\d.]+)", text)
    if m:
        out["null"] = float(m.group(1))
    return out


def last_top1(text):
    m = re.findall(r"top1 ([\d.]+)\s*$", text, re.M)
    return float(m[-1]) if m else None


PROFILE_PY = """
import collections, sys, warnings, torch, train
from torch.profiler import ProfilerActivity, profile
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
syncs = collections.Counter()  # every host sync of the loop on CUDA, by the line that made it
if torch.cuda.is_available():
    torch.cuda.set_sync_debug_mode("warn")
    warnings.simplefilter("always")
    warnings.showwarning = lambda msg, cat, file, line, *a: syncs.update([f"{file}:{line}: {str(msg)[:60]}"])
with profile(activities=acts) as prof:
    train.main(sys.argv[1:])
for key in ["self_cpu_time_total"] + (["self_cuda_time_total"] if torch.cuda.is_available() else []):
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))
print("SYNCS " + str(sum(syncs.values())))
for where, n in syncs.most_common(20):
    print(f"  {n:6d}  {where}")
"""


# The main thread's wall time by Python function (cProfile; the loader's worker processes and pin-memory thread are
# not in it): whether the loop's time beyond bench.py's step is in the step itself or around it (the loader's next(),
# logging). cProfile adds ~1 us per Python call, so the Python-heavy parts read a little high.
CPROFILE_PY = """
import cProfile, os, pstats, sys, train
prof = cProfile.Profile()
prof.runcall(train.main, sys.argv[1:])
stats = pstats.Stats(prof)
for (path, _, name), (_, calls, _, cum, _) in stats.stats.items():
    key = os.path.basename(path) + ":" + name
    if key in KEYS.split():
        print(f"FN {key} {calls} {cum:.6f}")
stats.sort_stats("cumulative").print_stats(40)
"""
CPROFILE_KEYS = {  # what the loop does in a step: train.py's loop, the loader's next(), and the step's stages
    "loop": "train.py:loop", "next batch": "dataloader.py:__next__", "train_step": "train.py:train_step",
    "masks + params": "train.py:step_randomness", "make_views": "augment.py:make_views",
    "iwm_loss": "train.py:iwm_loss", "backward": "_tensor.py:backward", "log_row": "train.py:log_row"}


def profile_run(s):
    """The real loop of the recipe under torch.profiler (host and device time by op; its tables in logs/profile.txt)
    and under cProfile (the main thread's ms per step by function; logs/cprofile.txt): where the loop's time goes
    beyond bench.py's step."""
    steps = ["--max_steps", "4" if s.args.smoke else str(s.args.speed_steps), "--eval_every", "0"]
    d = os.path.join(s.runs, "profile")
    rc, wall, cut, text = s.run("profile", [sys.executable, "-c", PROFILE_PY] + train_cmd(s, d, steps)[2:])
    m = re.search(r"^SYNCS (\d+)", text, re.M)  # host syncs over the whole run (CUDA only; the CPU has none)
    s.row(stage="profile", job="profile", what="train", rc=rc, wall_s=wall, cut=cut,
          syncs=int(m.group(1)) if m else None, **train_figures(d))
    d = os.path.join(s.runs, "cprofile")
    code = f"KEYS = {' '.join(CPROFILE_KEYS.values())!r}" + CPROFILE_PY
    rc, wall, cut, text = s.run("cprofile", [sys.executable, "-c", code] + train_cmd(s, d, steps)[2:])
    fig = train_figures(d)
    cum = {key: (int(n), float(t)) for key, n, t in re.findall(r"^FN (\S+) (\d+) ([\d.]+)$", text, re.M)}
    ms = {name: round(1e3 * cum[key][1] / fig["step"], 2) for name, key in CPROFILE_KEYS.items()
          if key in cum and fig.get("step")}
    s.row(stage="profile", job="cprofile", what="cprofile", rc=rc, wall_s=wall, cut=cut, step=fig.get("step"),
          ms_per_step=ms, calls={name: cum[key][0] for name, key in CPROFILE_KEYS.items() if key in cum})


def bench_rows(s, batches, compile_batch=0):
    """bench.py on the quick-start architecture: one fresh process per row (its own CUDA caches)."""
    flags = ["--config", "configs/quickstart.json", "--steps", "20", "--warmup", "5"]
    if s.args.smoke:
        flags = TOY + ["--steps", "1", "--warmup", "1"]
    rows = [(f"bench b{b}", flags + ["--batch_size", str(b)]) for b in batches]
    if compile_batch:
        rows = [(f"bench b{compile_batch} compile", flags + ["--batch_size", str(compile_batch),
                                                               "--compile", "true", "--warmup", "10"])]
    code = "import bench, json, sys; print('ROW ' + json.dumps(bench.main(sys.argv[1:])))"
    for name, argv in rows:
        rc, wall, cut, text = s.run(name.replace(" ", "_"), [sys.executable, "-c", code] + argv)
        m = re.search(r"^ROW (.*)$", text, re.M)
        figures = json.loads(m.group(1)) if m else {}
        s.row(stage="speed", job=name, what="bench", rc=rc, wall_s=wall, cut=cut, **figures)


def loader_row(s):
    """What train.py's loader delivers on this machine with no training step consuming it, at 1, 2 and the config's
    workers (scripts/bench_parts.py loader): whether the workers can feed the loop."""
    rc, wall, cut, text = s.run("loader", [sys.executable, "scripts/bench_parts.py", "loader"])
    rates = [dict(workers=int(w), batch=int(b), img_per_s=int(r))
             for w, b, r in re.findall(r"(\d+) worker\(s\), batch (\d+): (\d+) images/s", text)]
    s.row(stage="speed", job="loader", what="loader", rc=rc, wall_s=wall, cut=cut, rates=rates)


def train_cmd(s, out_dir, extra):
    cmd = [sys.executable, "train.py", "--config", s.args.config, "--out_dir", out_dir, "--overwrite", "true"]
    return cmd + (TOY + ["--data_length", "64"] if s.args.smoke else []) + s.args.train_flags.split() + extra


def speed_runs(s):
    """The real loop of the recipe for speed_steps steps, alone and then `share` copies at once."""
    steps = "4" if s.args.smoke else str(s.args.speed_steps)
    common = ["--max_steps", steps, "--eval_every", "0", "--log_every", "2" if s.args.smoke else "50"]
    sizes = [(1, b) for b in s.args.speed_batches] + ([(s.args.share, 0)] if s.args.share > 1 else [])
    for n, batch in sizes:
        def one(k):
            d = os.path.join(s.runs, f"speed{n}_b{batch}_{k}")
            extra = common + (["--workers", str(s.args.share_workers)] if n > 1 else [])
            extra += ["--batch_size", str(batch)] if batch else []
            rc, wall, cut, _ = s.run(f"speed{n}_b{batch}_{k}", train_cmd(s, d, extra))
            return dict(rc=rc, wall_s=wall, cut=cut, **train_figures(d))
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            res = list(ex.map(one, range(n)))
        total = sum(r.get("img_per_s", 0) for r in res)
        s.row(stage="speed", job=f"train x{n}" + (f" b{batch}" if batch else ""), what="train", runs=res,
              img_per_s_total=total)


def config(s):
    with open(os.path.join(ROOT, s.args.config)) as f:
        return json.load(f)


def recipe_jobs(s):
    """(name, seed, images multiple, extra train.py flags) of every run, longest first so that they start first:
    the recipe's seeds, its --variants (seed 0, the recipe with NAME's flags) and the curve's points."""
    full = config(s)["data_length"] // QUICK_IMAGES
    jobs = [(f"gpu_s{seed}", seed, full, []) for seed in s.args.seeds]
    jobs += [(f"gpu_{name}_s0", 0, full, flags.split()) for name, flags in s.args.variants]
    jobs += [(f"curve{k}x_s0", 0, k, []) for k in s.args.curve if k != full]
    return sorted(jobs, key=lambda j: -j[2])


def recipe_job(s, name, seed, mult, flags):
    d = os.path.join(s.runs, name)
    extra = ["--seed", str(seed), "--workers", str(s.args.workers)] + flags
    if not s.args.smoke:
        extra += ["--data_length", str(mult * QUICK_IMAGES)]
    cmd = train_cmd(s, d, extra)
    rc, wall, cut, _ = s.run(name, cmd, reserve=s.args.reserve)
    batch = ([config(s)["batch_size"]] + [int(v) for k, v in zip(cmd, cmd[1:]) if k == "--batch_size"])[-1]
    s.row(stage="recipe", job=name, what="train", seed=seed, images=mult * QUICK_IMAGES, rc=rc, wall_s=wall, cut=cut,
          batch_size=batch, flags=" ".join(flags), **train_figures(d))
    s.pack()
    ckpt = os.path.join(d, "latest.pt")
    if not os.path.exists(ckpt):
        return
    n, bank = (2, 4) if s.args.smoke else (s.args.mrr_images, 256)
    ev = ["--images", str(n), "--bank", str(bank)] + (["--device", "cpu"] if s.args.smoke else [])
    rc, wall, cut, text = s.run(name + "_mrr", [sys.executable, "evaluate_mrr.py", "--ckpt", ckpt] + ev)
    s.row(stage="recipe", job=name, what="mrr", seed=seed, images=mult * QUICK_IMAGES, rc=rc, wall_s=wall, cut=cut,
          flags=" ".join(flags), mrr_images=n, **mrr_figures(text))
    recipe = name in [f"gpu_s{x}" for x in s.args.seeds]  # one of the recipe's seeds: not a variant, not the curve
    if recipe or flags:  # the seeds' and variants' networks (the CPU probes a variant later), not the curve's
        keep_weights(s, name, ckpt)  # 14 MiB each: 3 seeds and a variant fit the device tool's 64 MiB
    if recipe:  # issue 25 asks every seed for the probe
        probes(s, name, ckpt, random=seed == s.args.seeds[0])
    s.pack()


def keep_weights(s, name, ckpt):
    """The run's networks and config (no optimizer state, 14 MiB for gpu.json) into out: the CPU's downstream tables
    and evaluate_mrr.py on more images later."""
    import torch
    ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    torch.save({k: v for k, v in ck.items() if k not in ("opt", "scaler")}, os.path.join(s.args.out, name + ".pt"))


def probes(s, name, ckpt, random=True):
    """Linear probes of every label, the checkpoint's target encoder, and with `random` a random init of its
    architecture (finetune.py's seed, not the run's, draws it: one per call serves every seed)."""
    size = (["--train_images", "32", "--val_images", "16", "--epochs", "1", "--batch_size", "8", "--device", "cpu"]
            if s.args.smoke else ["--train_images", "8000", "--val_images", "2000", "--epochs", "10", "--workers", "2",
                                  "--batch_size", "256"])
    def one(label, init):
        out = os.path.join(s.runs, f"{name}_probe_{label}_{init}")
        cmd = [sys.executable, "finetune.py", "--protocol", "linear", "--ckpt", ckpt, "--label", label,
               "--out_dir", out, "--overwrite", "true"] + size
        rc, wall, cut, text = s.run(f"{name}_probe_{label}_{init}",
                                    cmd + (["--random_init", "true"] if init == "random" else []))
        s.row(stage="recipe", job=name, what=f"linear {label} {init}", rc=rc, wall_s=wall, cut=cut,
              top1=last_top1(text))
    with concurrent.futures.ThreadPoolExecutor(6) as ex:  # small jobs: all at once
        inits = ("checkpoint", "random") if random else ("checkpoint",)
        pairs = [(label, init) for label in ("shape", "color", "count") for init in inits]
        list(ex.map(lambda pair: one(*pair), pairs))


def rescore(s):
    """evaluate_mrr.py on --mrr_images images of each seed's and variant's networks under --weights (gpu_sN.pt,
    gpu_NAME_sN.pt), on this machine (the CPU: ~12 min a run at 64): one row each, stage `rescore`."""
    names = sorted(f[:-3] for f in os.listdir(s.args.weights) if re.fullmatch(r"gpu_(\S+_)?s\d+\.pt", f))
    if not names:
        sys.exit(f"gpu_runs.py: error: no gpu_sN.pt or gpu_NAME_sN.pt under --weights {s.args.weights}")
    bank = ["--bank", "4", "--device", "cpu"] if s.args.smoke else ["--bank", "256"]
    for name in names:
        ev = ["--ckpt", os.path.join(s.args.weights, name + ".pt"), "--images", str(s.args.mrr_images)] + bank
        rc, wall, cut, text = s.run(name + "_rescore", [sys.executable, "evaluate_mrr.py"] + ev)
        s.row(stage="rescore", job=name, what="mrr", seed=int(name.rsplit("_s", 1)[1]), rc=rc, wall_s=wall, cut=cut,
              mrr_images=s.args.mrr_images, **mrr_figures(text))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stages", nargs="+", choices=("speed", "profile", "recipe", "rescore"))
    ap.add_argument("--out", default=os.environ.get("OUT") or "results/gpu")
    ap.add_argument("--work", default="runs/gpu_runs", help="run folders and logs (not returned)")
    ap.add_argument("--rows", default="", help="the rows file (default OUT/rows.jsonl)")
    ap.add_argument("--weights", default="", help="rescore: the folder of a call's gpu_*.pt (default OUT)")
    ap.add_argument("--config", default="configs/gpu.json")
    ap.add_argument("--train_flags", default="", help="added to every train.py call, e.g. '--batch_size 512'")
    ap.add_argument("--budget", type=float, default=540, help="seconds for the whole call")
    ap.add_argument("--batches", default="32,256,1024", help="bench.py batches (eager)")
    ap.add_argument("--compile_batch", type=int, default=256, help="bench.py --compile true at this batch; 0: none")
    ap.add_argument("--speed_steps", type=int, default=400)
    ap.add_argument("--speed_batches", default="0", help="real-loop runs alone at these batches (0: the config's)")
    ap.add_argument("--share", type=int, default=4, help="copies of the real loop at once in the speed stage")
    ap.add_argument("--share_workers", type=int, default=3)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--curve", default="1,4,16,64", help="multiples of 44,800 images")
    ap.add_argument("--variants", default="", help="seed-0 runs of the recipe with other flags, "
                    "'NAME=FLAGS;NAME=FLAGS', e.g. 'lr1.7e-3=--lr 0.0017'")
    ap.add_argument("--par", type=int, default=6, help="recipe runs at once")
    ap.add_argument("--workers", type=int, default=3, help="loader workers per recipe run")
    ap.add_argument("--mrr_images", type=int, default=16, help="evaluate_mrr.py --images: 64 halves the CIs of a "
                    "jitter component's MRR (±0.017 → ±0.009) for ~4x its time (~26 s → ~100 s on the H200)")
    ap.add_argument("--reserve", type=float, default=60, help="seconds kept for evaluation after a cut training run")
    ap.add_argument("--smoke", action="store_true", help="CPU, toy shapes, seconds")
    args = ap.parse_args(argv)
    args.seeds = [int(x) for x in args.seeds.split(",")]
    args.curve = [int(x) for x in args.curve.split(",") if x]
    args.variants = [v.split("=", 1) for v in args.variants.split(";") if v]
    if any(len(v) != 2 or not re.fullmatch(r"[\w.-]+", v[0]) for v in args.variants):
        ap.error(f"--variants must be 'NAME=FLAGS;...' with NAME letters, digits, '.', '-', got {args.variants}")
    args.speed_batches = [int(x) for x in args.speed_batches.split(",") if x]
    args.weights = args.weights or args.out
    s = Session(args)
    s.row(stage="start", job="session", what=" ".join(sys.argv[1:] if argv is None else argv), budget_s=args.budget)
    for stage in args.stages:
        if stage == "speed":
            bench_rows(s, [int(b) for b in args.batches.split(",") if b])
            loader_row(s)
            speed_runs(s)
            if args.compile_batch and not args.smoke:  # inductor on the CPU takes minutes: GPU only
                bench_rows(s, [], args.compile_batch)
        elif stage == "profile":
            profile_run(s)
        elif stage == "rescore":
            rescore(s)
        else:
            with concurrent.futures.ThreadPoolExecutor(args.par) as ex:
                for f in [ex.submit(recipe_job, s, *job) for job in recipe_jobs(s)]:
                    f.result()
        if stage != "rescore":  # a rescore's logs stay in --work: its rows file sits among committed results
            s.pack()
    s.row(stage="end", job="session", what="done")


if __name__ == "__main__":
    main()
