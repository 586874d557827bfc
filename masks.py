"""Multiblock masks (I-JEPA arXiv 2301.08243 §3 "context and targets"; IWM arXiv 2403.00504 §3 uses the same:
"the union of four rectangles, each 15-20%"). One context block (85-100% of the grid, aspect 1) minus four target
blocks (15-20%, aspect 0.75-1.5, possibly overlapping each other).

Differences from the official sampler (on purpose): scale and aspect ratio are drawn independently (the official
code uses one random number for both); block positions use inclusive bounds, so the last patch row/column can be
masked and the context block is not pinned to the top-left corner at 224/16; the whole batch is sampled with tensor
ops, and a batch whose context cannot keep `min_keep` patches is resampled a bounded number of times and then
rejected with an error (the official loop retries forever, e.g. on an 8×8 grid).
"""
import math

import torch

MAX_ROUNDS = 20  # resampling rounds for images whose context fell below min_keep, then a clear error


def block_size(scale, aspect, grid, g):
    """One (h, w) for the whole batch, as in I-JEPA (so every target mask has the same length): area fraction and
    aspect ratio drawn independently and uniformly."""
    u = torch.rand(2, generator=g).tolist()
    area = (scale[0] + u[0] * (scale[1] - scale[0])) * grid[0] * grid[1]
    ar = aspect[0] + u[1] * (aspect[1] - aspect[0])
    h = min(max(round(math.sqrt(area * ar)), 1), grid[0])
    w = min(max(round(math.sqrt(area / ar)), 1), grid[1])
    return h, w


def place(n, h, w, grid, g):
    """n h×w rectangles at uniform positions (top in [0, H−h] inclusive): boolean masks [n, H, W] and their flat
    indices [n, h·w], ascending."""
    top = torch.randint(0, grid[0] - h + 1, (n, 1, 1), generator=g)
    left = torch.randint(0, grid[1] - w + 1, (n, 1, 1), generator=g)
    rows, cols = torch.arange(grid[0]).view(1, -1, 1), torch.arange(grid[1]).view(1, 1, -1)
    mask = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    idx = (top + torch.arange(h).view(1, -1, 1)) * grid[1] + left + torch.arange(w).view(1, 1, -1)
    return mask, idx.flatten(1)


def first_k(keep, k):
    """[B, N] bool with ≥ k True per row → [B, k] LongTensor of the first k True positions, ascending (a cumsum
    selection, linear time; a sort would cost several times more)."""
    sel = keep & (keep.cumsum(1) <= k)
    return sel.nonzero()[:, 1].view(keep.shape[0], k)  # nonzero walks row-major: rows in order, ascending


def sample_masks(batch_size, grid, *, num_targets=4, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
                 context_scale=(0.85, 1.0), context_aspect=(1.0, 1.0), min_keep=10, generator=None):
    """Returns (context_masks, target_masks): a list of one LongTensor [B, Kc] and a list of num_targets LongTensors
    [B, Kt] of flat patch indices (row·W + col), ascending in each row, on the CPU. Context rows are truncated to
    the batch minimum so the batch is rectangular (I-JEPA)."""
    H, W = grid
    if not 1 <= min_keep <= H * W:
        raise ValueError(f"min_keep={min_keep} must be between 1 and the {H}x{W}={H * W} patches of the grid")
    g = generator if generator is not None else torch.Generator().manual_seed(torch.seed() % 2**63)
    th, tw = block_size(target_scale, target_aspect, grid, g)
    ch, cw = block_size(context_scale, context_aspect, grid, g)
    if ch * cw < min_keep:
        raise ValueError(f"the context block ({ch}x{cw} patches) cannot keep min_keep={min_keep}; lower --min_keep")
    B = batch_size
    tgt_idx = torch.zeros(B, num_targets, th * tw, dtype=torch.long)
    context = torch.zeros(B, H, W, dtype=torch.bool)
    todo = torch.arange(B)
    for _ in range(MAX_ROUNDS):  # vectorised over the images still failing; usually one round
        n = len(todo)
        t, t_idx = place(n * num_targets, th, tw, grid, g)
        c = place(n, ch, cw, grid, g)[0] & ~t.view(n, num_targets, H, W).any(1)
        tgt_idx[todo], context[todo] = t_idx.view(n, num_targets, -1), c
        todo = todo[c.flatten(1).sum(1) < min_keep]
        if len(todo) == 0:
            break
    else:
        raise ValueError(f"could not keep min_keep={min_keep} context patches on a {H}x{W} grid with "
                         f"{num_targets} targets of {th}x{tw} after {MAX_ROUNDS} tries; lower --min_keep or "
                         f"--target_scale")
    keep = context.flatten(1)
    return [first_k(keep, int(keep.sum(1).min()))], list(tgt_idx.unbind(1))

if __name__ == "__main__":
    import time
    for grid in ((14, 14), (8, 8)):
        g = torch.Generator().manual_seed(0)
        kw = {} if grid == (14, 14) else {"min_keep": 4}
        sample_masks(256, grid, generator=g, **kw)
        t0, n = time.perf_counter(), 50
        for _ in range(n):
            sample_masks(256, grid, generator=g, **kw)
        dt = (time.perf_counter() - t0) / n
        print(f"grid {grid[0]}x{grid[1]}, batch 256: {1 / dt:.0f} batches/s ({dt * 1e3:.2f} ms per batch)")
