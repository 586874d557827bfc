"""data.py: the built-in Shapes data (determinism, contract, labels that match the pixels), folders on disk with
bad files and clear errors, the crop/flip (IWM §3 I') and evaluation transforms, and the loader."""
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import data


def saturated(img, thresh=0.4):
    """Object pixels: objects are saturated (max - min ≥ 0.52), the background is not (≤ 0.26)."""
    x = img.numpy().astype(np.int16)
    return (x.max(0) - x.min(0)) > thresh * 255


def components(mask):
    """Number of 8-connected components of a boolean mask (label propagation; no scipy)."""
    big = mask.size
    lab = np.where(mask, np.arange(big).reshape(mask.shape), big)
    while True:
        p = np.pad(lab, 1, constant_values=big)
        H, W = mask.shape
        new = np.minimum.reduce([p[1 + dy:H + 1 + dy, 1 + dx:W + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        new = np.where(mask, new, big)
        if np.array_equal(new, lab):
            return len(np.unique(lab[mask]))
        lab = new


def test_shapes_deterministic_and_streams_differ():
    a, b = data.Shapes("train", 32), data.Shapes("train", 32)
    b[9]  # a shared generator is re-seeded per item: access order must not matter
    for i in (0, 5, 49_999):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    assert not torch.equal(a[5][0], a[6][0])
    assert not torch.equal(a[5][0], data.Shapes("val", 32)[5][0])
    assert not torch.equal(a[5][0], data.Shapes("train", 32, seed=1)[5][0])
    with pytest.raises(IndexError):
        a[50_000]
    with pytest.raises(ValueError, match="split"):
        data.Shapes("test")


@pytest.mark.parametrize("size", [32, 64, 224])
def test_shapes_contract(size):
    ds = data.Shapes("val", size)
    assert len(ds) == 5_000 and len(data.Shapes("train", size)) == 50_000
    assert ds.label_names == ("shape", "color", "count") and ds.num_classes == (6, 6, 4)
    img, y = ds[3]
    assert img.shape == (3, size, size) and img.dtype == torch.uint8 and img.is_contiguous()
    assert y.shape == (3,) and y.dtype == torch.long
    assert all(0 <= int(y[t]) < n for t, n in enumerate(ds.num_classes))
    # geometry is in image units: the same index has the same labels and a similar picture at every size
    assert torch.equal(y, data.Shapes("val", 32)[3][1])
    small = torch.nn.functional.interpolate(img[None].float(), size=(32, 32), mode="area")[0]
    assert (small - data.Shapes("val", 32)[3][0].float()).abs().mean() < 12


def test_label_coverage():
    ds = data.Shapes("train", 32)
    labels = torch.stack([ds[i][1] for i in range(400)])
    for t, n in enumerate(ds.num_classes):
        counts = torch.bincount(labels[:, t], minlength=n)
        assert (counts > 0.5 * 400 / n).all(), (ds.label_names[t], counts)  # every class, roughly uniform


def test_color_label_is_the_object_hue():
    ds, hits = data.Shapes("train", 48), 0
    for i in range(60):
        img, y = ds[i]
        r, g, b = img.permute(1, 2, 0)[torch.from_numpy(saturated(img))].float().mean(0).tolist()
        hue = np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360
        hits += int(round(hue / 60)) % 6 == int(y[1])  # classes are 60° apart, red at 0°
    assert hits >= 59


def test_count_label_is_the_number_of_objects():
    ds, ok = data.Shapes("val", 64), 0
    for i in range(60):
        img, y = ds[i]
        ok += components(saturated(img)) == int(y[2]) + 1  # objects are kept apart, so each is one blob
    assert ok >= 58


def test_shape_classes_are_distinguishable():
    # single-object images: a rotation-invariant radial profile of the object pixels (fraction of them in 8
    # distance bins from their centroid, and area / max radius²) → nearest class centroid on held-out images.
    # Fails if two classes draw the same shape up to rotation (e.g. a square and a "diamond").
    ds, feats, ys = data.Shapes("train", 64), [], []
    for i in range(700):
        img, y = ds[i]
        if y[2] != 0:
            continue
        yy, xx = np.nonzero(saturated(img))
        d = np.hypot(yy - yy.mean(), xx - xx.mean())
        hist = np.histogram(d / d.max(), bins=8, range=(0, 1.0001))[0] / len(d)
        feats.append(np.append(hist, len(d) / (np.pi * d.max() ** 2)))
        ys.append(int(y[0]))
    feats, ys, n = np.array(feats), np.array(ys), len(ys) // 2
    assert len(set(ys[:n])) == 6
    centroids = np.stack([feats[:n][ys[:n] == k].mean(0) for k in range(6)])
    pred = np.argmin(((feats[n:, None] - centroids) ** 2).sum(-1), 1)
    assert (pred == ys[n:]).mean() >= 0.9


def make_folder(root):
    for split in ("train", "val"):
        for c, value in (("cat", 30), ("dog", 200)):
            d = root / split / c
            d.mkdir(parents=True)
            for k in range(3):
                Image.fromarray(np.full((37, 45, 3), value + k, np.uint8)).save(d / f"{k}.png")
    Image.fromarray(np.full((20, 30), 60, np.uint8), "L").save(root / "train" / "cat" / "grey.png")
    (root / "train" / "cat" / "1bad.png").write_bytes(b"not an image")  # sorts between 1.png and 2.png


def test_imagefolder_skips_corrupt_file_with_warning(tmp_path):
    make_folder(tmp_path)
    ds = data.build_dataset("imagefolder", str(tmp_path), "train", transform=data.eval_transform(32))
    assert ds.label_names == ("class",) and ds.num_classes == (2,) and len(ds) == 8
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
        items_again = [ds[i] for i in range(len(ds))]  # a known bad file is skipped silently
    assert len(w) == 1 and "1bad.png" in str(w[0].message) and ds.skipped == {2}  # the index of 1bad.png
    assert all(img.shape == (3, 32, 32) and img.dtype == torch.uint8 for img, _ in items)
    assert [int(y) for _, y in items] == [0] * 5 + [1] * 3
    assert torch.equal(items[2][0], items[3][0])  # the bad file's slot holds the next file, deterministically
    assert all(torch.equal(a[0], b[0]) for a, b in zip(items, items_again))
    assert int(items[-1][0].float().mean().round()) == 202 and int(items[4][0][1].float().mean()) == 60  # grey → RGB


def link(target, name):
    try:
        os.symlink(target, name, target_is_directory=True)
    except (OSError, NotImplementedError):
        pytest.skip("no symlinks here")


@pytest.mark.parametrize("links, extra", [
    ({"cat/loop": "cat"}, []),  # a loop to its own class folder (torchvision's walk: 41x the images)
    ({"cat/sub/up": "."}, []),  # a loop to the split folder
    ({"dog/same": "cat/sub"}, []),  # a second path to a folder walked already (as part of another class)
    ({"dog/out": "../outside", "../outside/back": "../outside"}, ["outside/3.png"]),  # a link out of the tree works
])
def test_imagefolder_counts_each_file_once_through_symlinks(tmp_path, links, extra):
    for f in ("train/cat/0.png", "train/cat/1.png", "train/cat/sub/2.png", "train/dog/0.png", "outside/3.png"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 6, 3), 9, np.uint8)).save(tmp_path / f)
    for name, target in links.items():
        link(os.path.realpath(tmp_path / "train" / target), tmp_path / "train" / name)
    ds = data.build_dataset("imagefolder", str(tmp_path), "train")
    real = sorted(os.path.relpath(os.path.realpath(p), tmp_path) for p, _ in ds.ds.samples)
    assert len(ds) == 4 + len(extra) and real == sorted(["train/cat/0.png", "train/cat/1.png", "train/cat/sub/2.png",
                                                          "train/dog/0.png", *extra])
    assert ds.ds.targets == [0, 0, 0] + [1] * (1 + len(extra))  # every file keeps its class; class discovery as before
    assert ds.num_classes == (2,)


def test_16bit_and_float_images_keep_their_brightness(tmp_path):
    # PIL's convert("RGB") clipped these: 16-bit PNGs came out white, float TIFFs in [0, 1] black
    d = tmp_path / "train" / "a"
    d.mkdir(parents=True)
    Image.fromarray(np.array([[0, 257, 32768, 65535]], np.uint16)).save(d / "0.png")  # mode I;16
    Image.fromarray(np.array([[0, 0.25, 0.5, 1]], np.float32)).save(d / "1.tif")  # mode F
    Image.fromarray(np.array([[0, 257, 32768, 65535]], np.int32)).save(d / "2.tif")  # mode I: 16-bit data
    Image.fromarray(np.full((20, 28), 32768, np.uint16)).save(d / "3.png")
    Image.fromarray(np.full((20, 28), 0.5, np.float32)).save(d / "4.tif")
    assert [Image.open(d / f).mode for f in ("0.png", "1.tif", "2.tif")] == ["I;16", "F", "I"]
    raw = data.build_dataset("imagefolder", str(tmp_path), "train")  # no transform: the decoded image
    for i, want in ((0, [0, 1, 128, 255]), (1, [0, 64, 128, 255]), (2, [0, 1, 128, 255])):
        img = raw[i][0]
        assert img.dtype == torch.uint8 and img.shape == (3, 1, 4) and (img == torch.tensor(want)).all(), (i, img)
    for tf in (data.train_transform(16), data.eval_transform(16)):  # the path training and evaluation take
        ds = data.build_dataset("imagefolder", str(tmp_path), "train", transform=tf)
        assert all(torch.equal(ds[i][0], torch.full((3, 16, 16), 128, dtype=torch.uint8)) for i in (3, 4))
    big_endian = Image.frombytes("I;16B", (8, 8), np.full((8, 8), 32768, ">u2").tobytes())
    assert (data.eval_transform(8)(big_endian) == 128).all()


def test_out_of_range_float_images_are_unreadable_files(tmp_path):
    d = tmp_path / "train" / "a"
    d.mkdir(parents=True)
    for k, value in enumerate((0.5, -0.5, 1.5, np.nan, 0.25)):
        Image.fromarray(np.full((5, 5), value, np.float32)).save(d / f"{k}.tif")
    Image.fromarray(np.full((5, 5), 70_000, np.int32)).save(d / "5.tif")  # beyond 16 bits
    ds = data.build_dataset("imagefolder", str(tmp_path), "train")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = [int(ds[i][0][0, 0, 0]) for i in range(len(ds))]
        ds[1]  # a known bad file is skipped silently
    assert got == [128, 64, 64, 64, 64, 128]  # a bad file's slot holds the next readable one
    assert ds.skipped == {1, 2, 3, 5} and len(w) == 4
    for (name, shown), msg in zip([("1.tif", "-0.5"), ("2.tif", "1.5"), ("3.tif", "nan"), ("5.tif", "70000")], w):
        assert name in str(msg.message) and shown in str(msg.message) and "ValueError" in str(msg.message)
    for f in ("0.tif", "4.tif"):
        os.remove(d / f)
    with pytest.raises(ValueError, match="consecutive unreadable images"), pytest.warns(UserWarning):
        data.build_dataset("imagefolder", str(tmp_path), "train")[0]  # nothing readable: one clear error


def test_missing_or_empty_data_messages(tmp_path):
    def error(exc, *args):
        with pytest.raises(exc) as e:
            data.build_dataset(*args)
        assert "\n" not in str(e.value)  # one clear line
        return str(e.value)

    msg = error(FileNotFoundError, "imagefolder", str(tmp_path / "nope"), "train")
    assert "ImageNet-style folders" in msg and str(tmp_path / "nope" / "train") in msg
    (tmp_path / "train").mkdir()
    assert "holds no images" in error(ValueError, "imagefolder", str(tmp_path), "train")
    (tmp_path / "train" / "cat").mkdir()  # a class folder without images
    assert "holds no images" in error(ValueError, "imagefolder", str(tmp_path), "train")
    assert "cifar-10-batches-py" in error(FileNotFoundError, "cifar10", str(tmp_path), "train")
    assert "cifar-100-python" in error(FileNotFoundError, "cifar100", str(tmp_path), "val")
    assert "stl10_binary" in error(FileNotFoundError, "stl10", str(tmp_path), "train")
    assert "needs --data_root" in error(ValueError, "cifar10", "", "train")
    assert "unknown dataset" in error(ValueError, "mnist42", str(tmp_path))
    assert isinstance(data.build_dataset("shapes", "/ignored", "val", size=40), data.Shapes)


@pytest.mark.parametrize("mode, shape", [("RGB", (31, 47, 3)), ("L", (31, 47)), ("RGBA", (31, 47, 4)),
                                         ("P", (47, 31, 3))])
def test_transforms_from_odd_images(mode, shape):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))
    img = img.convert(mode)
    for tf in (data.train_transform(24), data.eval_transform(24)):
        out = tf(img)
        assert type(out) is torch.Tensor and out.shape == (3, 24, 24) and out.dtype == torch.uint8
    # the evaluation view is exactly v2 Resize(short side 27) + CenterCrop(24)
    ref = v2.Compose([v2.ToImage(), v2.RGB(), v2.Resize(27, antialias=True), v2.CenterCrop(24)])(img.convert("RGB"))
    assert torch.equal(data.eval_transform(24)(img), ref.as_subclass(torch.Tensor))
    for x in (torch.rand(3, 31, 47), torch.randint(0, 256, (31, 47), dtype=torch.uint8)):  # float, 2-D
        assert data.train_transform(24)(x).dtype == torch.uint8 and data.eval_transform(24)(x).shape == (3, 24, 24)


