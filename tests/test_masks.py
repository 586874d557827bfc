"""masks.py: I-JEPA multiblock masks (a context block minus 4 target blocks), contract, geometry, coverage,
determinism, and fast clear errors instead of hangs."""
import math
import time

import pytest
import torch

import masks
from masks import sample_masks


def draw(B=32, grid=(14, 14), seed=0, **kw):
    return sample_masks(B, grid, generator=torch.Generator().manual_seed(seed), **kw)


def bbox(row, W):
    r, c = row // W, row % W
    return int(r.min()), int(c.min()), int(r.max() - r.min() + 1), int(c.max() - c.min() + 1)


@pytest.mark.parametrize("truncate", ["first", "random"])
def test_shapes_contract(truncate):
    ctx, tgts = draw(B=16, grid=(12, 10), num_targets=3, truncate=truncate)
    assert isinstance(ctx, list) and isinstance(tgts, list) and len(ctx) == 1 and len(tgts) == 3
    kt = tgts[0].shape[1]
    for m in ctx + tgts:
        assert m.dtype == torch.long and m.device.type == "cpu" and m.ndim == 2 and m.shape[0] == 16
        assert 0 <= int(m.min()) and int(m.max()) < 120
        assert torch.all(m[:, 1:] > m[:, :-1])  # strictly ascending, hence unique within a row
    assert all(t.shape[1] == kt for t in tgts)  # one block size per batch: no truncation of targets
    assert ctx[0].shape[1] >= 10


@pytest.mark.parametrize("truncate", ["first", "random"])
def test_context_and_targets_disjoint(truncate):
    ctx, tgts = draw(B=64, truncate=truncate)
    union = torch.cat(tgts, 1)
    # any context index equal to any target index of the same image
    assert not (ctx[0][:, :, None] == union[:, None, :]).any()


def test_targets_are_rectangles_within_scale():
    sizes = set()
    for seed in range(40):
        _, tgts = draw(B=8, seed=seed)
        shapes = {bbox(row, 14)[2:] for t in tgts for row in t}
        assert len(shapes) == 1  # the same h×w for every image and block of a batch (I-JEPA)
        (h, w), = shapes
        for t in tgts:
            for row in t:
                assert bbox(row, 14)[2:] == (h, w) and len(row) == h * w  # a full rectangle, no holes
        # h = round(sqrt(area·ar)), w = round(sqrt(area/ar)): area in 196·(0.15, 0.2), ar in (0.75, 1.5)
        lo, hi = 0.15 * 196, 0.2 * 196
        assert round(math.sqrt(lo * 0.75)) <= h <= round(math.sqrt(hi * 1.5))
        assert round(math.sqrt(lo / 1.5)) <= w <= round(math.sqrt(hi / 0.75))
        assert lo - 0.5 * (h + w) - 0.75 <= h * w <= hi + 0.5 * (h + w) + 0.75  # rounding of h and w
        sizes.add((h, w))
    assert len(sizes) >= 4  # the size is random per batch, not fixed


def test_scale_and_aspect_drawn_independently():
    # the official code maps one random number to both scale and aspect ratio: 5 target sizes reachable at 14×14;
    # independent draws reach 9-10. The context size must not follow the target size either.
    t_area, c_side, t_shapes = [], [], set()
    for seed in range(150):  # both configs consume the seed's uniforms in the same order
        t = bbox(draw(B=1, seed=seed)[1][0][0], 14)[2:]
        c = bbox(draw(B=1, seed=seed, context_scale=(0.25, 1.0), target_scale=(0.01, 0.01), min_keep=1)[0][0][0], 14)
        t_area.append(t[0] * t[1])
        t_shapes.add(t)
        c_side.append(max(c[2:]))  # tiny targets: the context's bounding box is its block
    assert len({(a, s) for a, s in zip(t_area, c_side)}) > 25
    assert abs(torch.corrcoef(torch.tensor([t_area, c_side], dtype=torch.float))[0, 1]) < 0.25
    assert len(t_shapes) >= 8


def test_context_block_size_and_position():
    # a 7×7 context (scale 0.25 of 14×14, aspect 1) with tiny targets: the context stays inside a 7×7 box
    tops = set()
    for seed in range(10):
        ctx, _ = draw(B=16, seed=seed, context_scale=(0.25, 0.25), target_scale=(0.01, 0.01), min_keep=5)
        for row in ctx[0]:
            top, left, h, w = bbox(row, 14)
            assert h <= 7 and w <= 7
            tops.add((top, left))
    assert len(tops) > 20  # placed per image, not pinned to a corner


