"""Datasets, transforms and loaders. Items are always (image uint8 [3, H, W], labels LongTensor [T]); every dataset
carries `label_names` and `num_classes` (T entries each), so probes and multitask finetuning (IWM §5, Table 7) treat
all data alike.

- `Shapes`: the built-in procedural dataset: no files, no download, any resolution, a pure function of
  (seed, split, index). A textured, low-saturation background with 1-4 objects that share a shape class and a
  colour class, each with its own size, position, rotation and a small hue jitter. Labels: shape, colour,
  count - 1: real, learnable targets (tests/test_data.py checks each against the pixels).
- ImageNet-style folders and torchvision's CIFAR-10/100, STL-10, Food-101 read from a local root (never downloaded).
- `train_transform` is the shared random-resized crop + flip that makes I' in IWM §3 (per sample, on CPU); the
  per-view photometric part (colour jitter, blur, grayscale, solarize → the action a_{x→y}) is done batched on the
  device by augment.py.
"""
import colorsys
import math
import os
import warnings

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

# ---------------------------------------------------------------------------------------------- built-in data
SHAPES = ("circle", "square", "triangle", "cross", "ring", "star")
COLORS = ("red", "yellow", "green", "cyan", "blue", "magenta")  # hue classes, 60° apart
STAR_TIP = 2 * math.pi / 5  # angle between the tips of the 5-point star


def _sdf(shape, u, v):
    """Signed distance (≈, negative inside) of object-frame points to the shape; circumradius ≈ 1 for all, so one
    size/placement rule serves every class. Square ≠ rotated diamond, so no two classes are the same shape."""
    if shape == 0:
        return np.hypot(u, v) - 1
    au, av = np.abs(u), np.abs(v)
    if shape == 1:
        return np.maximum(au, av) - 0.75
    if shape == 2:  # equilateral triangle, circumradius 1.15: max over its three edge half-planes
        return np.maximum(-v - 0.575, (math.sqrt(3) / 2) * au + 0.5 * v - 0.575)
    if shape == 3:  # plus sign: union (min) of two bars of half-width 0.24
        return np.minimum(np.maximum(au - 1, av - 0.24), np.maximum(au - 0.24, av - 1))
    if shape == 4:  # annulus, radii 0.45 .. 1
        return np.abs(np.hypot(u, v) - 0.725) - 0.275
    # 5-point star in polar form: the boundary radius goes linearly from 0.42 (between tips) to 1.05 (tips);
    # 0.5 turns the radial gap into roughly the distance to the slanted edges (only the anti-aliasing uses it)
    phi = np.abs(np.mod(np.arctan2(v, u), STAR_TIP) - STAR_TIP / 2) / (STAR_TIP / 2)
    return 0.5 * (np.hypot(u, v) - 0.42 - 0.63 * phi)


