"""Datasets and loaders. Items are always (image uint8 [3, H, W], labels LongTensor [T]); every dataset carries
`label_names` and `num_classes` (T entries), so probes and multitask finetuning (IWM §5) treat all data alike.

- `Shapes`: the built-in procedural dataset: no files, no download, any resolution, deterministic from
  (seed, split, index). A textured, tinted background with 1-4 objects that share a shape class and a colour
  class, each with its own size, position and rotation. Labels: shape, colour, count − 1 — real, learnable targets.
- ImageNet-style folders and torchvision's CIFAR-10/100, STL-10, read from a local root (no download).
- `train_transform` is the shared random-resized crop + flip I' of IWM §3 (per sample, in the loader workers);
  the per-view photometric part is batched on the device by augment.py.
"""
import math
import os
import warnings

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

# ---------------------------------------------------------------------------------------------- built-in data
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLORS = ("red", "yellow", "green", "cyan", "blue", "magenta")  # hue classes, 60° apart


def _inside(shape, u, v):
    """Membership of object-frame coordinates (unit radius) in each shape class."""
    if shape == 0:
        return u * u + v * v <= 1
    if shape == 1:
        return np.maximum(np.abs(u), np.abs(v)) <= 0.78
    if shape == 2:  # equilateral triangle inscribed in the unit circle
        return (v >= -0.5) & (math.sqrt(3) * np.abs(u) + v <= 1)
    if shape == 3:
        return np.abs(u) + np.abs(v) <= 1
    if shape == 4:
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1))
    r2 = u * u + v * v
    return (r2 <= 1) & (r2 >= 0.36)  # ring


def _hsv(h, s, v):
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)  # RGB in [0, 1], branchless HSV → RGB


class Shapes(torch.utils.data.Dataset):
    """Built-in procedural dataset (see the module docstring). Train and val are different streams."""
    label_names = ("shape", "color", "count")
    num_classes = (len(SHAPES), len(COLORS), 4)

    def __init__(self, split="train", size=64, length=None, seed=0, transform=None):
        if split not in ("train", "val"):
            raise ValueError(f"Shapes split must be train or val, got {split!r}")
        self.split, self.size, self.seed, self.transform = split, size, seed, transform
        self.length = length or (50_000 if split == "train" else 5_000)
        self.skipped = 0
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        self._grid = (xx, yy)

    def __len__(self):
        return self.length

    def render(self, i):
        """(image uint8 HWC numpy, labels) for index i, a pure function of (seed, split, i)."""
        rng = np.random.default_rng([self.seed, self.split == "val", i])
        S, (xx, yy) = self.size, self._grid
        shape, color, count = rng.integers(len(SHAPES)), rng.integers(len(COLORS)), rng.integers(1, 5)
        # background: a pale random tint modulated by a sinusoid of random orientation and frequency
        bg = _hsv(rng.random(), 0.25 * rng.random(), 0.35 + 0.4 * rng.random())
        theta, freq = rng.random() * math.pi, (2 + 6 * rng.random()) * 2 * math.pi / S
        wave = 0.85 + 0.15 * np.sin(freq * (xx * math.cos(theta) + yy * math.sin(theta)) + 6.3 * rng.random())
        img = wave.astype(np.float32)[..., None] * (bg * 255).astype(np.float32)  # float32: half the memory traffic
        placed = []
        for _ in range(count):
            r = S * (0.16 - 0.02 * count + 0.06 * rng.random())  # smaller objects when there are more
            for _try in range(20):  # keep objects apart so the count label stays true
                cx, cy = rng.uniform(r, S - r, size=2)
                if all((cx - px) ** 2 + (cy - py) ** 2 > (r + pr) ** 2 for px, py, pr in placed):
                    break
            placed.append((cx, cy, r))
            rgb = _hsv((color + rng.uniform(-0.25, 0.25)) / len(COLORS), 0.75 + 0.25 * rng.random(),
                       0.7 + 0.3 * rng.random())
            a = rng.random() * 2 * math.pi
            y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, S)  # rasterise inside the bounding box only
            x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, S)
            dx, dy = (xx[y0:y1, x0:x1] - cx) / r, (yy[y0:y1, x0:x1] - cy) / r
            u, v = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
            img[y0:y1, x0:x1][_inside(shape, u, v)] = rgb * 255
        return img.astype(np.uint8), torch.tensor([shape, color, count - 1])

    def __getitem__(self, i):
        img, labels = self.render(i)
        img = torch.from_numpy(img).permute(2, 0, 1)
        return (self.transform(img) if self.transform else img), labels