def test_min_keep_holds_for_the_whole_batch():
    for seed in range(10):
        ctx, tgts = draw(B=64, seed=seed, min_keep=40)
        assert ctx[0].shape[1] >= 40


def test_every_patch_reachable():
    # inclusive bounds: the last row/column can be a target and the context block can sit anywhere
    seen_t, seen_c = torch.zeros(196, dtype=torch.bool), torch.zeros(196, dtype=torch.bool)
    for seed in range(30):
        ctx, tgts = draw(B=32, seed=seed)
        seen_c[ctx[0].flatten()] = True
        for t in tgts:
            seen_t[t.flatten()] = True
    assert seen_t.all(), "some patch is never a target (e.g. the last row/column)"
    assert seen_c.all(), "some patch is never in the context"


def test_random_truncation_removes_the_top_row_bias():
    def row_freq(truncate):
        cnt = torch.zeros(196)
        for seed in range(5):
            cnt += torch.bincount(draw(B=256, seed=seed, truncate=truncate)[0][0].flatten(), minlength=196)
        return cnt.view(14, 14).sum(1)

    first, rand = row_freq("first"), row_freq("random")
    assert first[-1] < 0.1 * first[0]  # keeping the first Kc indices starves the bottom rows (I-JEPA behaviour)
    assert rand[-1] > 0.6 * rand[0]  # a random subset does not


def test_determinism():
    a, b, c = draw(seed=1), draw(seed=1), draw(seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1]))
    assert not all(torch.equal(x, y) for x, y in zip(a[1], c[1]))
    ra, rb = draw(seed=1, truncate="random"), draw(seed=1, truncate="random")
    assert all(torch.equal(x, y) for x, y in zip(ra[0] + ra[1], rb[0] + rb[1]))
    # generator=None draws from torch's global RNG, so torch.manual_seed makes it reproducible too
    torch.manual_seed(3)
    u = sample_masks(8, (14, 14))
    torch.manual_seed(3)
    v = sample_masks(8, (14, 14))
    assert all(torch.equal(x, y) for x, y in zip(u[0] + u[1], v[0] + v[1]))


def test_small_grid_works_with_defaults():
    # 32px images with patch 4: an 8×8 grid, min_keep=10 and four 15-20% targets still fit (with redraws)
    t0 = time.perf_counter()
    for seed in range(5):
        ctx, tgts = draw(B=256, grid=(8, 8), seed=seed)
        assert ctx[0].shape[1] >= 10 and int(ctx[0].max()) < 64
        union = torch.cat(tgts, 1)
        assert not (ctx[0][:, :, None] == union[:, None, :]).any()
    assert time.perf_counter() - t0 < 5


def test_infeasible_configs_raise_fast():
    t0 = time.perf_counter()
    bad = [dict(min_keep=1000), dict(min_keep=0), dict(grid=(8, 8), min_keep=40),  # 40 of 64 cannot survive targets
           dict(grid=(4, 4), context_scale=(0.3, 0.3)), dict(target_scale=(0.3, 0.2)), dict(num_targets=0),
           dict(context_aspect=(0.0, 1.0)), dict(grid=(0, 5)), dict(truncate="last")]
    for kw in bad:
        with pytest.raises(ValueError):
            draw(**kw)
    # rejected by the one-off pilot check, before any sampling (whatever the seed or batch size)
    with pytest.raises(ValueError, match=r"min_keep=40 context patches fail for \d+% of images"):
        draw(B=1, grid=(8, 8), min_keep=40)
    masks.check_feasible((8, 8), 4, (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), (1.0, 1.0), 15)  # ~40% redraws: accepted
    assert time.perf_counter() - t0 < 5


def test_bounded_retries_raise_instead_of_hanging(monkeypatch):
    # with the up-front check disabled, a config that almost never fits must exhaust MAX_ROUNDS and raise
    monkeypatch.setattr(masks, "check_feasible", lambda *a: None)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="after .* rounds"):
        draw(B=64, grid=(8, 8), min_keep=60)  # at most 64 - 9 patches survive
    assert time.perf_counter() - t0 < 5
