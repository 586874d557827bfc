"""Source and target views and the action a_{x→y} (IWM arXiv 2403.00504 §3, "Learning a world model").

From one crop + flip I' of an image: target y = color jitter of I' (no destructive transform, so y keeps all the
information); source x = an independent jitter of I' followed by grayscale / Gaussian blur / solarization. The
action a_{x→y} holds what the world model needs to undo x's corruption: the jitter differences (target − source,
for brightness, contrast, saturation, hue) and a 0/1 flag per destructive transform applied to x.

Design: the geometric part (the shared random-resized crop + flip) is done per sample by torchvision in the loader
workers (data.train_transform): it is exact and antialiased on images of any decoded size, cheap on uint8, and,
being shared by x and y, never enters a_{x→y}. The photometric part here is batched: per-sample parameters as
[B] tensors, every op a broadcast tensor op, no Python loop over images, so it runs on the GPU next to the model
(it is float work on every pixel, twice per image). Any batch size works, so B = 1 inside a worker works too.
Each op equals torchvision.transforms.v2.functional's on float images (tests/test_augment.py).
"""
import functools
import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

# The single source of truth for a_{x→y}: its columns, in order, are ACTION_NAMES, the 4 jitter components (a fixed
# family) then one flag per destructive transform, applied to the source in that order. The random draws, the
# presets, evaluate_mrr's sources and the predictor's action width are all derived from these names, so adding a
# destructive transform "foo" takes, in this file only: its name here, a `foo_p` field in AugmentConfig and an
# entry in DESTRUCTIVE_OPS (import fails if the field or the entry is missing, rather than the op silently not
# running). Appending keeps the draws of the existing parameters (see sample_params); only blur sigma's moves.
ACTION_NAMES = ("brightness", "contrast", "saturation", "hue", "grayscale", "blur", "solarize")
JITTER = ACTION_NAMES[:4]
FACTORS = JITTER[:3]  # multiplicative components (identity 1); hue is a shift (identity 0)
DESTRUCTIVE = ACTION_NAMES[4:]
GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, torchvision's rgb_to_grayscale
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet statistics, as official I-JEPA weights expect


@dataclass(frozen=True)
class AugmentConfig:
    jitter_p: float = 0.8  # color jitter applied as a whole with this probability (SimCLR / I-JEPA style)
    brightness: float = 0.4  # factors uniform in [max(0, 1 − s), 1 + s]; hue shift uniform in [−h, h]
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2  # destructive transforms: source only
    blur_p: float = 0.2
    blur_sigma: tuple = (0.1, 2.0)
    blur_kernel_frac: float = 0.1  # kernel ≈ 10% of the image side (SimCLR), odd
    solarize_p: float = 0.2
    solarize_threshold: float = 0.5


def no_destructive(cfg):
    """cfg with every destructive transform off, by name: a transform added later is off too."""
    return replace(cfg, **{f"{name}_p": 0.0 for name in DESTRUCTIVE})


def make_presets(base):
    """The named augmentation settings around `base` (train.py --augment). A function, so that tests can check
    that a config with an extra transform gets it switched off wherever a preset has no destructive transform."""
    return {
        "iwm": base,  # paper default: jitter + destructive (IWM-Inv / IWM-Equi)
        "jitter": no_destructive(base),  # Table 2 "jitter" row
        "strong": replace(base, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2),  # Table 2 "strong jitter"
        "ijepa": replace(no_destructive(base), jitter_p=0.0),  # I-JEPA: crop only
    }


IWM = AugmentConfig()
PRESETS = make_presets(IWM)


