"""data.py: the built-in Shapes dataset, folders on disk with bad files, transforms and the loader."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import data


def test_shapes_deterministic_and_splits_differ():
    a, b = data.Shapes("train", 32), data.Shapes("train", 32)
    assert torch.equal(a[5][0], b[5][0]) and torch.equal(a[5][1], b[5][1])
    assert not torch.equal(a[5][0], a[6][0])
    assert not torch.equal(a[5][0], data.Shapes("val", 32)[5][0])


@pytest.mark.parametrize("size", [32, 64, 224])
def test_shapes_contract(size):
    img, y = data.Shapes("val", size)[3]
    assert img.shape == (3, size, size) and img.dtype == torch.uint8
    assert y.shape == (3,) and y.dtype == torch.long
    assert all(0 <= int(y[t]) < n for t, n in enumerate(data.Shapes.num_classes))


def test_label_coverage_and_colour_label_is_true():
    ds = data.Shapes("train", 48)
    labels = torch.stack([ds[i][1] for i in range(300)])
    for t, n in enumerate(ds.num_classes):
        assert set(labels[:, t].tolist()) == set(range(n)), ds.label_names[t]
    # the colour label can be read off the saturated (object) pixels: their mean hue falls in the class's bin
    hits = 0
    for i in range(60):
        img, y = ds.render(i)
        rgb = img.reshape(-1, 3).astype(np.float32) / 255
        mx, mn = rgb.max(1), rgb.min(1)
        obj = rgb[(mx - mn) > 0.45]  # background saturation is ≤ 0.25
        r, g, b = obj.mean(0)
        hue = np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360
        hits += int(round(hue / 60)) % 6 == int(y[1])
    assert hits >= 55


def test_count_label_matches_object_blobs():
    # objects are kept apart, so the number of saturated connected regions equals count (up to edge cases)
    ds = data.Shapes("train", 64)
    ok = 0
    for i in range(40):
        img, y = ds.render(i)
        rgb = img.astype(np.float32) / 255
        mask = (rgb.max(2) - rgb.min(2)) > 0.45
        seen, blobs = np.zeros_like(mask), 0
        for sy, sx in zip(*np.nonzero(mask)):  # flood fill, 4-connected
            if seen[sy, sx]:
                continue
            blobs += 1
            stack = [(sy, sx)]
            while stack:
                py, px = stack.pop()
                if 0 <= py < 64 and 0 <= px < 64 and mask[py, px] and not seen[py, px]:
                    seen[py, px] = True
                    stack += [(py + 1, px), (py - 1, px), (py, px + 1), (py, px - 1)]
        ok += blobs == int(y[2]) + 1 or (int(y[1]) and False)
    assert ok >= 30  # ring/cross pieces and touching shapes aside, the count is what is drawn


def make_folder(root, corrupt=True):
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True)
            for k in range(3):
                Image.fromarray(np.full((37, 45, 3), 40 * k + (c == "dog") * 100, np.uint8)).save(d / f"{k}.png")
    if corrupt:
        (root / "train" / "cat" / "bad.png").write_bytes(b"not an image")


def test_imagefolder_skips_corrupt_file_with_warning(tmp_path):
    make_folder(tmp_path)
    ds = data.build_dataset("imagefolder", str(tmp_path), "train", transform=data.eval_transform(32))
    assert ds.label_names == ("class",) and ds.num_classes == (2,)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
    assert any("bad.png" in str(x.message) for x in w) and ds.skipped == 1
    assert all(img.shape == (3, 32, 32) and img.dtype == torch.uint8 for img, _ in items)


def test_missing_or_empty_data_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageNet-style folders"):
        data.build_dataset("imagefolder", str(tmp_path / "nope"), "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        data.build_dataset("imagefolder", str(tmp_path), "train")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        data.build_dataset("cifar10", str(tmp_path), "train")
    with pytest.raises(ValueError, match="needs --data_root"):
        data.build_dataset("cifar10", "", "train")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.build_dataset("mnist42", str(tmp_path))


def test_transforms_from_odd_pil_and_grey():
    for mode, shape in (("RGB", (31, 47, 3)), ("L", (31, 47)), ("RGBA", (31, 47, 4))):
        img = Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8), mode)
        for tf in (data.train_transform(24), data.eval_transform(24)):
            out = tf(img)
            assert type(out) is torch.Tensor and out.shape == (3, 24, 24) and out.dtype == torch.uint8


def test_make_loader_batches():
    ds = data.Shapes("val", 32, length=20)
    batches = list(data.make_loader(ds, 8, train=True))
    assert len(batches) == 2 and batches[0][0].shape == (8, 3, 32, 32) and batches[0][1].shape == (8, 3)
    assert len(list(data.make_loader(ds, 8, train=False))) == 3
