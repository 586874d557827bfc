"""Datasets, transforms and samplers. Items are always (image uint8 [3, H, W], labels LongTensor [T]); every dataset
carries `label_names` and `num_classes` (T entries each), so probes and multitask finetuning (IWM §5, Table 7) treat
all data alike.

- `Shapes`: built-in procedural data (no files, any resolution, a pure function of (seed, split, index)): 1-4
  objects of one shape class and one color class, each with its own size, position, rotation and hue jitter, on a
  textured, low-saturation background; labels shape, color, count - 1: real, learnable targets (tests check each).
- ImageNet-style folders and torchvision's CIFAR-10/100, STL-10, Food-101 read from a local root (never downloaded).
- `train_transform` (= `CropFlip`, per sample, on CPU) is the shared random-resized crop + flip that makes I' in IWM
  §3 (scale (0.3, 1.0) as the I-JEPA configs): source and target views are both cut from it. Their photometric part
  (jitter, blur, grayscale, solarize → a_{x→y}) is batched on the device by augment.py.
- `EpochIndexed` + `StepSampler` (train.py): which images a step sees and their crops are a function of the seed.
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


def _sdf(shape, dx, dy, rot):
    """Signed distance (≈, negative inside) to the shape, in radius units, of pixels at offsets dx [n, 1, B],
    dy [n, B, 1] from n object centres; rot [n, 3, 1, 1] holds cos, sin and turns·5 of each object's rotation.
    Circumradius ≈ 1 for all shapes, so one size/placement rule serves every class; no class is a rotation of
    another (a "diamond" would be a rotated square). Round shapes skip the rotation (the star shifts its phase),
    and sqrt(u²+v²) / min-max are used because np.hypot / np.clip are several times slower on small arrays."""
    if shape in (0, 4, 5):
        rho = np.sqrt(dx * dx + dy * dy)  # rotation-invariant, and the squares are 1-D
        if shape == 0:
            return rho - 1
        if shape == 4:  # annulus, radii 0.45 .. 1
            return np.abs(rho - 0.725) - 0.275
        # 5-point star: the boundary radius goes linearly from 1.05 at a tip (f = 0) to 0.42 halfway between tips
        # (f = 0.5); 0.5 turns the radial gap into about the distance to the slanted edges (only anti-aliasing uses it)
        p = np.arctan2(dy, dx) * (5 / (2 * math.pi)) - rot[:, 2]
        return 0.5 * (rho - 1.05 + 1.26 * np.abs(p - np.rint(p)))
    ca, sa = rot[:, 0], rot[:, 1]
    au, av = np.abs(dx * ca + dy * sa), dy * ca - dx * sa  # object frame: rotate by the object's angle
    if shape == 1:
        return np.maximum(au, np.abs(av)) - 0.75
    if shape == 2:  # equilateral triangle, circumradius 1.15: max over its three edge half-planes
        return np.maximum(-av - 0.575, (math.sqrt(3) / 2) * au + 0.5 * av - 0.575)
    av = np.abs(av)  # plus sign: union (min) of two bars of half-width 0.24
    return np.minimum(np.maximum(au - 1, av - 0.24), np.maximum(au - 0.24, av - 1))


def _mix(x):
    """splitmix64 finaliser: spreads consecutive integers over all 64 bits."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


