"""IWM pretraining (Garrido et al., arXiv 2403.00504, §3 and Fig. 2), with I-JEPA (arXiv 2301.08243) and C-JEPA
(arXiv 2410.19560) as switches of the same loop.

One step: `iwm_loss`, the loss of a batch in the paper's order (views x, y and the action a_{x→y}: augment.py;
context and target blocks: masks.py; f_θ^EMA(y) → f_θ(x) → world model p_φ(z_x, a_{x→y}, m_a) → squared L2), then
`train_step`'s AdamW step and EMA θ_EMA ← m·θ_EMA + (1−m)·θ.
`setup` builds a run (networks, optimizer, data, resume state); `loop` steps it, logs, evaluates and saves.

    python train.py --config configs/quickstart.json  # built-in data, laptop CPU (time: see README)
    torchrun --nproc_per_node=8 train.py --cond feature --data_root /data/imagenet  # IWM-Equi
"""
import collections
import os
import time
import types

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import augment
import cli
import common
import data
import masks as masking
import model as M
from evaluate_mrr import collapse_warning, fixed_eval_set, in_training_eval, token_stats

CONFIG, HELP = cli.table(  # key=(default, description[, choices: the code's own table]), printed by --help
    data=("imagefolder", "shapes (built in, no files) or a dataset under --data_root", cli.DATASETS),
    data_root=("", "the dataset's folder (imagefolder: <root>/train/<class>/<image>)"),
    data_length=(0, "images per epoch of shapes (0: 50,000)"), img_size=(224, "image side in pixels"),
    patch_size=(16, "ViT patch side in pixels"), crop_scale=((0.3, 1.0), "area range of the shared crop I' (data.py)"),
    workers=(8, "loader processes (0: load in this one)"), model=("base", "encoder size", M.VIT_PRESETS),
    pred_depth=(18, "predictor blocks (IWM-Equi: 18×384, IWM §4.1)"), pred_width=(384, "predictor width"),
    cond=("feature", "how the world model sees the action a_{x→y} (IWM Table 1)", M.CONDS),
    method=("iwm", "ijepa: no photometric views, no action; cjepa: ijepa + VICReg terms", ("iwm", "ijepa", "cjepa")),
    augment=("iwm", "the views' photometric transforms (augment.PRESETS)", augment.PRESETS),
    loss=("l2", "squared L2 (IWM) or smooth L1 (the official I-JEPA code)", ("l2", "smooth_l1")),
    action=("log_std", "a_{x→y} as log-ratios at unit std (our choice) or raw differences", augment.ENCODINGS),
    num_targets=(4, "target blocks per image (I-JEPA multiblock)"), target_scale=((0.15, 0.2), "their area range"),
    target_aspect=((0.75, 1.5), "their aspect range"), context_scale=((0.85, 1.0), "area range of the context"),
    min_keep=(10, "fewest context patches"), one_pass=(False, "all target blocks in one predictor pass (speed)"),
    batch_size=(2048, "global batch: all processes × accum"), accum=(1, "micro-batches per step (accumulation)"),
    epochs=(300, "the schedules' length (I-JEPA App. A.1)"), max_steps=(0, "stop early at this step (0: no)"),
    warmup_epochs=(15.0, "linear lr warm-up, then cosine"), lr=(1e-3, "peak lr"), start_lr=(1e-4, "lr at step 0"),
    final_lr=(1e-6, "lr at the end"), weight_decay=(0.04, "weight decay at step 0, cosine to final_weight_decay"),
    final_weight_decay=(0.4, "weight decay at the end"), ema=((0.996, 1.0), "EMA momentum at start, end (linear)"),
    pred_lr_scale=(1.0, "the predictor's lr = lr × this"), vicreg=((25.0, 25.0, 1.0), "VICReg: sim, var, cov"),
    vicreg_weight=(0.0, "weight of the VICReg terms (C-JEPA); 0 off, except cjepa: its paper's 0.001"),
    device=("auto", "auto (this rank's GPU, else the CPU), cpu, cuda or cuda:N"), seed=(0, "seed of all draws"),
    dtype=("auto", "autocast on GPU (auto: bf16, else fp16; the CPU runs fp32)", common.DTYPES),
    compile=(False, "compile each transformer block"), grad_ckpt=(False, "activation checkpointing (less memory)"),
    out_dir=("runs/iwm", "the run's folder; one that holds a run needs --resume latest or --overwrite true"),
    log_every=(50, "steps per log"), save_every=(1, "epochs per save"), keep_every=(50, "epochs per kept epNNNN.pt"),
    eval_every=(-1, "steps per in-training evaluation; 0 never, -1 at every save"), eval_bank=(64, "K of its MRR"),
    eval_images=(16, "val images of its MRR"), probe_images=(1024, "train images of its probes"),
    resume=("", "continue a run: a checkpoint, or latest (out_dir/latest.pt)"), overwrite=(False, "start over"),
    init=("", "initial weights: an official I-JEPA or our checkpoint of this run's sizes"))
