"""How good is the world model? Mean Reciprocal Rank (IWM arXiv 2403.00504, §4, Tables 1-2) and the
nearest-neighbour picture of Figure 1.

For each image I: a clean view c (no jitter, no destructive transform, no mask); a bank of K target-distribution
augmentations b_1..b_K of c (jitter always applied, nothing destructive); a source view x (c itself, or c with one
destructive transform forced). The world model maps the source latent and the action a_{x→b_k} to a prediction
p_k of b_k's latent; entry k is ranked among the K bank latents by distance to p_k, and MRR = mean of 1/rank over
entries and images. MRR ≈ 1: the predictor applies the transformation (equivariant); ≈ chance: it ignores it.
Where the paper is silent (recipe §5): the source latent comes from the online encoder f_θ on all patches, the
bank latents are F.layer_norm(f_θ^EMA(b_k)) (the training target), distance = mean over patches of squared L2,
ties count against the entry (a constant prediction cannot score above chance), and MRR is also reported per
destructive source and per jitter component. train.py's periodic check (in_training_eval: MRR on fixed images,
the target tokens' health, ridge probes) is built from the same pieces, at the end of this file.

    python evaluate_mrr.py --ckpt runs/iwm/latest.pt --images 32 --bank 256 --png nn.png
    python evaluate_mrr.py --ckpt IN1K-vit.h.14-300e.pth.tar --data imagefolder \\
        --data_root /data/imagenet
"""
import dataclasses
import functools
import math
import os

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

import augment
import cli
import common
import data
import model as M

DEFAULTS, HELP = cli.table(  # key=(default, description[, choices: the code's own table]), printed by --help
    ckpt=("", "our train.py checkpoint or an official I-JEPA one"),
    data=("", "the images (\"\": the checkpoint's; official checkpoints need --data)", cli.DATASETS),
    data_root=("", "the dataset's folder (\"\" with --data \"\": the checkpoint's)"), split=("val", "train or val"),
    images=(32, "images, spread evenly over the split"), bank=(256, "K, bank entries per image (paper: 256)"),
    seed=(0, "seed of the banks and sources"), chunk=(64, "images per forward pass (memory)"),
    augment=("", "the bank distribution (\"\": strong if trained with strong jitter, else iwm)", augment.PRESETS),
    png=("", "where to save the Figure-1-style nearest-neighbour grid (\"\": none)"), png_images=(4, "its rows"),
    model=("", "encoder size of an official checkpoint (ours store it; \"\" / 0: from its weights)", M.VIT_PRESETS),
    img_size=(0, "its image side"), patch_size=(0, "its patch side"), pred_depth=(0, "its predictor blocks"),
    pred_width=(0, "its predictor width"),
    device=("auto", "auto (a GPU if any, else the CPU), cpu, cuda or cuda:N; autocast bf16 (fp16) on CUDA, else fp32"))
# effective rank (token_stats) below which the target tokens count as collapsed: runs collapsed onto brightness read
# 1.2-1.7, a random init 12.5 (micro ViT, Shapes); 4 is about their geometric mean, far from both
COLLAPSE_RANK = 4.0
def collapse_warning(stats):
    """One line when token_stats says the target tokens have collapsed, else None."""
    if stats["rank"] >= COLLAPSE_RANK:
        return None
    return (f"target tokens collapsed to effective rank {stats['rank']:.1f} (< {COLLAPSE_RANK:g}); variance by "
            f"image {stats['var_image']:.2f}, by position {stats['var_position']:.2f}")


def sources():
    """The MRR source views: clean, then each of augment's destructive transforms alone. Read from augment's
    names at call time, so a transform added there is evaluated without an edit here."""
    return ("clean",) + augment.DESTRUCTIVE


def _take(params, idx):
    return {k: v[idx] for k, v in params.items()}


