"""The data pipeline's parts on the CPU (docs/speed.md, "Data pipeline"): the photometric views (augment.make_views),
the multiblock masks (masks.sample_masks) and the built-in data (data.Shapes, with and without the crop + flip).

    python scripts/bench_parts.py            # all three; or name some: views masks shapes
"""
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import augment  # noqa: E402
import data  # noqa: E402
import masks  # noqa: E402


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


PARTS = {"views": views, "masks": mask_batches, "shapes": shapes}
if __name__ == "__main__":
    bad = [p for p in sys.argv[1:] if p not in PARTS]
    if bad:
        sys.exit(f"bench_parts.py: error: unknown part {bad[0]!r}; choose from {', '.join(PARTS)}")
    for part in sys.argv[1:] or PARTS:
        PARTS[part]()