class Shapes(torch.utils.data.Dataset):
    """Built-in procedural data (module docstring); train and val are different random streams. Geometry lives in
    [0, 1] image units, so an index gives the same picture at every `size`. Speed: numpy's per-call overhead, not
    arithmetic, dominates at 64 px, so scalars are Python floats and an image costs ~40 whole-array operations."""
    label_names = ("shape", "color", "count")
    num_classes = (len(SHAPES), len(COLORS), 4)

    def __init__(self, split="train", size=64, length=None, seed=0, transform=None):
        if split not in ("train", "val") or int(size) < 8 or (length is not None and int(length) < 1):
            raise ValueError(f"Shapes needs split 'train' or 'val', size >= 8 and length >= 1; got split={split!r}, "
                             f"size={size}, length={length}")
        self.split, self.size, self.seed, self.transform = split, int(size), int(seed), transform
        self.length = int(length) if length else (50_000 if split == "train" else 5_000)
        self._xs = (np.arange(self.size) + 0.5) / self.size  # pixel centres in image units
        self._ar = np.arange(self.size + 4, dtype=np.float32)  # pixel offsets inside an object's box
        # background color ramps, one per stripe sharpness ("gain" 1 → smooth sinusoid … 8 → two-tone):
        # rows (1, t) over one period of the wave, so the 256-entry color table is one matmul
        t = np.clip(0.5 + 0.5 * np.linspace(1, 8, 8)[:, None] * np.sin(np.arange(256) * (2 * math.pi / 256)), 0, 1)
        self._ramp = np.stack([np.ones_like(t), t], -1).astype(np.float32)  # [8, 256, 2]
        self._pcg = np.random.PCG64()  # re-seeded per item (see render); one per process, not thread-safe
        self._rng = np.random.Generator(self._pcg)

    def __len__(self):
        return self.length

    def render(self, i):
        """(image uint8 [3, S, S], labels [3]) for index i: a pure function of (seed, split, i)."""
        i = int(i)
        if not 0 <= i < self.length:
            raise IndexError(f"Shapes index {i} out of range [0, {self.length})")
        # One PCG64 re-seeded per image by setting its state to a hash of (seed, split, i): 10x cheaper than a new
        # default_rng. 33 parameters first, then candidate layouts (their number varies, so they come last).
        key = _mix(_mix(_mix(self.seed) ^ (self.split == "val")) ^ i)
        self._pcg.state = {"bit_generator": "PCG64", "state": {"state": key << 64 | _mix(key), "inc": 2 * key + 1},
                           "has_uint32": 0, "uinteger": 0}
        u = iter(self._rng.random(33).tolist())
        S, xs = self.size, self._xs
        shape, color, count = int(next(u) * 6), int(next(u) * 6), 1 + int(next(u) * 4)

        # background: two low-saturation tints mixed by a rotated sinusoid of random frequency and sharpness. The
        # color depends on the wave's phase only: a 256-entry table of RGBA packed in uint32, gathered with the
        # phase in table steps (uint8 arithmetic wraps it for free); ax + by is one outer sum
        h = next(u)
        c1 = colorsys.hsv_to_rgb(h, 0.3 * next(u), 0.3 + 0.55 * next(u))
        c2 = colorsys.hsv_to_rgb((h + 0.2 * next(u) - 0.1) % 1, 0.3 * next(u), 0.3 + 0.55 * next(u))
        ends = np.array([[255 * a for a in c1] + [0], [255 * (b - a) for a, b in zip(c1, c2)] + [0]], np.float32)
        lut = (self._ramp[int(8 * next(u))] @ ends).astype(np.uint8).view(np.uint32)[:, 0]  # [256]
        theta, steps = math.pi * next(u), 256 * (1 + 5 * next(u))  # 1-6 periods across the image
        # (float → int → uint8: the int → uint8 cast wraps on every platform, a float → uint8 one need not)
        ax = (xs * (steps * math.cos(theta)) + 256 * (8 + next(u))).astype(np.intp).astype(np.uint8)  # + phase
        by = (xs * (steps * math.sin(theta))).astype(np.intp).astype(np.uint8)
        rgba = lut[np.add.outer(by, ax)].view(np.uint8).reshape(S, S, 4)
        img = np.ascontiguousarray(rgba.transpose(2, 0, 1)[:3])  # [3, S, S]

        # objects: smaller when there are more. Greedy placement in plain Python (cheaper than array calls here):
        # each object takes the first of 16 candidate centres that keeps a gap to those placed; a layout where one
        # cannot is redrawn (up to 8 times, then the least-overlapping layout is kept), so the count stays visible
        radii = [(0.25 - 0.03 * count) * (0.8 + 0.4 * next(u)) for _ in range(count)]
        placed, best_gap = None, -9.0
        for _layout in range(8):
            cand, pts, worst = iter(self._rng.random(32 * count).tolist()), [], 1.0
            for r in radii:
                best, bg = None, -9.0
                for _try in range(16):
                    x, y = r + (1 - 2 * r) * next(cand), r + (1 - 2 * r) * next(cand)  # the object stays inside
                    g = min([math.hypot(x - px, y - py) - r - pr for px, py, pr in pts], default=1.0)  # the gap
                    if g > bg:
                        best, bg = (x, y, r), g
                    if g > 0.03:
                        break
                pts.append(best)
                worst = min(worst, bg)
            if worst > best_gap:
                placed, best_gap = pts, worst
            if worst > 0.03:
                break

        # rasterise all objects at once (they share the shape class) in equal B×B pixel boxes; a box's pixel
        # offsets from its object's centre, in radius units, are affine in its column / row: o + index / (r·S)
        B = int(2.4 * max(radii) * S) + 3
        coef, rot, box, rgb = [], [], [], []
        for cx, cy, r in placed:
            a, q = next(u), r * S
            x0, y0 = math.floor(cx * S - B / 2), math.floor(cy * S - B / 2)
            coef.append([[(x0 + 0.5 - cx * S) / q, 1 / q], [(y0 + 0.5 - cy * S) / q, 1 / q]])
            rot.append([math.cos(2 * math.pi * a), math.sin(2 * math.pi * a), 5 * a, q])
            box.append((x0, y0))
            rgb.append(colorsys.hsv_to_rgb((color + 0.4 * next(u) - 0.2) / 6 % 1, 0.75 + 0.25 * next(u),
                                           0.7 + 0.3 * next(u)))
        c, rot = np.array(coef, np.float32), np.array(rot, np.float32)[:, :, None, None]
        lin = c[..., :1] + c[..., 1:] * self._ar[:B]  # [n, 2, B]: x then y offsets
        d = _sdf(shape, lin[:, 0, None, :], lin[:, 1, :, None], rot)  # [n, B, B]
        # pixel coverage by an edge at signed distance d·r·S pixels: anti-aliasing
        alpha = d * -rot[:, 3]
        alpha += 0.5
        alpha = np.minimum(np.maximum(alpha, 0, out=alpha), 1, out=alpha)
        rgb = 255 * np.array(rgb, np.float32)[:, :, None, None]
        for k, (x0, y0) in enumerate(box):  # blend each box over the image, clipped to the image
            xa, xb, ya, yb = max(x0, 0), min(x0 + B, S), max(y0, 0), min(y0 + B, S)
            patch = img[:, ya:yb, xa:xb]
            step = alpha[k, ya - y0:yb - y0, xa - x0:xb - x0] * (rgb[k] - patch)
            np.add(patch, step, out=patch, casting="unsafe")  # written back in place; truncation: < 1 grey level
        return torch.from_numpy(img), torch.from_numpy(np.array([shape, color, count - 1], np.int64))

    def __getitem__(self, i):
        img, labels = self.render(i)
        return (self.transform(img) if self.transform else img), labels