def source_config(aug_cfg, source):
    """No jitter; `source` = one destructive transform forced (probability 1), the others off (by name, so
    the clean source gets none of them, whatever augment defines)."""
    if source not in sources():
        raise ValueError(f"unknown MRR source {source!r}; choose from {sources()}")
    cfg = dataclasses.replace(augment.no_destructive(aug_cfg), jitter_p=0.0)
    return cfg if source == "clean" else dataclasses.replace(cfg, **{f"{source}_p": 1.0})


def bank_config(aug_cfg, component=None):
    """Target distribution with jitter always applied; with `component`, only that jitter strength is kept."""
    off = [c for c in augment.JITTER if component and c != component]
    return dataclasses.replace(aug_cfg, jitter_p=1.0, **dict.fromkeys(off, 0.0))


def target_latents(target_encoder, images01, chunk):
    """F.layer_norm(f_θ^EMA(x)) without affine (the training target), fp32, in chunks: [B, N, D]."""
    out = []
    for x in images01.split(chunk):
        with common.autocast(x.device, common.autocast_dtype(x.device)):
            z = target_encoder(augment.normalize(x))
        out.append(F.layer_norm(z.float(), z.shape[-1:]))
    return torch.cat(out)


def predict(encoder, predictor, source01, actions, chunk):
    """Encode the source view [1, 3, H, W] once, then predict every position for each action [K, A] in chunks
    (A = len(augment.ACTION_NAMES))."""
    with common.autocast(source01.device, common.autocast_dtype(source01.device)):
        z = encoder(augment.normalize(source01))
        out = [predictor(z.expand(len(a), -1, -1), None, None, a).float() for a in actions.split(chunk)]
    return torch.cat(out)


def distances(pred, latents):
    """d[i, j] = mean over patches of ||pred_i - latent_j||² for [K, N, D] inputs, as |p|² + |t|² - 2 p·t with one
    matmul in float64: fp32 products are exact there and the sums lose ~1e-12 relatively, so the expansion's
    cancellation (or TF32) cannot reorder close entries; a direct difference kernel is ~100x slower on GPU."""
    dev = "cpu" if pred.device.type == "mps" else pred.device  # MPS has no float64
    p, t = pred.flatten(1).to(dev, torch.float64), latents.flatten(1).to(dev, torch.float64)
    return (p.square().sum(1, keepdim=True) + t.square().sum(1) - 2 * p @ t.T) / pred.shape[1]


def ranks_from_distances(d):
    """rank of entry k = #{j : d[k, j] <= d[k, k]}: ties count against k (pessimistic), so a prediction that is
    equally far from everything gets the worst rank."""
    return (d <= d.diagonal()[:, None]).sum(1)


def _views(clean, params, aug_cfg):
    """The views of one clean image [1, 3, H, W] defined by n parameter sets: [n, 3, H, W]."""
    return augment.apply_params(clean.expand(len(params["jitter"]), -1, -1, -1), params, aug_cfg)


@torch.no_grad()
def token_stats(tokens):
    """Health of a representation from tokens [B, N, D] (layer-normed target tokens; B images, N positions):
    - "rank": effective rank exp(H(λ/Σλ)) of the centred [B·N, D] tokens, λ the variances of their principal
      components: 1 when every token lies on one line (dimensional collapse), D for isotropic tokens. We take the
      variances (σ²), not RankMe's σ, so a dominant direction counts fully: a brightness-collapsed run, whose first
      component holds 88% of the variance, reads 1.7 (RankMe: 9.5); a random micro ViT reads 12.5;
    - "var_image", "var_position", "var_residual": shares of the token variance explained by the image
      (per-image mean token), by the position (per-position mean over images) and the rest (two-way ANOVA,
      the three sum to 1). A random ViT is mostly position; a representation collapsed onto a global image
      statistic (brightness) is all image and no position."""
    h = tokens.double()
    h = h - h.mean(dim=(0, 1))
    img, pos = h.mean(1, keepdim=True), h.mean(0, keepdim=True)
    total = h.square().sum(-1).mean()
    shares = [img.square().sum(-1).mean(), pos.square().sum(-1).mean(), (h - img - pos).square().sum(-1).mean()]
    lam = torch.linalg.svdvals(h.flatten(0, 1)).square()
    p = lam / lam.sum() + 1e-12
    out = {"rank": torch.exp(-(p * p.log()).sum()).item()}
    out.update({k: (v / total).item() for k, v in zip(("var_image", "var_position", "var_residual"), shares)})
    return out