MINIMUM = dict.fromkeys(("img_size", "patch_size", "batch_size", "accum", "epochs", "pred_depth", "pred_width",
                         "num_targets", "min_keep", "log_every", "save_every"), 1) | {"eval_every": -1}  # else >= 0
# keys that define a checkpoint, its schedule and its data order: a resume that changes one is refused (pred_lr_scale:
# AdamW's state keeps the file's lr scales); model.LEGACY: what a file saved before a key existed used
ARCH_KEYS = ("model", "img_size", "patch_size", "pred_depth", "pred_width", "cond", "method", "augment", "loss",
             "action", "pred_lr_scale", "lr", "batch_size", "epochs", "seed")


# The networks: `run.nets` holds the plain modules (weights, EMA, evaluation, checkpoints); `run.wrapped` what the
# step calls: DDP around the two trained ones when world > 1, else the same (--compile compiles blocks in place).
Nets = collections.namedtuple("Nets", "encoder predictor target_encoder")


def check_config(cfg, prog="train.py"):
    """The method switches, and a one-line error for a bad value (cli.check_values: MINIMUM and HELP's choices).
    I-JEPA and C-JEPA mask only: no photometric views, so no action to condition on; C-JEPA adds VICReg terms."""
    cli.check_values(cfg, prog, MINIMUM, HELP)
    if cfg["method"] != "iwm":
        cfg.update(augment="ijepa", cond="none")
    if cfg["method"] == "ijepa" and cfg["vicreg_weight"] > 0:
        common.fail(prog, "I-JEPA has no VICReg terms: use --method cjepa (or --vicreg_weight 0)")
    if cfg["method"] == "cjepa" and not cfg["vicreg_weight"]:
        cfg["vicreg_weight"] = 0.001  # C-JEPA's weight (arXiv 2410.19560)
    return cfg


def schedules(cfg, step, warmup, total):
    """(lr, weight decay, EMA momentum) at `step` (I-JEPA App. A.1): lr linear warm-up then cosine, weight decay
    cosine, momentum linear."""
    lr = common.warmup_cosine(step, warmup, total, cfg["start_lr"], cfg["lr"], cfg["final_lr"])
    wd = common.cosine(step, total, cfg["weight_decay"], cfg["final_weight_decay"])
    return lr, wd, cfg["ema"][0] + (cfg["ema"][1] - cfg["ema"][0]) * step / total


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
    # the view parameters stay on the CPU: apply_params skips the ops no image needs, then copies them (no sync)
    return [move(m) for m in ctx], [move(m) for m in tgt], src, tgt_p


def vicreg_terms(z, p, h):
    """C-JEPA: invariance between pooled prediction and pooled target, VICReg variance hinge (γ=1, ε=1e-4) and
    off-diagonal covariance on per-image mean-pooled context features z [B, D]."""
    sim, z = F.mse_loss(p, h), z - z.mean(0)
    var = F.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean()
    cov = (z.T @ z) / max(z.shape[0] - 1, 1)
    off = cov - torch.diag(torch.diag(cov))
    return sim, var, off.pow(2).sum() / z.shape[1]


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