# ---------------------------------------------------------------------------------------------- files on disk
class Labeled(torch.utils.data.Dataset):
    """A torchvision dataset as (uint8 image, LongTensor [1]). An unreadable image file is skipped with a warning
    naming it and the next index is used instead (deterministic); `skipped` holds such files' indices (per process)."""
    label_names = ("class",)

    def __init__(self, ds, transform):
        self.ds, self.num_classes, self.transform, self.skipped = ds, (len(ds.classes),), transform, set()

    def __len__(self):
        return len(self.ds)

    def _load(self, j):
        if not hasattr(self.ds, "samples"):  # in-memory arrays (CIFAR, STL): nothing to fail
            return self.ds[j]
        path, y = self.ds.samples[j]
        if j in self.skipped:
            return None
        try:
            return self.ds.loader(path), y  # _to_rgb decodes the whole file, so truncated files fail here
        except (OSError, EOFError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # PIL on bad files
            self.skipped.add(j)
            warnings.warn(f"skipping unreadable image {path} ({type(e).__name__}: {e}); "
                          f"{len(self.skipped)} file(s) skipped so far in this process")
            return None

    def __getitem__(self, i):
        n = len(self.ds)
        for j in range(i, i + min(n, 100)):
            if (item := self._load(j % n)) is not None:  # the transform is outside the try: its bugs aren't bad files
                img, y = item
                return (self.transform(img) if self.transform else _to_rgb(img)), torch.tensor([int(y)])
        raise ValueError(f"{min(n, 100)} consecutive unreadable images from index {i}: is the data folder intact?")


class Folder(torchvision.datasets.ImageFolder):
    """ImageFolder whose walk follows links as torchvision's does, but enters each real folder once: a link loop
    such as <class>/loop -> <class> (or -> the split folder) repeated the tree until the path length limit."""
    def make_dataset(self, root, class_to_idx, extensions, **_):  # as ImageFolder calls it: no is_valid_file
        seen, samples = {os.path.realpath(os.path.join(root, c)) for c in ["", *class_to_idx]}, []  # split, classes
        for c in sorted(class_to_idx):
            top, found = os.path.join(root, c), []
            for d, subs, files in os.walk(top, followlinks=True):
                real = {os.path.realpath(os.path.join(d, s)): s for s in sorted(subs, reverse=True)}  # first name wins
                subs[:] = sorted(s for r, s in real.items() if r not in seen)  # walk no folder twice
                seen.update(real)
                found += [(d, f) for f in files if f.lower().endswith(extensions)]
            if not found:
                raise FileNotFoundError(f"no file with an image extension ({', '.join(extensions)}) under {top}")
            samples += [(os.path.join(d, f), class_to_idx[c]) for d, f in sorted(found)]  # torchvision's order
        return samples


# name: (class, what must be under root); the CIFARs pick their split with train=True/False, the others with split=
TORCHVISION = {
    "cifar10": (torchvision.datasets.CIFAR10, "cifar-10-batches-py/ (from cifar-10-python.tar.gz)"),
    "cifar100": (torchvision.datasets.CIFAR100, "cifar-100-python/ (from cifar-100-python.tar.gz)"),
    "stl10": (torchvision.datasets.STL10, "stl10_binary/ (from stl10_binary.tar.gz)"),
    "food101": (torchvision.datasets.Food101, "food-101/ (from food-101.tar.gz)"),
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
            raise FileNotFoundError(f"expected ImageNet-style folders {os.path.join(path, '<class>', '<image>.JPEG')}; "
                                    f"got no folder {path}")
        try:
            return Labeled(Folder(path, loader=_to_rgb), transform)
        except FileNotFoundError as e:  # no class folders, or a class folder without image files
            raise ValueError(f"{path} holds no images: expected {path}/<class>/<image>.JPEG (or .jpg/.png/...); "
                             f"{' '.join(str(e).split())}") from None  # the reason, on one line
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val' for {name}, got {split!r}")
    cls, folder = TORCHVISION[name]
    kw = {"train": split == "train"} if name.startswith("cifar") else {"split": "test" if split == "val" else "train"}
    try:
        ds = cls(root, download=False, **kw)
    except (RuntimeError, OSError):  # torchvision: "Dataset not found or corrupted"
        raise FileNotFoundError(f"{name} not found: put the extracted {folder} in {root} (no downloads)") from None
    return Labeled(ds, transform)


class EpochIndexed(torch.utils.data.Dataset):
    """Item (epoch, i) → dataset[i] with the torch RNG seeded from (seed, epoch, i): every sample's random transform
    is a pure function of its place in training, the same with any number of workers, ranks or resumes."""
    def __init__(self, ds, seed):
        self.ds, self.seed = ds, seed

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        epoch, i = key
        with torch.random.fork_rng(devices=[]):  # CPU only: torch.manual_seed would queue lazy CUDA seeding (~4 ms)
            key = (self.seed * 1_000_003 + epoch) * 100_000_007 + i  # wrapped into 64 bits as torch maps a negative
            torch.default_generator.manual_seed(key % 2**64 - (key < 0))  # seed, so no seed's draws change
            return self.ds[i]


class StepSampler(torch.utils.data.Sampler):
    """This rank's micro-batch keys (epoch, i). Global batch b of an epoch is perm[b·G:(b+1)·G] of a permutation
    seeded by (seed, epoch); rank r, micro-step k takes its rows [(r·accum + k)·Bm, +Bm). Any world × accum split
    of G sees what one process with batch G sees, and a resume starts at any step without reading skipped data."""
    def __init__(self, n, global_batch, micro, rank, accum, seed):
        self.n, self.G, self.Bm, self.rank, self.accum, self.seed = n, global_batch, micro, rank, accum, seed
        self.steps, self.epoch, self.start = n // global_batch, 0, 0

    def set_epoch(self, epoch, start_step=0):
        self.epoch, self.start = epoch, start_step

    def __len__(self):
        return (self.steps - self.start) * self.accum * self.Bm

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch)).tolist()
        for b in range(self.start, self.steps):
            for k in range(self.accum):
                lo = b * self.G + (self.rank * self.accum + k) * self.Bm
                yield from ((self.epoch, i) for i in perm[lo:lo + self.Bm])


