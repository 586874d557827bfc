"""masks.py: I-JEPA multiblock masks (context minus 4 target blocks)."""
import time

import pytest
import torch

from masks import sample_masks


def draw(B=32, grid=(14, 14), seed=0, **kw):
    return sample_masks(B, grid, generator=torch.Generator().manual_seed(seed), **kw)


def test_shapes_contract():
    ctx, tgts = draw()
    assert len(ctx) == 1 and len(tgts) == 4
    for m in ctx + tgts:
        assert m.dtype == torch.long and m.ndim == 2 and m.shape[0] == 32
        assert m.min() >= 0 and m.max() < 196
        assert torch.all(m[:, 1:] > m[:, :-1])  # ascending, hence unique per row
    assert ctx[0].shape[1] >= 10


def test_context_and_targets_disjoint():
    ctx, tgts = draw(B=64)
    for b in range(64):
        c = set(ctx[0][b].tolist())
        for t in tgts:
            assert not c & set(t[b].tolist())


def test_targets_are_rectangles_within_scale():
    for seed in range(20):
        _, tgts = draw(B=8, seed=seed)
        for t in tgts:
            for row in t:
                r, c = row // 14, row % 14
                h, w = int(r.max() - r.min() + 1), int(c.max() - c.min() + 1)
                assert h * w == len(row)  # a full rectangle
                # area fraction within (0.15, 0.2) up to the rounding of h and w
                assert 0.15 * 196 - (h + w) <= h * w <= 0.2 * 196 + (h + w)
                assert 0.75 / 2 <= h / w <= 1.5 * 2


def test_every_patch_reachable():
    seen_t, seen_c = torch.zeros(196, dtype=torch.bool), torch.zeros(196, dtype=torch.bool)
    for seed in range(30):
        ctx, tgts = draw(B=32, seed=seed)
        seen_c[ctx[0].flatten()] = True
        for t in tgts:
            seen_t[t.flatten()] = True
    assert seen_t.all(), "some patch is never a target (e.g. the last row/column)"
    assert seen_c.all(), "some patch is never in the context"


def test_determinism():
    a, b, c = draw(seed=1), draw(seed=1), draw(seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1]))
    assert not all(torch.equal(x, y) for x, y in zip(a[1], c[1]))


def test_small_grid_does_not_hang():
    t0 = time.perf_counter()
    ctx, tgts = draw(B=256, grid=(8, 8))
    assert time.perf_counter() - t0 < 5
    assert ctx[0].shape[1] >= 10
    with pytest.raises(ValueError, match="min_keep"):
        draw(B=256, grid=(8, 8), min_keep=60)  # impossible: raises quickly, never loops forever
    assert time.perf_counter() - t0 < 10


def test_infeasible_config_raises():
    with pytest.raises(ValueError, match="min_keep"):
        draw(min_keep=1000)
    with pytest.raises(ValueError, match="min_keep"):
        draw(grid=(4, 4), context_scale=(0.3, 0.3))
