"""Multiblock masks (I-JEPA arXiv 2301.08243 §3 "context and targets"; IWM arXiv 2403.00504 §3 uses the same:
"the union of four rectangles, each 15-20%"). One context block (85-100% of the patch grid, aspect 1) minus four
target blocks (15-20%, aspect 0.75-1.5, possibly overlapping each other). Block sizes are drawn once per batch, as in
I-JEPA, so all target masks have the same length; block positions are drawn per image.

Differences from the official sampler (on purpose):
- scale and aspect ratio are drawn independently (the official code uses one random number for both);
- positions use inclusive bounds (top in [0, H-h]), so the last patch row/column can be masked and the context
  block is not pinned to the top-left 13x13 corner at 224/16;
- the batch is sampled with tensor ops; images whose context keeps fewer than `min_keep` patches are resampled
  (only those) at most MAX_ROUNDS times. The official loop can retry forever (e.g. on an 8x8 grid); here a
  configuration is first checked once (cached) on a fixed-seed pilot sample: if more than MAX_FAIL of the images
  would fail for the worst reachable block sizes, it is rejected at once with a one-line ValueError. A
  configuration that passes runs out of rounds with probability < B * 0.5^50 (~1e-13 at B=256) per batch, so a
  long run cannot crash on a rare batch hours in. 8x8 grids (32px / patch 4) work with the defaults, min_keep=10
  included (worst case ~11% of images need a redraw), so min_keep is never silently lowered.
"""
import functools

import torch

MAX_ROUNDS = 50  # resampling rounds for the images whose context fell below min_keep
MAX_FAIL = 0.5  # largest accepted fraction of images that need a redraw, for the worst reachable block sizes
PILOT = 1024  # images in the one-off feasibility pilot


def block_size(u_scale, u_aspect, scale, aspect, grid):
    """(h, w) of a block whose area fraction and aspect ratio (h/w) are the uniforms u_scale, u_aspect mapped into
    their ranges: h = round(sqrt(area·aspect)), w = round(sqrt(area/aspect)), clamped to [1, grid]."""
    area = (scale[0] + u_scale * (scale[1] - scale[0])) * grid[0] * grid[1]
    ar = aspect[0] + u_aspect * (aspect[1] - aspect[0])
    h = min(max(round((area * ar) ** 0.5), 1), grid[0])
    w = min(max(round((area / ar) ** 0.5), 1), grid[1])
    return h, w


def place(n, h, w, grid, g):
    """n h×w rectangles at uniform positions with inclusive bounds: boolean masks [n, H, W] and their flat indices
    [n, h·w] (ascending, since rows and columns both ascend)."""
    top = torch.randint(0, grid[0] - h + 1, (n, 1), generator=g)  # high is exclusive: H-h itself is reachable
    left = torch.randint(0, grid[1] - w + 1, (n, 1), generator=g)
    r, c = torch.arange(grid[0]), torch.arange(grid[1])
    # separable: compare along rows and columns only, then one outer AND (cheaper than 4 [n, H, W] comparisons)
    mask = ((r >= top) & (r < top + h))[:, :, None] & ((c >= left) & (c < left + w))[:, None, :]
    idx = (top[:, :, None] + torch.arange(h)[:, None]) * grid[1] + left[:, :, None] + torch.arange(w)
    return mask, idx.flatten(1)


def draw_context(n, num_targets, t_hw, c_hw, grid, g):
    """n contexts (a c_hw block minus the union of num_targets t_hw blocks): bool [n, H, W] and target indices
    [n, num_targets, th·tw]."""
    t, t_idx = place(n * num_targets, *t_hw, grid, g)
    c = place(n, *c_hw, grid, g)[0] & ~t.view(n, num_targets, *grid).any(1)
    return c, t_idx.view(n, num_targets, -1)


def extremes(sizes, largest):
    """The Pareto-largest (or -smallest) (h, w) pairs: the worst cases for the context, since a bigger target or a
    smaller context block only removes or lacks more patches."""
    worse = (lambda a, b: a[0] >= b[0] and a[1] >= b[1]) if largest else (lambda a, b: a[0] <= b[0] and a[1] <= b[1])
    return [s for s in sizes if not any(o != s and worse(o, s) for o in sizes)]


