"""IWM pretraining (Garrido et al., arXiv 2403.00504, §3 and Fig. 2), with I-JEPA (arXiv 2301.08243) and C-JEPA
(arXiv 2410.19560) as switches of the same loop.

One step, in the paper's order:
  views (augment.py: target y = jitter of the crop I'; source x = another jitter + destructive transforms; action
  a_{x→y}) → masks (masks.py: context block, 4 target blocks) → target encoder f_θ^EMA(y), layer-normed, at the
  target positions → context encoder f_θ(x) on the context patches → world model p_φ(z_x, a_{x→y}, m_a) →
  squared L2 loss → AdamW step → EMA θ_EMA ← m·θ_EMA + (1−m)·θ.

    python train.py --config configs/quickstart.json                     # built-in data, laptop CPU, ~10 min
    torchrun --nproc_per_node=8 train.py --cond feature --data_root /data/imagenet     # the paper's IWM-Equi
Every key below is a flag (`--key value` or `--key=value`); `--config f.json` loads several at once.
"""
import contextlib
import os
import resource
import signal
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import augment
import common
import data
import masks as masking
import model as M
from evaluate_mrr import collapse_warning, token_stats

CONFIG = dict(
    # data: the shared random-resized crop + flip I' happens per sample in the loader workers (data.py)
    data="imagefolder", data_root="", data_length=0, img_size=224, patch_size=16, crop_scale=(0.3, 1.0), workers=8,
    # networks: encoder preset (model.VIT_PRESETS) and the world model; IWM-Equi = 18×384 (IWM §4.1)
    model="base", pred_depth=18, pred_width=384, cond="feature",  # cond: none | sequence | feature
    # method: iwm | ijepa (no photometric transforms, no action) | cjepa (ijepa + VICReg terms)
    method="iwm", augment="iwm", loss="l2",  # augment: iwm | jitter | strong (augment.PRESETS); loss: l2 | smooth_l1
    action="log_std",  # how a_{x→y} is written: log_std (log-ratios at unit std, our choice) | raw (differences)
    # masks (I-JEPA multiblock); one_pass predicts all target blocks in one predictor sequence (speed option)
    num_targets=4, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5), context_scale=(0.85, 1.0), min_keep=10,
    one_pass=False,
    # optimisation (I-JEPA App. A.1): global batch, lr warm-up + cosine, wd cosine, EMA momentum linear
    batch_size=2048, accum=1, epochs=300, max_steps=0, warmup_epochs=15.0, lr=1e-3, start_lr=1e-4, final_lr=1e-6,
    weight_decay=0.04, final_weight_decay=0.4, ema=(0.996, 1.0),
    # VICReg terms (C-JEPA): weight · (sim, var, cov); weight 0 = off, except cjepa, which uses its paper's 0.001
    vicreg=(25.0, 25.0, 1.0), vicreg_weight=0.0,
    # system
    device="auto", dtype="auto", compile=False, grad_ckpt=False, seed=0,
    out_dir="runs/iwm", log_every=50, save_every=1, keep_every=50,  # save_every / keep_every: epochs
    eval_every=0, eval_images=16, eval_bank=64, probe_images=1024,  # eval_every: steps (0: at every save)
    resume="", init="",  # resume: a checkpoint path or "latest" (out_dir/latest.pt); init: I-JEPA/our weights
)
# keys that define what a checkpoint is; a resume that changes one of them is refused
ARCH_KEYS = ("model", "img_size", "patch_size", "pred_depth", "pred_width", "cond", "method", "augment", "loss",
             "action")


class StepSampler(torch.utils.data.Sampler):
    """Keys of this rank's micro-batches. Global batch b of an epoch is perm[b·G:(b+1)·G] of a permutation seeded by
    (seed, epoch); rank r, micro-step k takes its rows [(r·accum + k)·Bm, +Bm). Any world × accum split of G sees
    the same images as one process with batch G, and a resume starts at any step without reading skipped data."""
    def __init__(self, n, global_batch, micro, rank, world, accum, seed):
        self.n, self.G, self.Bm, self.rank, self.accum, self.seed = n, global_batch, micro, rank, accum, seed
        self.steps = n // global_batch
        self.epoch, self.start = 0, 0

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