def test_crop_flip_is_seeded_and_flips_half():
    x = data.Shapes("val", 64)[0][0]
    tf = data.train_transform(32)
    torch.manual_seed(0)
    a = [tf(x) for _ in range(3)]
    torch.manual_seed(0)
    assert all(torch.equal(p, tf(x)) for p in a) and not torch.equal(a[0], a[1])
    ramp = torch.arange(64, dtype=torch.uint8).expand(3, 64, 64).contiguous()
    full = data.train_transform(64, scale=(1.0, 1.0))  # a square image at full scale: identity or mirror
    outs = [full(ramp) for _ in range(200)]
    assert all(torch.equal(o, ramp) or torch.equal(o, ramp.flip(-1)) for o in outs)
    assert 70 < sum(torch.equal(o, ramp.flip(-1)) for o in outs) < 130
    with pytest.raises(ValueError, match="crop scale"):
        data.train_transform(32, scale=(0.0, 1.0))


def test_step_sampler_splits_global_batches_over_ranks_and_micro_steps():
    keys = lambda s, start=0: (s.set_epoch(3, start), list(s))[1]  # noqa: E731
    one = keys(data.StepSampler(50, 12, 12, 0, 1, seed=5))  # 4 steps of 12; 2 images left over
    assert len(one) == 48 and len({i for _, i in one}) == 48 and all(e == 3 for e, _ in one)
    split = [keys(data.StepSampler(50, 12, 3, r, 2, seed=5)) for r in range(2)]  # 2 ranks × 2 micro-steps of 3
    per_step = [sum((ks[b * 6:(b + 1) * 6] for ks in split), []) for b in range(4)]
    assert sum(per_step, []) == one  # rank 0's micro-steps, then rank 1's: the single process's global batch
    assert keys(data.StepSampler(50, 12, 12, 0, 1, seed=5), start=2) == one[24:]  # a resume reads no skipped data


def test_epoch_indexed_transforms_are_a_function_of_epoch_and_index():
    ds = data.EpochIndexed(data.Shapes("val", 48, length=4, transform=data.train_transform(32)), seed=0)
    assert torch.equal(ds[(2, 1)][0], ds[(2, 1)][0]) and not torch.equal(ds[(2, 1)][0], ds[(3, 1)][0])