def iwm_loss(cfg, nets, imgs, draws, amp=None, mark=lambda stage: None):
    """The IWM loss (§3, Fig. 2) of uint8 crops I' [B, 3, H, W] from the networks (encoder, predictor, target_encoder)
    and the batch's draws (masks and view parameters: step_randomness) alone; train_step calls it. amp: autocast
    dtype (None: fp32); mark(stage): bench.py's lap. Returns (loss, context tokens z, all target tokens)."""
    ctx, tgt, src_p, tgt_p = draws
    x, y, action, _ = augment.make_views(imgs, augment.PRESETS[cfg["augment"]],
                                         params={"source": src_p, "target": tgt_p}, encoding=cfg["action"])
    mark("augment")
    with common.autocast(imgs.device, amp):
        h_all, h = targets(nets.target_encoder, y, tgt)
        mark("target fwd")
        z = nets.encoder(augment.normalize(x), ctx)
        mark("context fwd")
        p = nets.predictor(z, ctx, tgt, action, one_pass=cfg["one_pass"])
    loss = loss_terms(cfg, z, p, h)
    mark("predictor fwd")
    return loss, z, h_all


def rows_of(tree, sl):
    if isinstance(tree, dict):
        return {k: v[sl] for k, v in tree.items()}
    return [m[sl] for m in tree]


def train_step(run, step, micro_batches, lap=None, log=False):
    """One step on `accum` micro-batches of uint8 crops I' [Bm, 3, H, W] on the device: iwm_loss → AdamW → EMA.
    lap(stage) (bench.py) is called as each stage ends; log: also the grad norm. Returns lr, wd, momentum and, on
    the device (no sync), the micro-batch losses, the last one's target tokens and the grad norm (None unless log)."""
    cfg, accum, wrapped = run.cfg, run.cfg["accum"], run.wrapped
    mark = lap or (lambda stage: None)
    lr, wd, m = schedules(cfg, step, run.warmup, run.total)
    common.set_schedule(run.opt, lr, wd)
    draws = step_randomness(cfg, step, cfg["batch_size"], run.nets.encoder.grid, run.device)  # global batch
    mark("masks + params")
    losses = []
    for k, imgs in enumerate(micro_batches):
        lo = (run.rank * accum + k) * run.micro  # this rank's rows of the global batch
        mine = [rows_of(d, slice(lo, lo + run.micro)) for d in draws]
        with common.no_sync((wrapped.encoder, wrapped.predictor), run.world > 1 and k < accum - 1):  # DDP: last syncs
            loss, z, h_all = iwm_loss(cfg, wrapped, imgs, mine, run.amp, mark)
            if lap:  # z's gradient is complete where the predictor's backward ends and the encoder's begins
                z.register_hook(lambda grad: lap("predictor bwd"))
            run.scaler.scale(loss / accum).backward()
            mark("context bwd")
        losses.append(loss.detach())
    gnorm = None
    if log:
        run.scaler.unscale_(run.opt)
        gnorm = torch.nn.utils.get_total_norm([p.grad for p in run.trained if p.grad is not None])
    run.scaler.step(run.opt)
    run.scaler.update()
    run.opt.zero_grad(set_to_none=True)
    mark("optimizer")
    with torch.no_grad():  # one fused foreach kernel: θ_EMA ← θ_EMA + (1−m)(θ − θ_EMA)
        torch._foreach_lerp_(run.ema_target, run.ema_source, 1.0 - m)
    mark("EMA")
    return {"losses": losses, "target_tokens": h_all.detach(), "grad_norm": gnorm, "lr": lr, "wd": wd, "momentum": m}


def main(argv=None):
    cfg = check_config(cli.parse_config(CONFIG, argv, "train.py", __doc__, HELP, cli.EXIT_TRAINING))
    rank, world, device = common.setup_distributed(cfg["device"])
    if cfg["batch_size"] % (world * cfg["accum"]):
        common.fail("train.py", f"batch_size {cfg['batch_size']} must divide by world {world} × accum {cfg['accum']}")
    with common.running("train.py"):  # an error after start: one line, within seconds
        run = setup(cfg, rank, world, device)
        out = loop(run)
    if run.stopped.signum:  # Ctrl-C / SIGTERM: saved, exit 128 + signal so that a scheduler sees the pre-emption
        common.exit_stopped("train.py", run.stopped, run.step, run.ckpt_path, run.main_rank)
    return out