@functools.lru_cache(maxsize=64)
def check_feasible(grid, num_targets, target_scale, target_aspect, context_scale, context_aspect, min_keep):
    """Raises ValueError unless the worst reachable (target size, context size) pairs keep min_keep context patches
    in at least 1 - MAX_FAIL of the images. Uses its own fixed-seed generator: the caller's randomness is untouched.
    Runs once per configuration (cached); ~0.1 s at 14x14."""
    H, W = grid
    u = [i / 32 for i in range(33)]  # a dense sweep of the uniforms finds every block size that is not a sliver
    t_sizes = extremes({block_size(a, b, target_scale, target_aspect, grid) for a in u for b in u}, largest=True)
    c_sizes = extremes({block_size(a, b, context_scale, context_aspect, grid) for a in u for b in u}, largest=False)
    g = torch.Generator().manual_seed(0)
    for ch, cw in sorted(c_sizes):
        if ch * cw < min_keep:
            raise ValueError(f"the context block can be {ch}x{cw} patches, fewer than min_keep={min_keep}; "
                             f"lower min_keep or raise context_scale")
        for th, tw in sorted(t_sizes):
            c, _ = draw_context(PILOT, num_targets, (th, tw), (ch, cw), grid, g)
            fail = (c.flatten(1).sum(1) < min_keep).float().mean().item()
            if fail > MAX_FAIL:
                raise ValueError(f"min_keep={min_keep} context patches fail for {fail:.0%} of images with "
                                 f"{num_targets} targets of {th}x{tw} in a {ch}x{cw} context on a {H}x{W} grid; "
                                 f"lower min_keep, target_scale or num_targets")


def check_range(name, r, hi):
    """A (low, high) pair with 0 < low <= high <= hi, as a tuple of floats (hashable, for the cache)."""
    if len(r) != 2 or not 0 < r[0] <= r[1] <= hi:
        raise ValueError(f"{name}={tuple(r)} must be (low, high) with 0 < low <= high <= {hi}")
    return float(r[0]), float(r[1])


def sample_masks(batch_size, grid, *, num_targets=4, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
                 context_scale=(0.85, 1.0), context_aspect=(1.0, 1.0), min_keep=10, generator=None,
                 truncate="random"):
    """Returns (context_masks, target_masks): a list of one LongTensor [B, Kc] and a list of num_targets LongTensors
    [B, Kt] of flat patch indices (row·W + col), ascending in each row, on the CPU. Context rows are truncated to
    the batch minimum Kc so the batch is rectangular; Kt = h·w of the batch's target block size. generator=None
    uses torch's global RNG. truncate="random" (default, our choice) keeps a uniform random Kc of each row's
    context patches; truncate="first" keeps the first Kc, as the I-JEPA code does, which drops bottom-of-grid
    patches (at B=256, 14x14 the last patch row is in ~1% of contexts, vs ~60% for the first rows)."""
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid={tuple(grid)} must be (rows, cols) of the patch grid, both >= 1")
    H, W = int(grid[0]), int(grid[1])
    if batch_size < 1 or num_targets < 1:
        raise ValueError(f"batch_size={batch_size} and num_targets={num_targets} must be >= 1")
    if not 1 <= min_keep <= H * W:
        raise ValueError(f"min_keep={min_keep} must be between 1 and the {H}x{W}={H * W} patches of the grid")
    if truncate not in ("first", "random"):
        raise ValueError(f"truncate={truncate!r} must be 'first' or 'random'")
    ts, cs = check_range("target_scale", target_scale, 1), check_range("context_scale", context_scale, 1)
    ta, ca = check_range("target_aspect", target_aspect, 1e9), check_range("context_aspect", context_aspect, 1e9)
    check_feasible((H, W), num_targets, ts, ta, cs, ca, min_keep)

    u = torch.rand(4, generator=generator).tolist()  # one draw per batch: scale and aspect independently
    t_hw, c_hw = block_size(u[0], u[1], ts, ta, (H, W)), block_size(u[2], u[3], cs, ca, (H, W))
    context = torch.empty(batch_size, H, W, dtype=torch.bool)
    targets = torch.empty(batch_size, num_targets, t_hw[0] * t_hw[1], dtype=torch.long)
    todo = torch.arange(batch_size)
    for _ in range(MAX_ROUNDS):  # vectorised over the images still failing; usually one round
        c, t_idx = draw_context(len(todo), num_targets, t_hw, c_hw, (H, W), generator)
        context[todo], targets[todo] = c, t_idx  # a redraw replaces targets too, as the context depends on them
        todo = todo[c.flatten(1).sum(1) < min_keep]
        if len(todo) == 0:
            break
    else:  # unreachable in practice once check_feasible passed (probability < B * MAX_FAIL^MAX_ROUNDS)
        raise ValueError(f"could not keep min_keep={min_keep} context patches on a {H}x{W} grid with {num_targets} "
                         f"targets of {t_hw[0]}x{t_hw[1]} after {MAX_ROUNDS} rounds; lower min_keep or target_scale")
    keep = context.flatten(1)
    kc = int(keep.sum(1).min())
    if truncate == "first":  # a cumsum selection (linear time, no sort) of exactly kc per row; nonzero walks row-major
        ctx = (keep & (keep.cumsum(1) <= kc)).nonzero()[:, 1].view(batch_size, kc)
    else:  # every kept patch outranks every dropped one; the top kc of uniform keys, sorted back to ascending
        keys = torch.rand(keep.shape, generator=generator).masked_fill_(~keep, -1.0)
        ctx = keys.topk(kc, dim=1).indices.sort(1).values
    return [ctx], list(targets.unbind(1))