def sample_params(n, cfg, *, destructive, generator=None, device=None):
    """Per-sample parameters as [n] tensors. Where jitter is not applied its factors are the identity (1, hue 0);
    destructive flags are all False when destructive=False (the target). Draws happen on the generator's device and
    always in the same number, so a seed fixes everything. Layout, one uniform row each: the jitter switch, then
    one row per name of ACTION_NAMES in its order, then blur's sigma (len(ACTION_NAMES) + 2 rows, 9 today): each
    transform has its own draw, and a name appended to ACTION_NAMES leaves every earlier row as it was (only
    sigma's row moves down, so sigma's values for a seed change then)."""
    dev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(len(ACTION_NAMES) + 2, n, generator=generator, device=dev)
    jitter = u[0] < cfg.jitter_p
    row = dict(zip(ACTION_NAMES, u[1:]))
    p = {"jitter": jitter}
    for name in FACTORS:
        s = getattr(cfg, name)
        lo, hi = max(0.0, 1.0 - s), 1.0 + s
        p[name] = torch.where(jitter, lo + row[name] * (hi - lo), torch.ones_like(row[name]))
    p["hue"] = torch.where(jitter, (2 * row["hue"] - 1) * cfg.hue, torch.zeros_like(row["hue"]))
    for name in DESTRUCTIVE:
        p[name] = (row[name] < getattr(cfg, f"{name}_p")) & destructive
    p["sigma"] = cfg.blur_sigma[0] + u[-1] * (cfg.blur_sigma[1] - cfg.blur_sigma[0])
    return {k: v.to(device) for k, v in p.items()} if device is not None else p


def _col(v, img):  # [B] → [B, 1, 1, 1] in the image's dtype
    return v.to(img.dtype).view(-1, 1, 1, 1)


def grayscale(img):
    r, g, b = img.unbind(1)
    return (r * GRAY[0] + g * GRAY[1] + b * GRAY[2]).unsqueeze(1)  # [B, 1, H, W]


def blend(a, b, f):
    return (f * a + (1 - f) * b).clamp_(0, 1)


def adjust_brightness(img, f):
    return (img * _col(f, img)).clamp_(0, 1)


def adjust_contrast(img, f):
    return blend(img, grayscale(img).mean(dim=(1, 2, 3), keepdim=True), _col(f, img))


def adjust_saturation(img, f):
    return blend(img, grayscale(img), _col(f, img))


def adjust_hue(img, shift):
    """Rotate the hue by `shift` (fraction of a turn) per sample: RGB → HSV → RGB, torchvision's algorithm."""
    r, g, b = img.unbind(1)
    maxc, minc = img.amax(1), img.amin(1)
    span = maxc - minc
    flat = span == 0
    s = span / torch.where(flat, torch.ones_like(maxc), maxc)
    div = torch.where(flat, torch.ones_like(span), span)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h6 = (((h / 6.0 + 1.0) % 1.0 + shift.to(img.dtype).view(-1, 1, 1)) % 1.0 * 6).unsqueeze(1)
    # HSV → RGB without sector tables: channel n ∈ (5, 3, 1) for (r, g, b) is v − v·s·clamp(min(k, 4 − k), 0, 1)
    # with k = (n + 6h) mod 6, the same piecewise-linear function as torchvision's (v, p, q, t) selection
    k = (torch.tensor([5.0, 3.0, 1.0], device=img.device, dtype=img.dtype).view(1, 3, 1, 1) + h6) % 6
    ramp = torch.minimum(k, 4 - k).clamp_(0, 1)
    v, s = maxc.unsqueeze(1), s.unsqueeze(1)
    return (v - v * s * ramp).clamp_(0, 1)