def setup(cfg, rank, world, device):
    """The run of this config: `build`'s networks, optimizer and resume state, the data loader and the fixed
    evaluation set. Every bad input fails here with a one-line error, before any file is touched or work starts."""
    try:  # the data first: a --data_root that is not there fails before any network is built
        common.claim_out_dir(cfg)
        ds = data.build_dataset(cfg["data"], cfg["data_root"], "train", size=cfg["img_size"],
                                transform=data.train_transform(cfg["img_size"], cfg["crop_scale"]),
                                length=cfg["data_length"] or None)  # data_length: built-in data only
        if len(ds) < cfg["batch_size"]:
            raise ValueError(f"dataset has {len(ds)} images, fewer than one batch of {cfg['batch_size']}")
        common.probe_dataset(ds)
        evaluates = rank == 0 and cfg["eval_images"] > 0 and cfg["eval_every"] != 0  # needs the val split: now
        eval_set = fixed_eval_set(cfg, device) if evaluates else None
        torch.manual_seed(cfg["seed"])  # the same initial weights on every rank and in every run
        encoder, predictor = M.build_models(cfg, augment.ACTION_NAMES)
        masking.sample_masks(2, encoder.grid, num_targets=cfg["num_targets"], target_scale=cfg["target_scale"],
                             target_aspect=cfg["target_aspect"], context_scale=cfg["context_scale"],
                             min_keep=cfg["min_keep"])
    except (ValueError, FileNotFoundError) as e:
        common.fail("train.py", e)
    micro = cfg["batch_size"] // (world * cfg["accum"])
    sampler = data.StepSampler(len(ds), cfg["batch_size"], micro, rank, cfg["accum"], cfg["seed"])
    run = build(cfg, rank, world, device, encoder, predictor, sampler.steps)
    run.sampler, run.eval_set, run.loader = sampler, eval_set, torch.utils.data.DataLoader(
        data.EpochIndexed(ds, cfg["seed"]), batch_size=micro, sampler=sampler, num_workers=cfg["workers"],
        pin_memory=device.type == "cuda", persistent_workers=cfg["workers"] > 0, drop_last=True,
        worker_init_fn=common.ignore_stop_signals,
        collate_fn=lambda items: torch.stack([x for x, _ in items]))  # labels are not used in pretraining
    if run.main_rank:
        common.prepare_out_dir(cfg, "train.py", run.step)
        print("config:", {k: cfg[k] for k in cfg}, flush=True)
        print(f"encoder {M.count_params(encoder) / 1e6:.2f}M params, predictor {M.count_params(predictor) / 1e6:.2f}M,"
              f" {world} process(es) on {device}, {micro} images per micro-batch, {run.total} steps", flush=True)
    return run