def step_randomness(cfg, step, batch, grid, device):
    """Masks and view parameters for the whole global batch of `step`, drawn identically on every rank from
    (seed, step) and sliced per rank: no RNG state to save, and DDP sees what a single process would."""
    g = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + step)
    ctx, tgt = masking.sample_masks(batch, grid, num_targets=cfg["num_targets"], target_scale=cfg["target_scale"],
                                    target_aspect=cfg["target_aspect"], context_scale=cfg["context_scale"],
                                    min_keep=cfg["min_keep"], generator=g)
    aug = augment.PRESETS[cfg["augment"]]
    src = augment.sample_params(batch, aug, destructive=True, generator=g)
    tgt_p = augment.sample_params(batch, aug, destructive=False, generator=g)
    move = lambda t: t.to(device, non_blocking=True)
    return [move(m) for m in ctx], [move(m) for m in tgt], {k: move(v) for k, v in src.items()}, \
        {k: move(v) for k, v in tgt_p.items()}


def vicreg_terms(z, p, h):
    """C-JEPA: invariance between pooled prediction and pooled target, VICReg variance hinge (γ=1, ε=1e-4) and
    off-diagonal covariance on per-image mean-pooled context features z [B, D]."""
    sim = F.mse_loss(p, h)
    z = z - z.mean(0)
    var = F.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean()
    cov = (z.T @ z) / max(z.shape[0] - 1, 1)
    off = cov - torch.diag(torch.diag(cov))
    return sim, var, off.pow(2).sum() / z.shape[1]


def views(imgs, src_p, tgt_p, aug, encoding):
    """uint8 crops [B, 3, H, W] → source x, target y (float, [0, 1]) and the action a_{x→y} [B, A] (IWM §3),
    A = len(augment.ACTION_NAMES)."""
    x, y, action, _ = augment.make_views(imgs, aug, params={"source": src_p, "target": tgt_p}, encoding=encoding)
    return x, y, action


@torch.no_grad()
def targets(target_encoder, y, tgt):
    """f_θ^EMA(y), layer-normed without affine, selected at the target blocks at the encoder OUTPUT (I-JEPA
    Table 11: masking the output beats masking the input). Returns (all tokens, targets [n·B, Kt, D])."""
    h_all = target_encoder(augment.normalize(y))
    return h_all, M.apply_masks(F.layer_norm(h_all.float(), h_all.shape[-1:]), tgt)


def loss_terms(cfg, z, p, h):
    """Squared L2 (IWM) or smooth L1 (official I-JEPA code) on the targets; plus the C-JEPA VICReg terms."""
    p = p.float()
    loss = F.mse_loss(p, h) if cfg["loss"] == "l2" else F.smooth_l1_loss(p, h)
    if cfg["vicreg_weight"] > 0:  # C-JEPA, or IWM with C-JEPA's anti-collapse terms
        B, D = z.shape[0], h.shape[-1]
        pool = lambda t: t.reshape(-1, B, t.shape[1], D).mean(dim=(0, 2))  # [n·B, K, D] → per image [B, D]
        sim, var, cov = vicreg_terms(z.float().mean(1), pool(p), pool(h))
        ws, wv, wc = cfg["vicreg"]
        loss = loss + cfg["vicreg_weight"] * (ws * sim + wv * var + wc * cov)
    return loss