def gaussian_blur(img, sigma, kernel_size):
    """Per-sample sigma, one odd kernel size, reflect padding (torchvision's), as two separable grouped convs."""
    B, C, H, W = img.shape
    x = torch.arange(kernel_size, device=img.device, dtype=img.dtype) - (kernel_size - 1) / 2
    k = torch.exp(-0.5 * (x / sigma.to(img.dtype).view(-1, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # [B·C, k]: one kernel per image and channel
    pad = kernel_size // 2
    out = F.pad(img.reshape(1, B * C, H, W), (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(out, k.view(B * C, 1, kernel_size, 1), groups=B * C)
    out = F.conv2d(out, k.view(B * C, 1, 1, kernel_size), groups=B * C)
    return out.view(B, C, H, W)


def solarize(img, threshold):
    return torch.where(img >= threshold, 1.0 - img, img)


def kernel_size_for(side, frac):
    return max(3, int(frac * side) // 2 * 2 + 1)


# Destructive transforms by name: (images [B, 3, H, W], params, cfg) → every image transformed (apply_params keeps
# the result only where the image's flag is set). Lambdas look the ops up at call time, so tests can wrap them.
DESTRUCTIVE_OPS = {
    "grayscale": lambda x, p, cfg: grayscale(x).expand_as(x),
    # the kernel size comes from cfg and the image shape, never from p: no host sync
    "blur": lambda x, p, cfg: gaussian_blur(x, p["sigma"], kernel_size_for(min(x.shape[-2:]), cfg.blur_kernel_frac)),
    "solarize": lambda x, p, cfg: solarize(x, cfg.solarize_threshold),
}


def check_names(cfg_type=AugmentConfig, ops=DESTRUCTIVE_OPS):
    """Every destructive name needs an op and a probability field `<name>_p`: raise (at import, below) rather than
    have a flag in the action whose transform never runs."""
    names = {f.name for f in fields(cfg_type)}
    bad = [name for name in DESTRUCTIVE if name not in ops or f"{name}_p" not in names]
    if bad:
        raise ValueError(f"destructive transforms {bad} need an entry in DESTRUCTIVE_OPS and a <name>_p field "
                         f"in {cfg_type.__name__}")


check_names()


CPU_CHUNK = 16  # images per pass on CPU: fresh 100-MB temporaries of a whole 224-px batch cost more than the maths


def _needed_ops(p):
    """Which ops some image of the batch needs, as Python bools (all, for parameters on an accelerator: reading
    them would sync the host). A factor of 1 is an exact identity on [0, 1] images (x·1, 1·x + 0·m, clamp), so a
    component at 1 for every image is skipped; a hue shift of 0 is one only to ~1e-6 (RGB → HSV → RGB), so hue
    runs wherever some image is jittered."""
    if any(v.device.type != "cpu" for v in p.values()):
        return dict.fromkeys(("jitter",) + FACTORS + DESTRUCTIVE, True)
    jit = bool(p["jitter"].any())
    need = {name: jit and bool((p[name] != 1).any()) for name in FACTORS}
    return {"jitter": jit, **need, **{name: bool(p[name].any()) for name in DESTRUCTIVE}}


def apply_params(images, p, cfg=IWM):
    """images float [B, 3, H, W] in [0, 1] → the view defined by p: jitter in the fixed order brightness, contrast,
    saturation, hue, then the destructive transforms where flagged, in DESTRUCTIVE's order (DESTRUCTIVE_OPS). Each op
    runs on the whole batch and torch.where picks per sample (no data-dependent shapes); one that no image needs is
    skipped where p lives on the CPU (_needed_ops; train.py's does, for GPU images too: copied without a sync).
    Always a new tensor, bit-identical either way; on CPU in chunks of CPU_CHUNK (~4x faster at 224 px, batch 256)."""
    if images.device.type == "cpu" and len(images) > CPU_CHUNK:
        return torch.cat([apply_params(images[i:i + CPU_CHUNK], {k: v[i:i + CPU_CHUNK] for k, v in p.items()}, cfg)
                          for i in range(0, len(images), CPU_CHUNK)])
    need = _needed_ops(p)  # before the copy below, while the flags are still host memory if they were
    p = {k: v.to(images.device, non_blocking=v.device.type == "cpu") for k, v in p.items()}
    return _apply_needed(images, p, cfg, need)


def _apply_needed(images, p, cfg, need):
    """apply_params' ops, each only where need says some image needs it; with every need True this is the
    plain select-everything path. Skipping is exact: torch.where with an all-False flag returns its `old`."""
    sel = lambda flag, new, old: torch.where(flag.view(-1, 1, 1, 1), new, old)
    x = images
    if need["jitter"]:
        if need["brightness"]:
            x = adjust_brightness(x, p["brightness"])
        if need["contrast"]:
            x = adjust_contrast(x, p["contrast"])
        if need["saturation"]:
            x = adjust_saturation(x, p["saturation"])
        x = sel(p["jitter"], adjust_hue(x, p["hue"]), images)
    for name in DESTRUCTIVE:
        if need[name]:
            x = sel(p[name], DESTRUCTIVE_OPS[name](x, p, cfg), x)
    return images.clone() if x is images else x  # never hand back the input (callers may write to the views)


ENCODINGS = ("log_std", "raw")  # how a_{x→y} is written (train.py --action)


@functools.lru_cache  # cfg is frozen: one computation per preset, not one per step
def action_scale(cfg):
    """Std of each log-ratio jitter component of a_{x→y} when both views are jittered, from the jitter strengths
    alone (so a training preset and the MRR bank built from it give the same scale): brightness, contrast and
    saturation factors are uniform on [1 − s, 1 + s], so log(f_y) − log(f_x) has variance 2·Var(log U), computed
    on a fine grid; the hue shift is uniform on [−h, h], so the difference has std h·sqrt(2/3). A disabled
    component gets scale 1."""
    u = (torch.arange(4096, dtype=torch.float64) + 0.5) / 4096
    out = []
    for name in FACTORS:
        s = getattr(cfg, name)
        lo = max(1.0 - s, LOG_FLOOR)
        out.append(math.sqrt(2.0) * torch.log(lo + u * (1.0 + s - lo)).std().item() if s > 0 else 1.0)
    out.append(cfg.hue * math.sqrt(2.0 / 3.0) if cfg.hue > 0 else 1.0)
    return tuple(out)  # cached: not to be changed by a caller


LOG_FLOOR = 0.05  # factors are clamped here before the log: a factor of 0 (strength 1) would give −inf


def action_from_params(src, tgt, cfg=IWM, encoding="log_std"):
    """a_{x→y} [B, len(ACTION_NAMES)]: 4 jitter numbers, then the source's destructive flags (0/1).
    "log_std" (our choice, the paper is silent): log(target factor / source factor) for brightness, contrast and
    saturation, the hue shift difference, each divided by its std under cfg (action_scale). Log-ratios make the
    action a function of the image change (0.6 → 1.0 and 1.0 → 1.4 differ), and unit scale lets every component
    reach the predictor as strongly as the flags do. "raw": target − source of the raw numbers."""
    if encoding == "raw":
        jit = [tgt[k] - src[k] for k in JITTER]
    else:  # hue is a shift: its difference, not a log-ratio
        val = lambda p, k: torch.log(p[k].clamp(min=LOG_FLOOR)) if k in FACTORS else p[k]
        jit = [(val(tgt, k) - val(src, k)) / c for k, c in zip(JITTER, action_scale(cfg))]
    return torch.stack(jit + [src[k].float() for k in DESTRUCTIVE], dim=1).float()


def to_float(images):
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


def make_views(images, cfg=IWM, generator=None, *, params=None, encoding="log_std"):
    """images uint8 or float [B, 3, H, W] (any device) → source x, target y (float in [0, 1]), action
    [B, len(ACTION_NAMES)] and the parameters {"source": ..., "target": ...}: drawn here from `generator`, or
    given as `params` (train.py draws a whole step's parameters ahead of time, on every rank alike)."""
    img = to_float(images)
    if params is None:
        params = {"source": sample_params(len(img), cfg, destructive=True, generator=generator, device=img.device),
                  "target": sample_params(len(img), cfg, destructive=False, generator=generator, device=img.device)}
    src, tgt = params["source"], params["target"]
    if img.device.type == "cpu" and 2 * len(img) > CPU_CHUNK:  # [2B] would go in chunks: two passes spare a copy
        x, y = apply_params(img, src, cfg), apply_params(img, tgt, cfg)
    else:  # both views in one pass over [2B]: half the ops (kernel launches on a GPU) of two passes
        x, y = apply_params(torch.cat([img, img]), {k: torch.cat([src[k], tgt[k]]) for k in src}, cfg).chunk(2)
    return x, y, action_from_params(src, tgt, cfg, encoding).to(img.device, non_blocking=True), params


def normalize(x):
    return (x - x.new_tensor(MEAN).view(1, 3, 1, 1)) / x.new_tensor(STD).view(1, 3, 1, 1)