def build(cfg, rank, world, device, encoder, predictor, steps_per_epoch):
    """A run around a freshly built encoder and predictor (bench.py times its steps): the target encoder (the
    encoder's copy, or --init's weights), AdamW and the GradScaler, --resume's state, the wrapped networks and the
    schedule's lengths. Schedules span all epochs; max_steps only stops early (a resume then continues)."""
    amp = common.autocast_dtype(device, cfg["dtype"])
    nets = Nets(encoder, predictor, M.build_models(cfg, augment.ACTION_NAMES)[0])
    if cfg["init"]:  # official I-JEPA weights or ours, of this run's sizes; conditioning the file lacks stays fresh
        load(cfg["init"], {k: cfg[k] for k in M.SHAPE_KEYS}, nets)
    else:
        nets.target_encoder.load_state_dict(encoder.state_dict())
    nets.target_encoder.requires_grad_(False)
    for m in nets:
        m.to(device)
        m.grad_ckpt = cfg["grad_ckpt"]
    pred_scale = lambda name: cfg["pred_lr_scale"] if name.startswith("predictor.") else 1.0  # laptop recipe: 3
    opt = common.make_adamw(M.param_groups({"encoder.": encoder, "predictor.": predictor}, cfg["weight_decay"],
                                           pred_scale), cfg["lr"], device=device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    ckpt_path, step = os.path.join(cfg["out_dir"], "latest.pt"), 0
    if cfg["resume"]:  # a checkpoint of another architecture or method is refused, the differing keys named
        ck = load(ckpt_path if cfg["resume"] == "latest" else cfg["resume"], {k: cfg[k] for k in ARCH_KEYS}, nets,
                  need=M.NETS + ("opt", "scaler"), states=dict(opt=opt, scaler=scaler))
        step = ck["step"]
    total = cfg["epochs"] * steps_per_epoch
    return types.SimpleNamespace(
        cfg=cfg, rank=rank, world=world, device=device, amp=amp, main_rank=rank == 0, nets=nets,
        wrapped=wrap(cfg, nets, device, world), opt=opt, scaler=scaler, ckpt_path=ckpt_path,
        micro=cfg["batch_size"] // (world * cfg["accum"]), step=step, ipe=steps_per_epoch, total=total,
        warmup=min(round(cfg["warmup_epochs"] * steps_per_epoch), total),  # fractional epochs allowed
        stop_at=min(cfg["max_steps"] or total, total),
        ema_source=list(encoder.parameters()), ema_target=list(nets.target_encoder.parameters()),
        trained=[p for p in list(encoder.parameters()) + list(predictor.parameters()) if p.requires_grad])


def load(path, flags, nets, need=M.NETS, states=None):
    """A checkpoint's networks into nets and, on resume, `states` {key: optimizer, scaler}; a bad file is one line."""
    try:
        ck, _ = M.load_checkpoint(path, flags, need=need)
        M.load_nets(ck, nets.encoder, nets.target_encoder, nets.predictor, path)
        if states:
            common.load_states(ck, path, **states)
    except (ValueError, FileNotFoundError) as e:
        common.fail("train.py", e)
    return ck


def wrap(cfg, nets, device, world):
    """What the step calls: DDP around the trained modules when world > 1 (the EMA target stays plain). --compile
    compiles each transformer block in place ("regional": one graph serves all the blocks of a width, so start-up
    takes seconds, not the minutes of whole networks), the token count, which the masks vary, dynamic from the start."""
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        nets = nets._replace(encoder=DDP(nets.encoder, device_ids=ids), predictor=DDP(nets.predictor, device_ids=ids))
    if cfg["compile"]:
        triton = torch._inductor.config.triton
        if hasattr(triton, "mix_order_reduction"):  # torch 2.11 on an H100: with dynamic token counts this fusion of
            triton.mix_order_reduction = False      # the LayerNorm backward sized its workspace wrong: the step failed
        for blk in (b for net in nets for b in net.modules() if isinstance(b, M.Block)):
            blk.compile(dynamic=True)
    return nets


def loop(run):
    """Steps run.step → run.stop_at with logs, in-training evaluations and checkpoints. Ctrl-C or SIGTERM finishes the
    step, saves and stops, so a checkpoint is never corrupt. Returns the last log row and evaluation."""
    cfg, ipe, eval_set, run.stopped = run.cfg, run.ipe, run.eval_set, common.GracefulStop()
    stop, log = run.stopped, common.JsonlLog(os.path.join(cfg["out_dir"], "log.jsonl"), run.main_rank)
    nonfinite = torch.zeros((), dtype=torch.bool, device=run.device)
    loss_sum = torch.zeros((), device=run.device)  # mean loss over the log interval, summed on the device (no sync)
    bar = tqdm(total=run.stop_at, initial=run.step, disable=not run.main_rank, dynamic_ncols=True)
    t_log, wait, n_img, last, result, halted = time.perf_counter(), 0.0, 0, {}, {}, False
    while run.step < run.stop_at and not halted:
        run.sampler.set_epoch(run.step // ipe, run.step % ipe)
        it = iter(run.loader)
        for _ in range(run.step % ipe, ipe):
            if run.step >= run.stop_at or halted:
                break
            t0 = time.perf_counter()
            imgs = [next(it).to(run.device, non_blocking=True) for _ in range(cfg["accum"])]
            wait += time.perf_counter() - t0
            log_now = run.main_rank and ((run.step + 1) % cfg["log_every"] == 0 or run.step + 1 == run.stop_at)
            out = train_step(run, run.step, imgs, log=log_now)
            for loss in out["losses"]:
                nonfinite |= ~torch.isfinite(loss)
                loss_sum += loss / cfg["accum"]
            run.step += 1
            n_img += cfg["batch_size"]
            bar.update(1)
            halted, epoch_end = stop.requested, run.step % ipe == 0  # read once: a stop saves this very step
            every = [e for e in (cfg["save_every"], cfg["keep_every"]) if e]  # kept epochs save too: their snapshot
            save_now = (epoch_end and any(run.step // ipe % e == 0 for e in every)) or run.step == run.stop_at or halted
            eval_now = cfg["eval_every"] > 0 and run.step % cfg["eval_every"] == 0 or cfg["eval_every"] < 0 and save_now
            if (run.step % cfg["log_every"] == 0 or save_now or eval_now) and nonfinite.item():
                stop.restore()  # the only host syncs: log, save and eval steps; a NaN state is never saved or evaluated
                common.exit_nonfinite("train.py", run.step, run.ckpt_path, "--lr", run.main_rank)
            if log_now:
                dt = time.perf_counter() - t_log
                last = log_row(run, out, loss_sum.item() / (n_img // cfg["batch_size"]), n_img / dt, wait / dt, bar)
                log.write(**last)
                t_log, wait, n_img = time.perf_counter(), 0.0, 0
                loss_sum.zero_()
            if eval_set is not None and eval_now:
                result = in_training_eval(cfg, run.nets, eval_set, run.amp)
                log.write(step=run.step, **result)
                probes = ", ".join(f"{k[6:]} {v:.2f}" for k, v in result.items() if k.startswith("probe/"))
                bar.write(f"step {run.step}: MRR {result['mrr']:.3f} (chance {result['mrr_chance']:.3f}), target rank "
                          f"{result['rank']:.1f}, variance by position {result['var_position']:.2f}; probe {probes}")
            halted = stop.requested  # again: a stop that came during the evaluation saves this step too
            if run.main_rank and (save_now or halted):
                save(run, epoch_end)
    bar.close()
    stop.restore()
    if run.main_rank:
        loss = f"loss {last['loss']:.4f}" if last else "no loss logged yet (every --log_every steps)"
        print(f"{'stopped' if stop.signum else 'done'}: step {run.step}, {loss}" + (
            f", in-training MRR {result['mrr']:.3f}" if result else "") + f"; checkpoint {run.ckpt_path}", flush=True)
    common.end_distributed(run.nets.encoder, run.world, run.main_rank)
    return {"step": run.step, **last, **result}


def log_row(run, out, loss, img_per_s, data_wait, bar):
    """The log row of an interval (main rank): loss, schedules, grad norm, throughput, the share of time spent
    waiting for data, peak memory and the target tokens' health, with a warning where they collapsed."""
    row = {"step": run.step, "epoch": run.step / run.ipe, "loss": loss, "lr": out["lr"], "wd": out["wd"],
           "momentum": out["momentum"], "grad_norm": out["grad_norm"].item(), "img_per_s": img_per_s,
           "data_wait": data_wait, "peak_mem_gb": common.peak_mem_gb(run.device)}
    h = out["target_tokens"].float()
    row.update(token_stats(F.layer_norm(h, h.shape[-1:])))
    if collapse_warning(row):
        bar.write(f"warning: step {run.step}: {collapse_warning(row)}. Lower --lr or raise --warmup_epochs.")
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{out['lr']:.2e}", rank=f"{row['rank']:.1f}",
                    pos=f"{row['var_position']:.2f}", img_s=f"{img_per_s:.0f}")
    return row


def save(run, epoch_done):
    """epNNNN.pt at the end of every keep_every-th epoch, unless it exists, then latest.pt (atomic writes): a kill
    during or between the two leaves latest.pt before the epoch, so the resumed run writes the snapshot."""
    nets, epoch = run.nets, run.step // run.ipe
    ck = {"encoder": nets.encoder.state_dict(), "predictor": nets.predictor.state_dict(), "step": run.step,
          "target_encoder": nets.target_encoder.state_dict(), "opt": run.opt.state_dict(), "epoch": epoch,
          "scaler": run.scaler.state_dict(), "config": run.cfg, "action_names": list(augment.ACTION_NAMES)}
    snapshot = os.path.join(run.cfg["out_dir"], f"ep{epoch:04d}.pt")
    if epoch_done and run.cfg["keep_every"] and epoch % run.cfg["keep_every"] == 0 and not os.path.exists(snapshot):
        common.save_atomic(ck, snapshot)
    common.save_atomic(ck, run.ckpt_path)


if __name__ == "__main__":
    main()