# ---------------------------------------------------------------------------------------------- files on disk
class Labeled(torch.utils.data.Dataset):
    """A torchvision dataset as (uint8 image, LongTensor [1]). An unreadable image is skipped with a warning
    naming the file (the next index is used instead) and counted in `skipped` (per process)."""
    label_names = ("class",)

    def __init__(self, ds, num_classes, transform):
        self.ds, self.num_classes, self.transform, self.skipped = ds, (num_classes,), transform, 0

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        for j in range(i, i + 20):
            try:
                img, y = self.ds[j % len(self.ds)]
                return (self.transform(img) if self.transform else v2.functional.pil_to_tensor(img)), torch.tensor([y])
            except (OSError, ValueError, SyntaxError) as e:  # what PIL raises on truncated / corrupt files
                self.skipped += 1
                path = self.ds.samples[j % len(self.ds)][0] if hasattr(self.ds, "samples") else f"index {j}"
                warnings.warn(f"skipping unreadable image {path}: {e} ({self.skipped} skipped so far)")
        raise RuntimeError(f"20 consecutive unreadable images from index {i}: is the data folder intact?")


TORCHVISION = {  # name: (class, classes, folder it expects under root, split argument for train / val)
    "cifar10": (torchvision.datasets.CIFAR10, 10, "cifar-10-batches-py", lambda s: {"train": s == "train"}),
    "cifar100": (torchvision.datasets.CIFAR100, 100, "cifar-100-python", lambda s: {"train": s == "train"}),
    "stl10": (torchvision.datasets.STL10, 10, "stl10_binary", lambda s: {"split": "train" if s == "train" else "test"}),
}


def build_dataset(name, root=None, split="train", transform=None, size=64, length=None):
    """`name`: shapes | imagefolder | cifar10 | cifar100 | stl10; split: train | val. Missing or empty data is a
    FileNotFoundError / ValueError saying what to put where."""
    if name == "shapes":
        return Shapes(split, size, length, transform=transform)
    if not root:
        raise ValueError(f"--data {name} needs --data_root (the folder that holds the dataset)")
    if name == "imagefolder":
        path = os.path.join(root, split)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"expected ImageNet-style folders {root}/{split}/<class>/<image>; "
                                    f"{path} does not exist")
        try:
            ds = torchvision.datasets.ImageFolder(path)
        except FileNotFoundError:
            raise ValueError(f"{path} holds no images: expected {path}/<class>/<image>.JPEG (jpg/png/...)") from None
        return Labeled(ds, len(ds.classes), transform)
    if name not in TORCHVISION:
        raise ValueError(f"unknown dataset {name!r}; choose shapes, imagefolder or {', '.join(TORCHVISION)}")
    cls, classes, folder, split_args = TORCHVISION[name]
    try:
        ds = cls(root, download=False, **split_args(split))
    except RuntimeError:
        raise FileNotFoundError(f"{name} not found: put the extracted '{folder}' folder from the official archive "
                                f"inside {root} (downloads are off)") from None
    return Labeled(ds, classes, transform)


def _to_rgb(img):
    """PIL or tensor, grey / RGBA / RGB → 3-channel image tensor (v2.RGB leaves RGBA at 4 channels)."""
    if isinstance(img, Image.Image):
        return v2.functional.pil_to_tensor(img.convert("RGB"))
    return img[:3] if img.shape[0] >= 3 else img.expand(3, -1, -1)


def _rgb():
    return v2.Compose([v2.Lambda(_to_rgb), v2.ToImage()])


def train_transform(size, scale=(0.3, 1.0)):
    """I' of IWM §3: random-resized crop (scale as I-JEPA) + horizontal flip, shared by the source and target."""
    return v2.Compose([_rgb(), v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
                       v2.RandomHorizontalFlip(), v2.ToDtype(torch.uint8, scale=True), v2.ToPureTensor()])


def eval_transform(size):
    return v2.Compose([_rgb(), v2.Resize(round(size * 256 / 224), antialias=True), v2.CenterCrop(size),
                       v2.ToDtype(torch.uint8, scale=True), v2.ToPureTensor()])


def make_loader(dataset, batch_size, *, train, workers=0, seed=0, drop_last=None):
    """A DataLoader for one process or for DDP (DistributedSampler when torch.distributed is initialised): the
    caller calls `loader.sampler.set_epoch(epoch)` each epoch when the sampler has it, so shuffles differ."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=train)
    elif train:
        sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = torch.utils.data.SequentialSampler(dataset)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        drop_last=train if drop_last is None else drop_last)


if __name__ == "__main__":
    import time
    torch.set_num_threads(1)
    ds = Shapes("train", 64)
    ds[0]
    t0, n = time.perf_counter(), 2000
    for i in range(n):
        ds[i]
    print(f"Shapes: {n / (time.perf_counter() - t0):.0f} images/s at 64px on 1 CPU core")