@torch.no_grad()
def mrr_score(encoder, target_encoder, predictor, images, aug_cfg, *, bank_size=256, sources=("clean",),
              components=False, null_action=False, generator=None, chunk=64, encoding="log_std"):
    """World-model MRR (IWM §4) of `images` (uint8 or float in [0, 1], [N, 3, H, W], on the models' device).
    Returns "mrr" (mean over sources and images), "mrr_ci" (95% CI half-width over images), "mrr/<name>" and
    "mrr_ci/<name>" per source and, with components=True, per jitter component (a bank where only that component
    varies, clean source), and "chance" (the MRR of a uniformly random rank); for each name also "error/<name>",
    the mean distance of p_k to its own b_k, and "spread/<name>", between two different bank latents. Spread ≪
    error means the encoder does not see the change (an encoder failure); spread ≫ error with a low MRR means the
    predictor does not apply it (a world-model failure). The models are used as they are (the caller puts them in
    eval mode); `generator` (default: seed 0) drives every random draw."""
    images = augment.to_float(images)
    N, K, device = images.shape[0], bank_size, images.device
    if N == 0 or K < 2:
        raise ValueError(f"MRR needs at least one image and a bank of >= 2 entries, got {N} images, bank {K}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    draw = functools.partial(augment.sample_params, generator=g, device=device)
    # draw order bank, sources, components: "mrr/clean" is the same whichever other sources are asked for
    banks = {"": draw(N * K, bank_config(aug_cfg), destructive=False)}
    src = {"": {s: draw(N, source_config(aug_cfg, s), destructive=True) for s in sources}}
    if components:
        clean_p = draw(N, source_config(aug_cfg, "clean"), destructive=True)
        for c in augment.JITTER:
            banks[c], src[c] = draw(N * K, bank_config(aug_cfg, c), destructive=False), {c: clean_p}
    per_image, extra = {}, {}  # result name -> list over images of the image's mean reciprocal rank / error, spread
    for i in range(N):  # one image at a time bounds memory at K latents (ViT-H/14: K·256·1280 floats)
        clean = images[i:i + 1]
        for b, params in banks.items():
            bp = _take(params, slice(i * K, (i + 1) * K))
            lat = target_latents(target_encoder, _views(clean, bp, aug_cfg), chunk)  # once, shared by sources
            spread = distances(lat, lat).sum() / (K * (K - 1))  # the diagonal is 0
            for name, sp in src[b].items():
                action = augment.action_from_params(_take(sp, [i] * K), bp, aug_cfg, encoding)  # a_{x→b_k}
                if null_action:  # control: an equivariant model loses its advantage and falls toward chance
                    action = torch.zeros_like(action)
                d = distances(predict(encoder, predictor, _views(clean, _take(sp, [i]), aug_cfg), action, chunk), lat)
                per_image.setdefault(name, []).append((1.0 / ranks_from_distances(d).double()).mean().cpu())
                extra.setdefault(f"error/{name}", []).append(d.diagonal().mean().cpu())
                extra.setdefault(f"spread/{name}", []).append(spread.cpu())
    per_image = {k: torch.stack(v) for k, v in per_image.items()}
    by_image = torch.stack([per_image[s] for s in sources]).mean(0)  # [N]: each image's MRR over the sources
    ci = lambda v: 1.96 * v.std().item() / math.sqrt(len(v)) if len(v) > 1 else float("nan")  # normal approx.
    out = {"mrr": by_image.mean().item(), "mrr_ci": ci(by_image),
           "chance": sum(1.0 / r for r in range(1, K + 1)) / K}  # E[1/rank], rank uniform on 1..K
    for k, v in per_image.items():
        out[f"mrr/{k}"], out[f"mrr_ci/{k}"] = v.mean().item(), ci(v)
    out.update({k: torch.stack(v).mean().item() for k, v in extra.items()})
    return out


@torch.no_grad()
def nearest_neighbour_grid(encoder, target_encoder, predictor, images, aug_cfg, path, *, bank_size=64,
                           source="clean", topk=5, generator=None, chunk=64, encoding="log_std"):
    """Figure 1 of the paper: one row per image, [source view, requested target b_k, then the `topk` bank images
    nearest to the prediction p_k, nearest first]; k is drawn at random. Saves a PNG and returns its path."""
    images = augment.to_float(images)
    N, K, device = images.shape[0], bank_size, images.device
    if topk > K:
        raise ValueError(f"topk {topk} exceeds the bank size {K}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    bank_p = augment.sample_params(N * K, bank_config(aug_cfg), destructive=False, generator=g, device=device)
    src_p = augment.sample_params(N, source_config(aug_cfg, source), destructive=True, generator=g, device=device)
    ks = torch.randint(K, (N,), generator=g, device=g.device).tolist()
    rows = []
    for i, k in enumerate(ks):
        clean, bp, sp = images[i:i + 1], _take(bank_p, slice(i * K, (i + 1) * K)), _take(src_p, slice(i, i + 1))
        bank, source_view = _views(clean, bp, aug_cfg), _views(clean, sp, aug_cfg)
        lat = target_latents(target_encoder, bank, chunk)
        action = augment.action_from_params(sp, _take(bp, [k]), aug_cfg, encoding)
        pred = predict(encoder, predictor, source_view, action, chunk)
        nearest = distances(pred, lat)[0].topk(topk, largest=False).indices  # smallest distance first
        rows.append(torch.cat([source_view, bank[k:k + 1], bank[nearest]]))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_image(torch.cat(rows).clamp(0, 1), path, nrow=2 + topk)
    return path


# ---------------------------------------------------------------------------------------------- during training
def ridge_probe(train_feats, train_y, val_feats, val_y, lam=1e-2):
    """Cheap online probe: closed-form ridge regression on mean-pooled frozen features, one label column of
    train_y / val_y [n, T] (a health signal while training, not the paper's protocol: finetune.py has those)."""
    mu, sd = train_feats.mean(0), train_feats.std(0) + 1e-6
    X, V = [(torch.cat([(f - mu) / sd, torch.ones_like(f[:, :1])], 1)).double() for f in (train_feats, val_feats)]
    Y = F.one_hot(train_y, int(max(train_y.max(), val_y.max())) + 1).double()
    W = torch.linalg.solve(X.T @ X + lam * len(X) * torch.eye(X.shape[1], dtype=X.dtype, device=X.device), X.T @ Y)
    return ((V @ W).argmax(1) == val_y).float().mean().item()


def in_training_eval(cfg, nets, eval_set, amp):
    """train.py's evaluation (rank 0, train.py's config keys): the world model's MRR on a fixed set, the target
    tokens' health (effective rank, variance by image / position: token_stats) and a ridge probe per label."""
    encoder, predictor, target_encoder = nets
    for m in nets:
        m.eval()
    aug = augment.PRESETS["strong" if cfg["augment"] == "strong" else "iwm"]  # I-JEPA has no jitter to invert
    res = mrr_score(encoder, target_encoder, predictor, eval_set["mrr"], aug, bank_size=cfg["eval_bank"],
                    generator=torch.Generator().manual_seed(0), encoding=cfg["action"])
    out = {"mrr": res["mrr"], "mrr_chance": res["chance"]}
    (tr_x, tr_y), (va_x, va_y) = eval_set["probe"]
    encode = lambda b: target_encoder(augment.normalize(b.float() / 255)).float()
    with torch.no_grad(), common.autocast(tr_x.device, amp):  # chunks of 256 images, pooled at once: bounded memory
        tr_f = torch.cat([encode(b).mean(1) for b in tr_x.split(256)])
        first, *rest = va_x.split(256)
        h = encode(first)  # the first 256 val images' tokens serve the probe and their health (token_stats)
        va_f = torch.cat([h.mean(1)] + [encode(b).mean(1) for b in rest])
    out.update(token_stats(F.layer_norm(h, h.shape[-1:])))  # layer-normed like the training targets
    for t, name in enumerate(eval_set["labels"]):
        out[f"probe/{name}"] = ridge_probe(tr_f, tr_y[:, t], va_f, va_y[:, t])
    for m in (encoder, predictor):
        m.train()
    return out


def fixed_eval_set(cfg, device):
    """train.py's fixed evaluation images: `eval_images` val images for MRR, `probe_images` train and half as many
    val images (with labels) for the probes, spread evenly over each split (as load_images)."""
    if cfg["eval_bank"] < 2 or cfg["probe_images"] < 2:
        raise ValueError("the in-training evaluation needs --eval_bank and --probe_images >= 2 (--eval_every 0 turns "
                         "it off)")
    try:
        val = data.build_dataset(cfg["data"], cfg["data_root"], "val", transform=data.eval_transform(cfg["img_size"]),
                                 size=cfg["img_size"])
    except (ValueError, FileNotFoundError) as e:  # the run needs it: fail at start-up, saying how to do without
        raise ValueError(f"the in-training evaluation (--eval_every 0 turns it off) needs the val split: {e}") from None
    train = data.build_dataset(cfg["data"], cfg["data_root"], "train", transform=data.eval_transform(cfg["img_size"]),
                               size=cfg["img_size"])
    def take(ds, n):
        idx = torch.linspace(0, len(ds) - 1, min(n, len(ds))).long().tolist()  # spread over the classes
        items = [ds[i] for i in idx]
        return torch.stack([x for x, _ in items]).to(device), torch.stack([y for _, y in items]).to(device)
    n = cfg["probe_images"]
    return {"mrr": take(val, cfg["eval_images"])[0], "probe": (take(train, n), take(val, n // 2)),
            "labels": val.label_names}


def load_images(cfg, run, prog="evaluate_mrr.py"):
    """`images` validation images spread evenly over the split (sorted folders: over the classes), the same ones
    as train.py's in-training MRR (fixed_eval_set), as uint8 [N, 3, S, S] at the checkpoint's size S."""
    ds_name, root = (cfg["data"], cfg["data_root"]) if cfg["data"] else (run.get("data"), run.get("data_root", ""))
    if not ds_name:
        common.fail(prog, "this checkpoint does not say its data: pass --data (and --data_root)")
    size = run["img_size"]
    try:
        ds = data.build_dataset(ds_name, root or None, cfg["split"], transform=data.eval_transform(size), size=size)
        common.probe_dataset(ds)  # unreadable files: one line, not one warning per file
        idx = torch.linspace(0, len(ds) - 1, min(cfg["images"], len(ds))).long().tolist()
        images = torch.stack([ds[i][0] for i in idx])
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as e:
        common.fail(prog, f"cannot load {ds_name} images: {str(e).splitlines()[0]}")
    if tuple(images.shape[-2:]) != (size, size):
        common.fail(prog, f"image size mismatch: checkpoint expects {size}px, data gives {tuple(images.shape[-2:])}")
    return images, f"{len(images)} {ds_name}/{cfg['split']}"


def main(argv=None):
    prog = "evaluate_mrr.py"
    cfg = cli.parse_config(DEFAULTS, argv, prog, __doc__, HELP)
    if not cfg["ckpt"]:
        common.fail(prog, "pass --ckpt PATH (a train.py checkpoint or an official I-JEPA one)")
    cli.check_values(cfg, prog, {"images": 1, "bank": 2, "png_images": 1, "chunk": 1}, HELP)
    try:  # the architecture is the checkpoint's: a size flag is for official files, and one that contradicts is refused
        if cfg["png"]:  # before the work, not after it
            common.check_writable(os.path.dirname(cfg["png"]), "--png")
            if os.path.isdir(cfg["png"]) or not cfg["png"].lower().endswith(".png"):
                raise ValueError(f"--png {cfg['png']} must name a .png file (the picture is written as PNG)")
        ckpt, run = M.load_checkpoint(cfg["ckpt"], {k: cfg[k] for k in M.SHAPE_KEYS if cfg[k]})
    except (ValueError, FileNotFoundError) as e:
        common.fail(prog, e)
    images, what = load_images(cfg, run, prog)  # before building the models: bad data fails fast
    name = cfg["augment"] or ("strong" if run.get("augment") == "strong" else "iwm")  # as train.py's evaluation
    _, _, device = common.setup_distributed(cfg["device"])
    try:
        nets = [m.to(device).eval() for m in M.build_from_checkpoint(ckpt, run, augment.ACTION_NAMES,
                                                                     name=cfg["ckpt"])]
    except ValueError as e:  # weights that do not fit the stored or inferred architecture
        common.fail(prog, e)
    images, aug = images.to(device), augment.PRESETS[name]
    gen = lambda: torch.Generator().manual_seed(cfg["seed"])  # the same banks for every call below
    kw = dict(bank_size=cfg["bank"], chunk=cfg["chunk"], encoding=run["action"])
    res = mrr_score(*nets, images, aug, sources=sources(), components=True, generator=gen(), **kw)
    null = mrr_score(*nets, images, aug, null_action=True, generator=gen(), **kw)
    print(f"{cfg['ckpt']}: {run['model']} {run['img_size']}px/{run['patch_size']}, predictor {run['pred_depth']}x"
          f"{run['pred_width']} cond {run['cond']}; {what} images, bank {cfg['bank']} ({name})")
    print(f"MRR over sources {res['mrr']:.4f} ± {res['mrr_ci']:.4f} (95% CI over images), chance {res['chance']:.4f}")
    print("  (error: distance of a prediction to its own bank latent; spread: between two bank latents)")
    for k in sources() + augment.JITTER:
        print(f"  {'source' if k in sources() else 'jitter'} {k:<10} {res['mrr/' + k]:.4f} ± {res['mrr_ci/' + k]:.4f}"
              f"   error {res['error/' + k]:.3g}  spread {res['spread/' + k]:.3g}")
    stats = token_stats(target_latents(nets[1], augment.to_float(images), cfg["chunk"]))
    print(f"target tokens: effective rank {stats['rank']:.1f}, variance by image {stats['var_image']:.2f} / "
          f"position {stats['var_position']:.2f} / residual {stats['var_residual']:.2f}")
    if collapse_warning(stats):
        print(f"  warning: {collapse_warning(stats)}")
    print(f"  null action (clean) {null['mrr']:.4f}  (an equivariant model drops toward chance)")
    if cfg["png"]:
        path = nearest_neighbour_grid(*nets, images[:cfg["png_images"]], aug, cfg["png"], topk=min(5, cfg["bank"]),
                                      generator=gen(), **kw)
        print(f"nearest-neighbour grid (source, target, top-5): {path}")
    print(f"MRR over sources {res['mrr']:.4f} (clean source {res['mrr/clean']:.4f}, chance {res['chance']:.4f})")
    return res


if __name__ == "__main__":
    main()