class Shapes(torch.utils.data.Dataset):
    """Built-in procedural dataset (see the module docstring). Train and val are different random streams.
    Geometry lives in [0, 1] image units, so one index gives the same picture at every `size`."""
    label_names = ("shape", "color", "count")
    num_classes = (len(SHAPES), len(COLORS), 4)

    def __init__(self, split="train", size=64, length=None, seed=0, transform=None):
        if split not in ("train", "val"):
            raise ValueError(f"Shapes split must be 'train' or 'val', got {split!r}")
        if int(size) < 8 or (length is not None and int(length) < 1):
            raise ValueError(f"Shapes needs size >= 8 and length >= 1, got size={size}, length={length}")
        self.split, self.size, self.seed, self.transform = split, int(size), int(seed), transform
        self.length = int(length) if length else (50_000 if split == "train" else 5_000)
        self.skipped = 0  # same attribute as on-disk datasets; procedural images never fail
        self._xs = (np.arange(self.size, dtype=np.float32) + 0.5) / self.size  # pixel centres, 1-D (separable)

    def __len__(self):
        return self.length

    def render(self, i):
        """(image uint8 [3, S, S], labels [3]) for index i: a pure function of (seed, split, i)."""
        if not 0 <= i < self.length:
            raise IndexError(f"Shapes index {i} out of range [0, {self.length})")
        # fixed-length draws first (per-call overhead dominates at this size; Python floats are fastest), then
        # 30 candidate positions per object, so every parameter has a fixed place in the stream
        rng = np.random.default_rng((self.seed, self.split == "val", i))
        u = iter(rng.random(40).tolist())  # 13 + 4 radii + 4 × 4 per object used
        S, xs = self.size, self._xs
        shape, color, count = int(next(u) * 6), int(next(u) * 6), 1 + int(next(u) * 4)
        cand = rng.random((count, 30, 2))

        # background: two low-saturation tints mixed by a rotated sinusoid; gain 1 → smooth, 8 → two-tone stripes.
        # sin(ax + by + p) = sin(ax + p)cos(by) + cos(ax + p)sin(by): four 1-D sines and two outer products
        h = next(u)
        c1 = np.array(colorsys.hsv_to_rgb(h, 0.3 * next(u), 0.3 + 0.55 * next(u)), np.float32)
        c2 = np.array(colorsys.hsv_to_rgb((h + 0.2 * next(u) - 0.1) % 1, 0.3 * next(u), 0.3 + 0.55 * next(u)), np.float32)
        theta, freq, phase, gain = math.pi * next(u), 2 * math.pi * (1 + 5 * next(u)), 6.3 * next(u), 1 + 7 * next(u)
        ax, by = xs * (freq * math.cos(theta)) + phase, xs * (freq * math.sin(theta))
        wave = np.outer(np.cos(by), np.sin(ax)) + np.outer(np.sin(by), np.cos(ax))  # [y, x]
        t = np.clip(0.5 + 0.5 * gain * wave, 0, 1)
        img = (255 * c1)[:, None, None] + (255 * (c2 - c1))[:, None, None] * t  # [3, S, S] float32

        # objects: smaller when there are more; each takes its first candidate centre that keeps a gap to the
        # ones already placed (else the one that overlaps least), so the count stays visible
        radii = (0.25 - 0.025 * count) * (0.8 + 0.4 * np.array([next(u) for _ in range(count)]))
        centres = np.zeros((0, 2))
        for k, r in enumerate(radii):
            c = r + (1 - 2 * r) * cand[k]  # [30, 2], centres keep the whole object inside
            gap = (np.linalg.norm(c[:, None] - centres, axis=-1) - radii[:k] - r).min(1, initial=1)  # [30]
            ok = gap > 0.03
            centres = np.vstack([centres, c[np.argmax(ok) if ok.any() else np.argmax(gap)]])
        for (cx, cy), r in zip(centres.tolist(), radii.tolist()):
            rgb = 255 * np.array(colorsys.hsv_to_rgb((color + 0.4 * next(u) - 0.2) / 6 % 1, 0.75 + 0.25 * next(u),
                                                     0.7 + 0.3 * next(u)), np.float32)
            a = 2 * math.pi * next(u)
            # rasterise only the bounding box; 1-D offsets, rotated by broadcasting into 2-D object coordinates
            x0, x1 = max(int((cx - 1.2 * r) * S), 0), min(int((cx + 1.2 * r) * S) + 2, S)
            y0, y1 = max(int((cy - 1.2 * r) * S), 0), min(int((cy + 1.2 * r) * S) + 2, S)
            dx, dy = (xs[x0:x1] - cx) / r, (xs[y0:y1, None] - cy) / r
            ca, sa = math.cos(a), math.sin(a)
            d = _sdf(shape, dx * ca + dy * sa, dy * ca - dx * sa)
            alpha = np.clip(0.5 - d * (r * S), 0, 1)  # coverage of a pixel by an edge at distance d: anti-aliasing
            patch = img[:, y0:y1, x0:x1]
            patch += alpha * (rgb[:, None, None] - patch)  # in place: blend over the background
        return torch.from_numpy((img + 0.5).astype(np.uint8)), torch.tensor([shape, color, count - 1])

    def __getitem__(self, i):
        img, labels = self.render(i)
        return (self.transform(img) if self.transform else img), labels