def subset(ds, n):
    """n evenly spaced items (every class of a class-sorted folder is kept); 0 or n >= len: all of them."""
    if not n or n >= len(ds):
        return ds
    sub = torch.utils.data.Subset(ds, torch.linspace(0, len(ds) - 1, n).long().tolist())
    sub.label_names, sub.num_classes = ds.label_names, ds.num_classes  # what probes and multitask heads read
    return sub


# ---------------------------------------------------------------------------------------------- transforms
# Small callables instead of a v2.Compose: the same maths and the same outputs, but the Compose machinery (input
# flattening, type dispatch per step) and v2's resize wrapper cost more than the resize itself on 64 px images.
# Classes rather than closures, so datasets pickle into spawned DataLoader workers.
F = v2.functional


def _to_rgb(img):
    """A file / PIL / numpy HWC / tensor image, any of grey, grey+alpha, RGB, RGBA, palette → plain 3-channel image
    tensor (v2.RGB would leave RGBA at 4 channels, ToImage would keep palette indices). PIL's convert("RGB") would clip
    16/32-bit integer grey ("I;16", "I") to white and float grey ("F") to black: integers are read as 16-bit (/ 257),
    floats must lie in [0, 1], and other values are a ValueError (to Labeled, an unreadable file)."""
    if isinstance(img, (str, os.PathLike)):  # Folder's loader: torchvision's pil_loader, converting as below
        with open(img, "rb") as f:
            return _to_rgb(Image.open(f))
    if isinstance(img, Image.Image) and img.mode.startswith(("I", "F")):
        x, top = np.asarray(img, np.float32), 1.0 if img.mode == "F" else 65535.0
        if not (x.min() >= 0 and x.max() <= top):  # NaN fails too
            raise ValueError(f"{img.mode} image with values in [{x.min():g}, {x.max():g}], not in [0, {top:g}]")
        return torch.from_numpy(np.rint(x * (255 / top)).astype(np.uint8)).expand(3, -1, -1)
    if isinstance(img, Image.Image):
        return F.pil_to_tensor(img if img.mode == "RGB" else img.convert("RGB"))
    img = F.to_image(img).as_subclass(torch.Tensor)  # numpy HWC / tensor [C, H, W] or [H, W] → [C, H, W]
    return img[:3] if img.shape[0] >= 3 else img[:1].expand(3, -1, -1)