def jepa_loss(cfg, nets, imgs, ctx, tgt, src_p, tgt_p, amp):
    """The loss of one micro-batch: imgs uint8 crops [B, 3, H, W]; masks and view parameters for these rows."""
    encoder, predictor, target_encoder = nets
    x, y, action = views(imgs, src_p, tgt_p, augment.PRESETS[cfg["augment"]], cfg["action"])
    with torch.autocast(imgs.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        h_all, h = targets(target_encoder, y, tgt)
        z = encoder(augment.normalize(x), ctx)
        p = predictor(z, ctx, tgt, action, one_pass=cfg["one_pass"])
    stats = {"target_tokens": h_all.detach()}  # their health (token_stats) is logged at log steps
    return loss_terms(cfg, z, p, h), stats


def rows_of(tree, sl):
    if isinstance(tree, dict):
        return {k: v[sl] for k, v in tree.items()}
    return [m[sl] for m in tree]


def ridge_probe(train_feats, train_y, val_feats, val_y, lam=1e-2):
    """Cheap online probe: closed-form ridge regression on mean-pooled frozen features, one label column of
    train_y / val_y [n, T] (a health signal while training, not the paper's protocol: finetune.py has those)."""
    mu, sd = train_feats.mean(0), train_feats.std(0) + 1e-6
    X, V = [(torch.cat([(f - mu) / sd, torch.ones_like(f[:, :1])], 1)).double() for f in (train_feats, val_feats)]
    Y = F.one_hot(train_y, int(max(train_y.max(), val_y.max())) + 1).double()
    W = torch.linalg.solve(X.T @ X + lam * len(X) * torch.eye(X.shape[1], dtype=X.dtype, device=X.device), X.T @ Y)
    return ((V @ W).argmax(1) == val_y).float().mean().item()


def evaluate(cfg, nets, eval_set, amp, label_names):
    """Rank 0 only: the world model's MRR on a fixed set (evaluate_mrr.py), the target tokens' health
    (effective rank, variance by image / position: evaluate_mrr.token_stats) and a ridge probe per label."""
    from evaluate_mrr import mrr_score, target_latents
    encoder, predictor, target_encoder = nets
    for m in nets:
        m.eval()
    aug = augment.PRESETS["strong" if cfg["augment"] == "strong" else "iwm"]  # I-JEPA has no jitter to invert
    res = mrr_score(encoder, target_encoder, predictor, eval_set["mrr"], aug, bank_size=cfg["eval_bank"],
                    generator=torch.Generator().manual_seed(0), encoding=cfg["action"])
    out = {"mrr": res["mrr"], "mrr_chance": res["chance"]}
    (tr_x, tr_y), (va_x, va_y) = eval_set["probe"]
    with torch.no_grad(), torch.autocast(tr_x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        tr_f, va_f = [torch.cat([target_encoder(augment.normalize(b.float() / 255)).float().mean(1)
                                 for b in x.split(256)]) for x in (tr_x, va_x)]
    out.update(token_stats(target_latents(target_encoder, va_x[:256].float() / 255, 64)))
    for t, name in enumerate(label_names):
        out[f"probe/{name}"] = ridge_probe(tr_f, tr_y[:, t], va_f, va_y[:, t])
    for m in (encoder, predictor):
        m.train()
    return out


def fixed_eval_set(cfg, device):
    val = data.build_dataset(cfg["data"], cfg["data_root"], "val", transform=data.eval_transform(cfg["img_size"]),
                             size=cfg["img_size"])
    train = data.build_dataset(cfg["data"], cfg["data_root"], "train", transform=data.eval_transform(cfg["img_size"]),
                               size=cfg["img_size"])
    def take(ds, n):
        idx = torch.linspace(0, len(ds) - 1, min(n, len(ds))).long().tolist()  # spread over the classes
        items = [ds[i] for i in idx]
        return torch.stack([x for x, _ in items]).to(device), torch.stack([y for _, y in items]).to(device)
    n = cfg["probe_images"]
    return {"mrr": take(val, cfg["eval_images"])[0], "probe": (take(train, n), take(val, n // 2)),
            "labels": val.label_names}


def main(argv=None):
    cfg = common.parse_config(CONFIG, argv, "train.py", __doc__)
    if cfg["method"] not in ("iwm", "ijepa", "cjepa"):
        common.fail("train.py", f"--method must be iwm, ijepa or cjepa, got {cfg['method']!r}")
    if cfg["method"] != "iwm":  # I-JEPA / C-JEPA: masking only, so there is no action to condition on
        cfg.update(augment="ijepa", cond="none")
    if cfg["method"] == "ijepa" and cfg["vicreg_weight"] > 0:
        common.fail("train.py", "I-JEPA has no VICReg terms: use --method cjepa (or --vicreg_weight 0)")
    if cfg["method"] == "cjepa" and not cfg["vicreg_weight"]:
        cfg["vicreg_weight"] = 0.001  # C-JEPA's weight (arXiv 2410.19560)
    if cfg["augment"] not in augment.PRESETS or cfg["loss"] not in ("l2", "smooth_l1") \
            or cfg["action"] not in augment.ENCODINGS:
        common.fail("train.py", f"--augment must be one of {sorted(augment.PRESETS)}, --loss l2 or smooth_l1, "
                                f"--action one of {augment.ENCODINGS}")
    rank, world, device = common.setup_distributed()
    device = common.pick_device(cfg["device"], device)
    if cfg["batch_size"] % (world * cfg["accum"]):
        common.fail("train.py", f"batch_size {cfg['batch_size']} must divide by world size {world} × accum {cfg['accum']}")
    torch.manual_seed(cfg["seed"])  # the same initial weights on every rank and in every run
    try:  # every bad input is found here, before any work starts
        encoder, predictor = M.build_models(cfg, len(augment.ACTION_NAMES))
        ds = data.build_dataset(cfg["data"], cfg["data_root"], "train", size=cfg["img_size"],
                                transform=data.train_transform(cfg["img_size"], cfg["crop_scale"]),
                                length=cfg["data_length"] or None)  # data_length: built-in data only
        if len(ds) < cfg["batch_size"]:
            raise ValueError(f"dataset has {len(ds)} images, fewer than one batch of {cfg['batch_size']}")
        masking.sample_masks(2, encoder.grid, num_targets=cfg["num_targets"], target_scale=cfg["target_scale"],
                             target_aspect=cfg["target_aspect"], context_scale=cfg["context_scale"],
                             min_keep=cfg["min_keep"])
    except (ValueError, FileNotFoundError) as e:
        common.fail("train.py", e)
    return train(cfg, rank, world, device, encoder, predictor, ds)


def train(cfg, rank, world, device, encoder, predictor, ds):
    amp = common.autocast_dtype(device, cfg["dtype"])
    target_encoder = M.build_models(cfg, len(augment.ACTION_NAMES))[0]
    if cfg["init"]:  # official I-JEPA weights or ours, of this run's sizes; conditioning the file lacks stays fresh
        try:
            ck, _ = M.load_checkpoint(cfg["init"], {k: cfg[k] for k in M.SHAPE_KEYS})
            M.load_nets(ck, encoder, target_encoder, predictor, cfg["init"])
        except (ValueError, FileNotFoundError) as e:
            common.fail("train.py", e)
    else:
        target_encoder.load_state_dict(encoder.state_dict())
    target_encoder.requires_grad_(False)
    for m in (encoder, predictor, target_encoder):
        m.to(device)
        m.grad_ckpt = cfg["grad_ckpt"]
    nets = (encoder, predictor, target_encoder)
    opt = common.make_adamw(common.param_groups({"encoder.": encoder, "predictor.": predictor}, cfg["weight_decay"]),
                            cfg["lr"], device=device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)

    micro = cfg["batch_size"] // (world * cfg["accum"])
    sampler = StepSampler(len(ds), cfg["batch_size"], micro, rank, world, cfg["accum"], cfg["seed"])
    loader = torch.utils.data.DataLoader(
        data.EpochIndexed(ds, cfg["seed"]), batch_size=micro, sampler=sampler, num_workers=cfg["workers"],
        pin_memory=device.type == "cuda", persistent_workers=cfg["workers"] > 0, drop_last=True,
        collate_fn=lambda items: torch.stack([x for x, _ in items]))  # labels are not used in pretraining
    ipe = sampler.steps
    total = cfg["epochs"] * ipe  # schedules span all epochs; max_steps only stops early (then resume continues)
    warmup = min(round(cfg["warmup_epochs"] * ipe), total)  # fractional epochs allowed
    stop_at = min(cfg["max_steps"] or total, total)

    step, os_ckpt = 0, os.path.join(cfg["out_dir"], "latest.pt")
    if cfg["resume"]:
        path = os_ckpt if cfg["resume"] == "latest" else cfg["resume"]
        try:  # a checkpoint of another architecture or method is refused, the differing keys named
            ck, _ = M.load_checkpoint(path, {k: cfg[k] for k in ARCH_KEYS}, need=M.NETS + ("opt", "scaler"))
            M.load_nets(ck, encoder, target_encoder, predictor, path)
        except (ValueError, FileNotFoundError) as e:
            common.fail("train.py", e)
        opt.load_state_dict(ck["opt"])
        scaler.load_state_dict(ck["scaler"])
        step = ck["step"]
    enc_t, pred_t = encoder, predictor
    if world > 1:  # DDP wraps only the trained modules; the EMA target stays a plain module
        enc_t = DDP(encoder, device_ids=[device.index] if device.type == "cuda" else None)
        pred_t = DDP(predictor, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg["compile"]:
        enc_t, pred_t, target_c = torch.compile(enc_t), torch.compile(pred_t), torch.compile(target_encoder)
    else:
        target_c = target_encoder
    run_nets = (enc_t, pred_t, target_c)
    ema_src, ema_tgt = list(encoder.parameters()), list(target_encoder.parameters())
    trained = [p for p in list(encoder.parameters()) + list(predictor.parameters()) if p.requires_grad]

    main_rank = rank == 0
    if main_rank:
        os.makedirs(cfg["out_dir"], exist_ok=True)
        print("config:", {k: cfg[k] for k in cfg}, flush=True)
        print(f"encoder {M.count_params(encoder) / 1e6:.2f}M params, predictor {M.count_params(predictor) / 1e6:.2f}M, "
              f"{world} process(es) on {device}, {micro} images per micro-batch, {total} steps", flush=True)
    log = common.JsonlLog(os.path.join(cfg["out_dir"], "log.jsonl"), main_rank)
    eval_set = fixed_eval_set(cfg, device) if main_rank and cfg["eval_images"] > 0 else None
    stop = {"flag": False}
    def on_signal(*_):  # finish the step, save, exit: Ctrl-C or a cluster's SIGTERM never corrupts a checkpoint
        stop["flag"] = True
    old = [signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)]

    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    loss_sum = torch.zeros((), device=device)  # mean loss over the log interval, summed on the device (no sync)
    def save(epoch_done):
        if nonfinite.item():
            return
        ck = {"encoder": encoder.state_dict(), "predictor": predictor.state_dict(),
              "target_encoder": target_encoder.state_dict(), "opt": opt.state_dict(), "scaler": scaler.state_dict(),
              "step": step, "epoch": step // ipe, "config": cfg, "rng": torch.get_rng_state()}
        common.save_atomic(ck, os_ckpt)
        if epoch_done and cfg["keep_every"] and (step // ipe) % cfg["keep_every"] == 0:
            common.save_atomic(ck, os.path.join(cfg["out_dir"], f"ep{step // ipe:04d}.pt"))

    bar = tqdm(total=stop_at, initial=step, disable=not main_rank, dynamic_ncols=True)
    t_log, wait, n_img, last = time.perf_counter(), 0.0, 0, {}
    result = {}
    while step < stop_at and not stop["flag"]:
        epoch = step // ipe
        sampler.set_epoch(epoch, step % ipe)
        it = iter(loader)
        for _ in range(step % ipe, ipe):
            if step >= stop_at or stop["flag"]:
                break
            lr = common.warmup_cosine(step, warmup, total, cfg["start_lr"], cfg["lr"], cfg["final_lr"])
            wd = common.cosine(step, total, cfg["weight_decay"], cfg["final_weight_decay"])
            m = cfg["ema"][0] + (cfg["ema"][1] - cfg["ema"][0]) * step / total
            common.set_schedule(opt, lr, wd)
            ctx, tgt, src_p, tgt_p = step_randomness(cfg, step, cfg["batch_size"], encoder.grid, device)
            for k in range(cfg["accum"]):
                t0 = time.perf_counter()
                imgs = next(it).to(device, non_blocking=True)
                wait += time.perf_counter() - t0
                lo = (rank * cfg["accum"] + k) * micro
                sl = slice(lo, lo + micro)
                sync = k == cfg["accum"] - 1  # DDP all-reduces gradients on the last micro-step only
                quiet = world > 1 and not sync
                with (enc_t.no_sync() if quiet else contextlib.nullcontext()), \
                        (pred_t.no_sync() if quiet else contextlib.nullcontext()):
                    loss, stats = jepa_loss(cfg, run_nets, imgs, rows_of(ctx, sl), rows_of(tgt, sl),
                                            rows_of(src_p, sl), rows_of(tgt_p, sl), amp)
                    scaler.scale(loss / cfg["accum"]).backward()
                nonfinite |= ~torch.isfinite(loss.detach())
                loss_sum += loss.detach() / cfg["accum"]
            log_now = main_rank and ((step + 1) % cfg["log_every"] == 0 or step + 1 == stop_at)
            if log_now:
                scaler.unscale_(opt)
                gnorm = torch.nn.utils.get_total_norm([p.grad for p in trained if p.grad is not None])
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():  # one fused foreach kernel: θ_EMA ← θ_EMA + (1−m)(θ − θ_EMA)
                torch._foreach_lerp_(ema_tgt, ema_src, 1.0 - m)
            step += 1
            n_img += cfg["batch_size"]
            bar.update(1)
            if step % cfg["log_every"] == 0 or step == stop_at:
                if nonfinite.item():  # the only host syncs: log steps and saves, on every rank
                    _restore(old)
                    msg = (f"loss became NaN/Inf before step {step}; nothing was saved from this state, the last good "
                           f"checkpoint stays at {os_ckpt}. Lower --lr or use --dtype float32.")
                    if main_rank:
                        print(f"train.py: error: {msg}", file=sys.stderr)
                    sys.exit(1)
            if log_now:
                dt = time.perf_counter() - t_log
                steps_logged = n_img // cfg["batch_size"]
                last = {"step": step, "epoch": step / ipe, "loss": loss_sum.item() / steps_logged, "lr": lr, "wd": wd,
                        "momentum": m,
                        "grad_norm": gnorm.item(), "img_per_s": n_img / dt, "data_wait": wait / dt,
                        "peak_mem_gb": _peak_mem(device)}
                h = stats["target_tokens"].float()
                last.update(token_stats(F.layer_norm(h, h.shape[-1:])))
                if collapse_warning(last):
                    bar.write(f"warning: step {step}: {collapse_warning(last)}. Lower --lr or raise --warmup_epochs.")
                bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{lr:.2e}", rank=f"{last['rank']:.1f}",
                                pos=f"{last['var_position']:.2f}", img_s=f"{last['img_per_s']:.0f}")
                log.write(**last)
                t_log, wait, n_img = time.perf_counter(), 0.0, 0
                loss_sum.zero_()
            epoch_end = step % ipe == 0
            save_now = (epoch_end and (step // ipe) % cfg["save_every"] == 0) or step == stop_at or stop["flag"]
            if main_rank and eval_set is not None and (
                    (cfg["eval_every"] and step % cfg["eval_every"] == 0) or (not cfg["eval_every"] and save_now)):
                result = evaluate(cfg, nets, eval_set, amp, eval_set["labels"])
                log.write(step=step, **result)
                probes = ", ".join(f"{k[6:]} {v:.2f}" for k, v in result.items() if k.startswith("probe/"))
                bar.write(f"step {step}: MRR {result['mrr']:.3f} (chance {result['mrr_chance']:.3f}), target rank "
                          f"{result['rank']:.1f}, variance by position {result['var_position']:.2f}; probe {probes}")
            if main_rank and save_now:
                save(epoch_end)
    bar.close()
    _restore(old)
    if main_rank:
        print(f"done: step {step}, loss {last.get('loss', float('nan')):.4f}"
              + (f", MRR {result['mrr']:.3f}" if result else "") + f"; checkpoint {os_ckpt}", flush=True)
    if world > 1:  # a cheap end-of-run check that DDP kept the replicas identical
        sums = torch.stack([p.detach().double().sum() for p in encoder.parameters()])
        gathered = [torch.zeros_like(sums) for _ in range(world)]
        dist.all_gather(gathered, sums)
        if main_rank:
            print(f"replicas identical: {all(torch.equal(g, sums) for g in gathered)}", flush=True)
        dist.barrier()
        dist.destroy_process_group()
    return {"step": step, **last, **result}


def _restore(old):
    for s, h in zip((signal.SIGINT, signal.SIGTERM), old):
        signal.signal(s, h)


def _peak_mem(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


if __name__ == "__main__":
    main()