# ---------------------------------------------------------------------------------------------- files on disk
class Labeled(torch.utils.data.Dataset):
    """A torchvision dataset as (uint8 image, LongTensor [1]). An unreadable image file is skipped with a warning
    naming it, the next index is used instead (deterministic), and `skipped` counts bad files (per process)."""
    label_names = ("class",)

    def __init__(self, ds, num_classes, transform):
        self.ds, self.num_classes, self.transform, self.bad = ds, (num_classes,), transform, set()

    @property
    def skipped(self):
        return len(self.bad)

    def __len__(self):
        return len(self.ds)

    def _load(self, j):
        if not hasattr(self.ds, "samples"):  # in-memory arrays (CIFAR, STL): nothing to fail
            return self.ds[j]
        path, y = self.ds.samples[j]
        if j in self.bad:
            return None
        try:
            return self.ds.loader(path), y  # pil_loader calls .convert, so truncated files fail here
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # what PIL raises on bad files
            self.bad.add(j)
            warnings.warn(f"skipping unreadable image {path} ({type(e).__name__}: {e}); "
                          f"{len(self.bad)} file(s) skipped so far in this process")
            return None

    def __getitem__(self, i):
        n = len(self.ds)
        for j in range(i, i + min(n, 100)):
            item = self._load(j % n)
            if item is not None:  # the transform runs outside the try: its bugs are not "unreadable files"
                img, y = item
                return (self.transform(img) if self.transform else _to_rgb(img)), torch.tensor([int(y)])
        raise ValueError(f"{min(n, 100)} consecutive unreadable images from index {i}: is the data folder intact?")


# name: (class, what must be under root, split arguments for "train" / "val")
TORCHVISION = {
    "cifar10": (torchvision.datasets.CIFAR10, "cifar-10-batches-py/ (from cifar-10-python.tar.gz)",
                lambda s: {"train": s == "train"}),
    "cifar100": (torchvision.datasets.CIFAR100, "cifar-100-python/ (from cifar-100-python.tar.gz)",
                 lambda s: {"train": s == "train"}),
    "stl10": (torchvision.datasets.STL10, "stl10_binary/ (from stl10_binary.tar.gz)",
              lambda s: {"split": "train" if s == "train" else "test"}),
    "food101": (torchvision.datasets.Food101, "food-101/ (from food-101.tar.gz)",
                lambda s: {"split": "train" if s == "train" else "test"}),
}


def build_dataset(name, root=None, split="train", transform=None, size=64, length=None):
    """`name`: shapes | imagefolder | cifar10 | cifar100 | stl10 | food101; `split`: train | val (val = the
    official test split for torchvision sets). `size`, `length`: built-in Shapes only (root is ignored there).
    Missing or empty data → FileNotFoundError / ValueError saying what to put where."""
    if name == "shapes":
        return Shapes(split, size, length, transform=transform)
    if name != "imagefolder" and name not in TORCHVISION:
        raise ValueError(f"unknown dataset {name!r}; choose shapes, imagefolder, {', '.join(TORCHVISION)}")
    if not root:
        raise ValueError(f"dataset {name!r} needs --data_root (the folder that holds the dataset)")
    if name == "imagefolder":
        path = os.path.join(root, split)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"expected ImageNet-style folders {os.path.join(root, split, '<class>', '<image>.JPEG')}"
                                    f"; got no folder {path}")
        try:
            ds = torchvision.datasets.ImageFolder(path)
        except FileNotFoundError:  # no class folders, or class folders without image files
            raise ValueError(f"{path} holds no images: expected {path}/<class>/<image>.JPEG (or .jpg/.png/...)") from None
        return Labeled(ds, len(ds.classes), transform)
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val' for {name}, got {split!r}")
    cls, folder, split_args = TORCHVISION[name]
    try:
        ds = cls(root, download=False, **split_args(split))
    except (RuntimeError, OSError):  # torchvision: "Dataset not found or corrupted"
        raise FileNotFoundError(f"{name} not found: put the extracted {folder} inside {root} "
                                f"(downloads are off)") from None
    return Labeled(ds, len(ds.classes), transform)