def _resize(img, h, w):
    """Antialiased bilinear resize, uint8 in → uint8 out (float is scaled to uint8): the kernel v2.Resize runs."""
    img = torch.nn.functional.interpolate(img[None], size=(h, w), mode="bilinear", antialias=True)[0]
    return F.to_dtype_image(img, torch.uint8, scale=True)


class CropFlip:
    """= v2.RandomResizedCrop(size, scale, ratio, antialias=True) + v2.RandomHorizontalFlip(): the same sampling
    (10 tries of area and log-uniform aspect ratio, then torchvision's central fallback) from one torch.rand call.
    The numbers come from the torch RNG, so EpochIndexed's per-sample seeding makes every crop reproducible."""
    def __init__(self, size, scale=(0.3, 1.0), ratio=(3 / 4, 4 / 3)):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)

    def __call__(self, img):
        img = _to_rgb(img)
        H, W = img.shape[-2:]
        r = torch.rand(41).tolist()
        (s0, s1), (l0, l1) = self.scale, (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for k in range(0, 40, 4):
            area, aspect = H * W * (s0 + (s1 - s0) * r[k]), math.exp(l0 + (l1 - l0) * r[k + 1])
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= W and 0 < h <= H:
                i, j = int(r[k + 2] * (H - h + 1)), int(r[k + 3] * (W - w + 1))
                break
        else:  # no try fitted: the whole image, cut to the aspect-ratio range, centred
            w, h = min(W, round(H * self.ratio[1])), min(H, round(W / self.ratio[0]))
            i, j = (H - h) // 2, (W - w) // 2
        img = _resize(img[:, i:i + h, j:j + w], self.size, self.size)
        return img.flip(-1) if r[40] < 0.5 else img


class CenterView:
    """= v2.Resize(round(size·256/224), antialias=True) (short side) + v2.CenterCrop(size): the evaluation view."""
    def __init__(self, size):
        self.size, self.short = int(size), round(size * 256 / 224)

    def __call__(self, img):
        img = _to_rgb(img)
        H, W = img.shape[-2:]
        s = self.short  # torchvision's rule for the long side: int(short · long / short_in)
        img = _resize(img, s, int(s * W / H)) if H <= W else _resize(img, int(s * H / W), s)
        return F.center_crop_image(img, [self.size, self.size]).contiguous()


train_transform, eval_transform = CropFlip, CenterView  # the names the scripts use
