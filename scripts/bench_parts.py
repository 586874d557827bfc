"""The data pipeline's parts on the CPU (docs/speed.md, "Data pipeline"): the photometric views (augment.make_views),
the multiblock masks (masks.sample_masks), the built-in data (data.Shapes, with and without the crop + flip), train.py's
loader of configs/gpu.json (what its workers deliver, without a training step), the token counts that gpu.json's
masks give step by step (a step whose counts are new is slower on a GPU: docs/speed.md), and the ops its training
step dispatches, stage by stage (each a kernel launch on a GPU).

    python scripts/bench_parts.py            # all six; or name some: views masks shapes loader counts ops
"""
import bisect
import collections
import json
import os
import statistics
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import augment  # noqa: E402
import bench  # noqa: E402
import data  # noqa: E402
import masks  # noqa: E402
import model  # noqa: E402
import train  # noqa: E402

GPU_CFG = dict(train.CONFIG, **json.load(open(os.path.join(os.path.dirname(__file__), "..", "configs", "gpu.json"))))


def views():
    imgs = torch.randint(0, 256, (256, 3, 224, 224), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    augment.make_views(imgs[:8], generator=g)
    t0, n = time.perf_counter(), 3
    for _ in range(n):
        augment.make_views(imgs, generator=g)
    dt = (time.perf_counter() - t0) / n
    print(f"make_views: {256 / dt:.0f} images/s at 224px, batch 256, {torch.get_num_threads()} CPU threads "
          f"(source + target views per image)")


def mask_batches():
    for grid in ((14, 14), (8, 8)):  # 224/16 and 32/4, defaults
        g = torch.Generator().manual_seed(0)
        masks.sample_masks(256, grid, generator=g)  # warm-up, and the one-off feasibility pilot
        n, t0 = 100, time.perf_counter()
        for _ in range(n):
            ctx, tgt = masks.sample_masks(256, grid, generator=g)
        dt = (time.perf_counter() - t0) / n
        print(f"grid {grid[0]}x{grid[1]}, batch 256, {torch.get_num_threads()} threads: {1 / dt:.0f} batches/s "
              f"({dt * 1e3:.2f} ms per batch; last Kc={ctx[0].shape[1]}, Kt={tgt[0].shape[1]})")


def shapes():
    torch.set_num_threads(1)  # throughput per CPU core (numpy's element-wise maths is single-threaded anyway)
    for name, tf in (("Shapes 64 px", None), ("Shapes 64 px + train_transform(64)", data.train_transform(64))):
        ds, rates = data.Shapes("train", 64, transform=tf), []
        for block in range(10):
            t0 = time.process_time()  # this process's CPU time: other jobs on a shared machine do not count
            for i in range(500 * block, 500 * block + 500):
                ds[i]
            rates.append(500 / (time.process_time() - t0))
        print(f"{name}: {statistics.median(rates):.0f} images/s on 1 CPU core "
              f"(median of 10 blocks of 500 images; best {max(rates):.0f})")


def loader():
    """Images/s that train.py's DataLoader delivers for configs/gpu.json (the same dataset, sampler and collate as
    train.setup) when nothing consumes them but this loop, after its first batch."""
    tf = data.train_transform(GPU_CFG["img_size"], GPU_CFG["crop_scale"])
    ds = data.EpochIndexed(data.Shapes("train", GPU_CFG["img_size"], 1 << 20, transform=tf), 0)
    for workers in sorted({1, min(2, os.cpu_count()), min(GPU_CFG["workers"], os.cpu_count())}):
        for batch in (256, 1024):
            sampler = data.StepSampler(len(ds), batch, batch, 0, 1, 0)
            it = iter(torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                                                  collate_fn=lambda items: torch.stack([x for x, _ in items])))
            next(it)
            n, t0 = max(4, 3 * workers), time.perf_counter()
            for _ in range(n):
                next(it)
            rate = n * batch / (time.perf_counter() - t0)
            print(f"loader of configs/gpu.json, {workers} worker(s), batch {batch}: {rate:.0f} images/s "
                  f"({rate / workers:.0f} per worker)")
            del it


def counts():
    """The (context, target) token counts of configs/gpu.json's masks over 2,000 steps: how many there are and by
    which step a run has met them."""
    torch.set_num_threads(1)  # as train.py's main process on a GPU; small ops wait for a busy core's thread otherwise
    for batch in (256, 1024):
        seen, first = set(), []
        for step in range(2000):
            key = bench.token_counts(GPU_CFG, step, batch, (8, 8))
            first += [step] if key not in seen else []
            seen.add(key)
        met = ", ".join(f"{bisect.bisect_left(first, n)} by step {n}" for n in (50, 100, 300))
        print(f"configs/gpu.json, batch {batch}: {len(seen)} token counts in 2,000 steps; met: {met}; "
              f"the last new one at step {first[-1]}")


class OpCount(TorchDispatchMode):
    """Counts every aten op dispatched under it, by name."""
    def __init__(self):
        super().__init__()
        self.names = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket).split(".")[-1]
        if not name.startswith("_record_function"):  # the optimizer's profiler marks
            self.names[("view " if func.is_view else "") + name] += 1
        return func(*args, **(kwargs or {}))


def ops():
    """The aten ops that train.train_step dispatches per stage for configs/gpu.json (batch 8 on the CPU, which makes
    both views in one pass as on a GPU: augment.make_views; the count does not depend on the batch there). On a GPU
    each computing op on a CUDA tensor launches a kernel (the masks and view parameters are drawn on the host); views
    only cost host time. A step bound by per-step overhead pays for each."""
    torch.set_num_threads(1)
    cfg = dict(GPU_CFG, device="cpu", batch_size=8, accum=1, workers=0)
    torch.manual_seed(0)
    encoder, predictor = model.build_models(cfg, augment.ACTION_NAMES)
    run = train.build(cfg, 0, 1, torch.device("cpu"), encoder, predictor, 100)
    imgs = [torch.randint(0, 256, (8, 3, cfg["img_size"], cfg["img_size"]), dtype=torch.uint8)]
    train.train_step(run, 0, imgs)
    per = collections.defaultdict(collections.Counter)
    with OpCount() as c:
        seen = collections.Counter()

        def lap(stage):
            per[stage].update(c.names - seen)
            seen.update(c.names - seen)
        train.train_step(run, 1, imgs, lap=lap)
    for stage, names in list(per.items()) + [("in all", c.names)]:
        views = sum(k for n, k in names.items() if n.startswith("view "))
        top = ", ".join([f"{n} {k}" for n, k in names.most_common() if not n.startswith("view ")][:4])
        print(f"ops of configs/gpu.json's step, {stage}: {sum(names.values()) - views} computing, {views} views "
              f"(no kernel); most: {top}")


PARTS = {"views": views, "masks": mask_batches, "shapes": shapes, "loader": loader, "counts": counts, "ops": ops}
if __name__ == "__main__":
    bad = [p for p in sys.argv[1:] if p not in PARTS]
    if bad:
        sys.exit(f"bench_parts.py: error: unknown part {bad[0]!r}; choose from {', '.join(PARTS)}")
    for part in sys.argv[1:] or PARTS:
        PARTS[part]()