class EpochIndexed(torch.utils.data.Dataset):
    """Item (epoch, i) → dataset[i] with the torch RNG seeded from (seed, epoch, i), so the random transform of
    every sample is a pure function of its place in training: the same with any number of workers, ranks or
    resumes."""
    def __init__(self, ds, seed):
        self.ds, self.seed = ds, seed

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        epoch, i = key
        with torch.random.fork_rng(devices=[]):  # seed the CPU generator only: torch.manual_seed would also
            # queue lazy CUDA seeding and cost ~4 ms per call
            torch.default_generator.manual_seed((self.seed * 1_000_003 + epoch) * 100_000_007 + i)
            return self.ds[i]


# ---------------------------------------------------------------------------------------------- transforms
def _to_rgb(img):
    """PIL / numpy HWC / tensor, any of grey, grey+alpha, RGB, RGBA, palette → 3-channel image tensor
    (v2.RGB would leave RGBA at 4 channels and ToImage would keep palette indices)."""
    if isinstance(img, Image.Image):
        return v2.functional.pil_to_tensor(img if img.mode == "RGB" else img.convert("RGB"))
    img = v2.functional.to_image(img)  # numpy HWC / tensor [C,H,W] or [H,W] → [C, H, W]
    return img[:3] if img.shape[-3] >= 3 else img[..., :1, :, :].expand(*img.shape[:-3], 3, *img.shape[-2:])


def _finish():  # uint8 (float input is scaled from [0, 1]) and a plain tensor, so collate/pin stay cheap
    return [v2.ToDtype(torch.uint8, scale=True), v2.ToPureTensor()]


def train_transform(size, scale=(0.3, 1.0)):
    """I' of IWM §3: random-resized crop (scale as the I-JEPA configs) + horizontal flip, shared by source and
    target. The photometric part of the views is not here: augment.py applies it batched on the device."""
    return v2.Compose([v2.Lambda(_to_rgb), v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
                       v2.RandomHorizontalFlip(), *_finish()])


def eval_transform(size):
    """Resize the short side to size·256/224 then center crop (the standard ImageNet evaluation view)."""
    return v2.Compose([v2.Lambda(_to_rgb), v2.Resize(round(size * 256 / 224), antialias=True), v2.CenterCrop(size),
                       *_finish()])


# ---------------------------------------------------------------------------------------------- loader
def make_loader(dataset, batch_size, *, train, workers=0, seed=0, drop_last=None):
    """A DataLoader for one process or for DDP (DistributedSampler when torch.distributed is initialised).
    The caller must call `loader.sampler.set_epoch(epoch)` each epoch when the sampler has it (DDP), otherwise
    every epoch repeats the same order; the single-process RandomSampler advances its own seeded generator."""
    drop_last = train if drop_last is None else drop_last
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=drop_last)
    elif train:
        sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = torch.utils.data.SequentialSampler(dataset)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed + 1))  # seeds the workers' RNGs (random transforms)


if __name__ == "__main__":
    import time
    torch.set_num_threads(1)  # the requirement is per CPU core
    for name, tf in (("raw", None), ("+ train_transform(64)", train_transform(64))):
        ds, n = Shapes("train", 64, transform=tf), 3000
        ds[0]
        t0 = time.perf_counter()
        for i in range(n):
            ds[i]
        print(f"Shapes {name}: {n / (time.perf_counter() - t0):.0f} images/s at 64 px on 1 CPU core")
