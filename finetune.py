"""Leveraging the world model (IWM, arXiv 2403.00504, §5: Tables 4 and 7) and the evaluation probes (Table 8).

One script, one `--protocol`, one row of the table PROTOCOLS below: what trains, with which head and recipe. The
predictor p_φ runs with all tokens as context, a mask token at every position and the null action. The multitask
comparison (one single-task predictor per task, same budget) is scripts/multitask_baseline.py. The architecture is the
checkpoint's; `--random_init true` is every table's random-init baseline: --ckpt's architecture, none of its weights
(no --ckpt: --model/--img_size/..., else micro/32 px).

    python finetune.py --protocol linear --ckpt runs/iwm/latest.pt --data shapes --label color
    torchrun --nproc_per_node=8 finetune.py --protocol predictor --ckpt IN1K-vit.h.14-300e.pth.tar \\
        --data imagefolder --data_root /data/in1k --epochs 100 --warmup_epochs 5 --batch_size 1024 \\
        --train_images 0 --val_images 0
Paper: 100 epochs (warmup 5) on whole splits; the defaults are a CPU quick start. Last line: `<protocol> top1 <%>`.
"""
import os

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torchvision.transforms import v2
from tqdm import tqdm

import augment
import cli
import common
import data
import model as M
from heads import AttentiveHead, Classifier, evaluate, pooled_head

# The code below reads these columns, never a protocol's name.
#   encoder    the target encoder f_θ^EMA: frozen (no grad, eval mode, outside the trained model) or trained
#   predictor  None: not used; else p_φ trains, and a pretrained one gets this lr factor (§5: 1/10, as it already
#              maps the tokens; --predictor_init random: the full lr)
#   head       linear: BatchNorm1d(affine=False) + Linear on mean-pooled tokens; attentive: AttentiveHead (V-JEPA's
#              probe) on the tokens; pooled: mean pool → LayerNorm → Linear (MAE)
#   heads      grid: one head per lr of --linear_lrs, the best on val is reported; label: one head for --label;
#              tasks: a head and a task token per task of --tasks (default: every label type), batches split evenly
#   mae        the MAE ViT-B finetuning recipe: layer-wise lr decay, drop path, RandAugment + random erasing, mixup /
#              cutmix, label smoothing
#   cached     the frozen encoder's mean-pooled features are extracted once, from unaugmented images
#   blr        the base lr when --blr is 0 (lr = blr · batch / 256); None: the grid's lrs are absolute
COLUMNS = ("encoder", "predictor", "head", "heads", "mae", "cached", "blr")
PROTOCOLS = {name: dict(zip(COLUMNS, row)) for name, row in {
    #              encoder    predictor  head         heads    mae    cached  blr
    "linear":     ("frozen",  None,      "linear",    "grid",  False, True,   None),  # Table 8
    "attentive":  ("frozen",  None,      "attentive", "label", False, False,  1e-3),  # Table 8
    "predictor":  ("frozen",  0.1,       "attentive", "label", False, False,  1e-3),  # Table 4: frozen enc + predictor
    "encoder":    ("trained", None,      "pooled",    "label", True,  False,  5e-4),  # Table 4: encoder finetuning
    "end_to_end": ("trained", 0.1,       "attentive", "label", True,  False,  5e-4),  # Table 4: end to end
    "multitask":  ("frozen",  0.1,       "attentive", "tasks", False, False,  1e-3),  # Table 7
}.items()}
RANDOM_ARCH = dict(model="micro", img_size=32, patch_size=8, pred_depth=2, pred_width=64, cond="none")
CONFIG, HELP = cli.table(  # key=(default, description[, choices: the code's own table]), printed by --help
    protocol=("linear", "what trains, with which head and recipe: a row of PROTOCOLS (above)", PROTOCOLS),
    ckpt=("", "a train.py checkpoint or an official I-JEPA one (its EMA target encoder is evaluated)"),
    random_init=(False, "every table's random-init baseline: --ckpt's architecture, none of its weights"),
    predictor_init=("pretrained", "the predictor's weights, where the protocol uses it", ("pretrained", "random")),
    model=("", "encoder size. This and the next 5 keys, \"\" or 0: the checkpoint's (RANDOM_ARCH's with --random_init "
           "and no --ckpt); a value that contradicts the checkpoint is refused", M.VIT_PRESETS),
    img_size=(0, "image side in pixels"), patch_size=(0, "patch side"), pred_depth=(0, "predictor blocks"),
    pred_width=(0, "predictor width"), cond=("", "how the predictor sees the action", M.CONDS),
    data=("shapes", "shapes (built in, no files) or a dataset under --data_root", cli.DATASETS),
    data_root=("", "the dataset's folder (imagefolder: <root>/train/<class>/<image>, <root>/val/...)"),
    label=("", "the label to predict (\"\": the first)"), tasks=("", "multitask: labels, comma-separated (all)"),
    crop_scale=((0.08, 1.0), "area range of the random crop"), workers=(0, "loader processes (0: this one)"),
    train_images=(5000, "evenly spaced train images for a CPU quick start (0: the whole split)"),
    val_images=(1000, "evenly spaced val images (0: the whole split)"), epochs=(10, "the schedule's length"),
    max_steps=(0, "stop early at this step (0: no; resumable)"), batch_size=(64, "global batch"),
    blr=(0.0, "base lr: lr = blr · batch / 256 (0: the protocol's)"), warmup_epochs=(1, "lr warm-up, then cosine"),
    linear_lrs=([1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0], "lr grid (any length): a head per lr, the best on val "
                "counts"), weight_decay=(0.05, "weight decay"),
    layer_decay=(0.65, "MAE recipe (the mae column): layer-wise lr decay"), drop_path=(0.1, "MAE recipe: drop path"),
    smoothing=(0.1, "MAE recipe: label smoothing"), mixup=(0.8, "MAE recipe: mixup alpha (0: off)"),
    cutmix=(1.0, "MAE recipe: cutmix alpha (0: off)"), randaug=(9, "MAE recipe: RandAugment magnitude"),
    reprob=(0.25, "MAE recipe: random erasing probability"),
    device=("auto", "auto (this rank's GPU, else the CPU), cpu, cuda or cuda:N"), seed=(0, "seed of all draws"),
    dtype=("auto", "autocast on GPU (auto: bf16, else fp16; the CPU runs fp32)", common.DTYPES),
    out_dir=("", "the run's folder (default runs/finetune_<protocol>); one holding a run needs --resume/--overwrite"),
    log_every=(20, "steps per log row"), resume=("", "continue a run: a checkpoint, or latest (out_dir/latest.pt)"),
    overwrite=(False, "start over"), eval_every_epochs=(1, "epochs per evaluation (and the final step)"))
RESUME_KEYS = M.ARCH_KEYS + ("protocol", "label", "tasks", "data", "batch_size", "epochs", "linear_lrs", "random_init",
                           "predictor_init")


def layer_decay_scale(name, num_layers, decay):
    """MAE layer-wise lr decay for an encoder parameter name: patch_embed / pos_embed are layer 0, blocks.i is
    layer i+1, everything after the blocks (norm, head) layer L+1; the lr factor is decay^(L+1-layer)."""
    if name.startswith(("patch_embed", "pos_embed")):
        return decay ** (num_layers + 1)
    if name.startswith("blocks."):
        return decay ** (num_layers - int(name.split(".")[1]))
    return 1.0


def epoch_batches(n, batch, rank, world, seed, epoch, start):
    """This rank's rows of the global batches start, start+1, ... of `epoch` (permutation seeded by seed, epoch):
    any world size sees the same global batches, and a resume starts mid-epoch without reading skipped data."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
    local = batch // world
    return [perm[b * batch + rank * local:b * batch + (rank + 1) * local] for b in range(start, n // batch)]


def load_models(cfg):
    """(target encoder, predictor, the protocol's predictor is the pretrained one), of the checkpoint or fresh
    (--random_init); cfg's architecture keys are set to the models' (saved with the run, checked on resume)."""
    spec, given = PROTOCOLS[cfg["protocol"]], {k: cfg[k] for k in M.ARCH_KEYS if cfg[k]}
    pretrained = not cfg["random_init"] and cfg["predictor_init"] == "pretrained" and spec["predictor"] is not None
    # the weights to load: none for --random_init; the EMA target encoder (the one I-JEPA and IWM evaluate)
    need = () if cfg["random_init"] else ("target_encoder", "predictor") if pretrained else ("target_encoder",)
    if need and not cfg["ckpt"]:
        raise ValueError("--ckpt PATH is required (or --random_init true for the random-init baseline)")
    ck, run = M.load_checkpoint(cfg["ckpt"], given, need) if cfg["ckpt"] else ({}, {**RANDOM_ARCH, **given})
    cfg.update({k: run[k] for k in M.ARCH_KEYS})
    arch = dict(cfg, drop_path=cfg["drop_path"] if spec["mae"] else 0.0)
    _, encoder, predictor = M.build_from_checkpoint(ck, arch, augment.ACTION_NAMES, need, cfg["ckpt"])
    return encoder, predictor, pretrained


def task_labels(cfg, ds):
    """The label index of every task: --label ("": the first), or where the protocol has a head per task --tasks
    (default: every label type of the dataset). setup has refused the flag the protocol does not read."""
    known = list(ds.label_names)
    names = [cfg["label"] or known[0]]
    if PROTOCOLS[cfg["protocol"]]["heads"] == "tasks":
        names = cfg["tasks"].split(",") if cfg["tasks"] else known
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"--label/--tasks {unknown[0]!r} is not a label of this dataset; choose from {known}")
    return [known.index(name) for name in names]


def build_data(cfg):
    """Train split (crop + flip; the MAE protocols add RandAugment, and normalise before random erasing as MAE
    does, so their images arrive as normalised floats) and val split (resize + centre crop)."""
    size, spec = cfg["img_size"], PROTOCOLS[cfg["protocol"]]
    tf = data.train_transform(size, cfg["crop_scale"])
    if spec["cached"]:  # features are extracted once, from unaugmented images
        tf = data.eval_transform(size)
    elif spec["mae"]:
        tf = v2.Compose([tf, v2.RandAugment(num_ops=2, magnitude=cfg["randaug"]), v2.ToDtype(torch.float32, scale=True),
                         v2.Normalize(augment.MEAN, augment.STD), v2.RandomErasing(p=cfg["reprob"], value="random")])
    splits = (("train", tf, cfg["train_images"]), ("val", data.eval_transform(size), cfg["val_images"]))
    train, val = (data.subset(data.build_dataset(cfg["data"], cfg["data_root"] or None, split, transform=t, size=size),
                              n) for split, t, n in splits)
    if len(train) < cfg["batch_size"]:
        raise ValueError(f"the train split has {len(train)} images, fewer than one batch of {cfg['batch_size']}")
    for ds in (train, val):  # unreadable data fails now in one line, not in a loader worker
        common.probe_dataset(getattr(ds, "dataset", ds))  # (the full dataset of a Subset)
    return train, val


def loader(ds, batches, workers, device):
    """(images as normalised floats, labels) on device, one pair per list of ds's indices in batches."""
    load = torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=workers, pin_memory=device.type == "cuda",
                                       worker_init_fn=common.ignore_stop_signals)
    for x, y in load:
        x = x.to(device, non_blocking=True)
        yield augment.normalize(x.float() / 255) if x.dtype == torch.uint8 else x.float(), y.to(device)


@torch.no_grad()
def extract(encoder, batches, device, amp):
    """Mean-pooled frozen-encoder features and labels of the (images, labels) batches (the cached protocols)."""
    feats, labels = [], []
    for x, y in batches:
        with common.autocast(device, amp):
            feats.append(encoder(x).float().mean(1))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def make_batches(cfg, encoder, train_ds, val_ds, rank, world, device, amp):
    """(steps per epoch, batches(epoch, first step) → iterator of this rank's (x, labels), val batches()). Cached
    features, or normalised images (data.EpochIndexed: augmentations are a function of epoch and index)."""
    bs, local = cfg["batch_size"], cfg["batch_size"] // world
    spe = len(train_ds) // bs  # from the global size, so every rank runs the same number of steps
    def share(ds):  # this rank's share of ds, in order: every image is counted once over the ranks
        idx = list(range(rank, len(ds), world))
        return loader(ds, [idx[i:i + bs] for i in range(0, len(idx), bs)], cfg["workers"], device)
    if PROTOCOLS[cfg["protocol"]]["cached"]:
        (tr_x, tr_y), (va_x, va_y) = (extract(encoder, share(ds), device, amp) for ds in (train_ds, val_ds))
        def batches(epoch, start):
            g = torch.Generator().manual_seed((cfg["seed"] * 7919 + epoch) * 101 + rank)
            perm = torch.randperm(len(tr_x), generator=g).to(device)[:spe * local].view(spe, local)
            return ((tr_x[i], tr_y[i]) for i in perm[start:])
        return spe, batches, lambda: zip(va_x.split(bs), va_y.split(bs))
    keyed = data.EpochIndexed(train_ds, cfg["seed"])
    def batches(epoch, start):
        rows = epoch_batches(len(train_ds), bs, rank, world, cfg["seed"], epoch, start)
        return loader(keyed, [[(epoch, i) for i in b] for b in rows], cfg["workers"], device)
    return spe, batches, lambda: share(val_ds)


def build(cfg, encoder, predictor, pretrained, num_classes, label_ids):
    """The Classifier of the protocol and the per-parameter lr factor (layer decay, predictor lr/10, lr grid)."""
    spec, lrs, D = PROTOCOLS[cfg["protocol"]], cfg["linear_lrs"], encoder.embed_dim
    head = {"linear": lambda C: nn.Sequential(nn.BatchNorm1d(D, affine=False), nn.Linear(D, C)),
            "attentive": lambda C: AttentiveHead(D, encoder.num_heads, C), "pooled": lambda C: pooled_head(D, C)}
    copies = len(lrs) if spec["heads"] == "grid" else 1  # the grid: one head per lr, all on the same label
    clf = Classifier([head[spec["head"]](num_classes[i]) for i in label_ids for _ in range(copies)],
                     encoder=encoder if spec["encoder"] == "trained" else None, num_tasks=len(label_ids),
                     predictor=None if spec["predictor"] is None else predictor, pool=spec["head"] == "pooled")
    pred_scale, L = spec["predictor"] if pretrained else 1.0, len(encoder.blocks)

    def scale(name):
        if name.startswith("encoder."):
            return layer_decay_scale(name[len("encoder."):], L, cfg["layer_decay"])
        if name.startswith("predictor."):
            return pred_scale
        return lrs[int(name.split(".")[1])] if spec["heads"] == "grid" else 1.0  # heads.{i}: the grid's i-th lr
    return clf, scale


def objective(cfg, net, encoder, label_ids, names, num_classes, device, amp):
    """(loss(x, labels), outputs(x, labels) → {metric suffix: (logits, targets)}) of the protocol."""
    spec, clf = PROTOCOLS[cfg["protocol"]], net.module if isinstance(net, DDP) else net
    C, lab, mix, smooth = num_classes[label_ids[0]], torch.tensor(label_ids, device=device), None, 0.0
    if spec["mae"]:  # mixup or cutmix, chosen 50/50 per batch (alpha 0: that half unmixed), and label smoothing
        smooth, kinds = cfg["smoothing"], ((v2.MixUp, cfg["mixup"]), (v2.CutMix, cfg["cutmix"]))
        if cfg["mixup"] > 0 or cfg["cutmix"] > 0:
            mix = v2.RandomChoice([kind(alpha=a, num_classes=C) if a > 0 else v2.Identity() for kind, a in kinds])
    keys = ([f"_lr{lr:g}" for lr in cfg["linear_lrs"]] if spec["heads"] == "grid" else
            [f"_{nm}" for nm in names] if spec["heads"] == "tasks" else [""])
    cols = label_ids * (len(keys) // len(label_ids))  # the label each head predicts
    column = lambda labels, i: labels[:, i] if labels.ndim == 2 else labels  # 1-D: one-label datasets

    def features(x):  # a frozen encoder is outside the trained model, and cached features are its output already
        if spec["encoder"] == "trained" or spec["cached"]:
            return x
        with torch.no_grad():
            return encoder(x)

    def loss_fn(x, labels):
        if spec["heads"] == "tasks":  # the batch is split evenly across tasks; each head sees its own rows
            task = torch.arange(len(x), device=device) * len(label_ids) // len(x)
            y = labels.gather(1, lab[task][:, None])[:, 0]
            return sum(F.cross_entropy(o.float(), y[task == t]) for t, o in enumerate(net(features(x), task)))
        y = column(labels, label_ids[0])
        if mix is not None:  # soft targets, then label smoothing on them (timm's mixup + smoothing)
            x, y = mix(x, y)
            y = y if y.is_floating_point() else F.one_hot(y, C).float()  # when mixup or cutmix is switched off
            y = y * (1 - smooth) + smooth / C
            return sum(torch.sum(-y * F.log_softmax(o.float(), 1), 1).mean() for o in net(features(x)))
        return sum(F.cross_entropy(o.float(), y, label_smoothing=smooth) for o in net(features(x)))

    def outputs(x, labels):
        with common.autocast(device, amp):
            outs = clf(features(x))
        return {k: (o, column(labels, c)) for k, o, c in zip(keys, outs, cols)}
    return loss_fn, outputs


def headline(metrics, cfg, names):
    """top1 (top5) of the protocol: the lr of the grid that is best on val, the mean over tasks, or the one head."""
    heads, lrs = PROTOCOLS[cfg["protocol"]]["heads"], cfg["linear_lrs"]
    if heads == "grid":
        best = metrics["best_lr"] = max(lrs, key=lambda lr: metrics[f"top1_lr{lr:g}"])
        metrics.update({k: metrics[f"{k}_lr{best:g}"] for k in ("top1", "top5") if f"{k}_lr{best:g}" in metrics})
    if heads == "tasks":
        metrics["top1"] = sum(metrics[f"top1_{nm}"] for nm in names) / len(names)
    return metrics


def resume(path, cfg, clf, opt, scaler):
    """Load a run's model, optimizer and scaler state, refusing a run of another config; returns its step."""
    ck, _ = M.load_checkpoint(path, {k: cfg[k] for k in RESUME_KEYS}, need=("model", "opt", "scaler"))
    return common.load_states(ck, path, model=clf, opt=opt, scaler=scaler)


def run(cfg, rank, world, device):
    """Train and evaluate one protocol; returns the final val metrics (same on every rank)."""
    spec, main_rank = PROTOCOLS[cfg["protocol"]], rank == 0
    torch.manual_seed(cfg["seed"])  # heads, tokens and random-init models: the same on every rank
    amp = common.autocast_dtype(device, cfg["dtype"])
    common.claim_out_dir(cfg)  # here, not in setup: scripts/multitask_baseline.py runs several out_dirs
    encoder, predictor, pretrained = load_models(cfg)
    train_ds, val_ds = build_data(cfg)
    label_ids, num_classes = task_labels(cfg, train_ds), list(train_ds.num_classes)
    names = [train_ds.label_names[i] for i in label_ids]
    clf, scale = build(cfg, encoder, predictor, pretrained, num_classes, label_ids)
    encoder.to(device)
    clf.to(device)
    if spec["encoder"] == "frozen":  # frozen means frozen: no grad, eval mode (no drop path), never in the optimizer
        encoder.eval().requires_grad_(False)
    peak = (cfg["blr"] or spec["blr"]) * cfg["batch_size"] / 256 if spec["blr"] else 1.0  # grid: absolute lrs
    opt = common.make_adamw(M.param_groups({"": clf}, cfg["weight_decay"], scale), peak, device=device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    path = os.path.join(cfg["out_dir"], "latest.pt")
    step = resume(path if cfg["resume"] == "latest" else cfg["resume"], cfg, clf, opt, scaler) if cfg["resume"] else 0
    net = DDP(clf, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else clf
    spe, batches, val_batches = make_batches(cfg, encoder, train_ds, val_ds, rank, world, device, amp)
    loss_fn, outputs = objective(cfg, net, encoder, label_ids, names, num_classes, device, amp)

    total = cfg["epochs"] * spe  # the schedule spans all epochs; --max_steps only stops early (resume continues)
    warmup, stop = min(cfg["warmup_epochs"] * spe, total), min(cfg["max_steps"] or total, total)
    log = common.JsonlLog(os.path.join(cfg["out_dir"], "log.jsonl"), main_rank)
    if main_rank:
        common.prepare_out_dir(cfg, "finetune.py", step)
        src = f"{cfg['ckpt']}: target encoder" + (", predictor" if pretrained else "")
        if cfg["random_init"]:
            src = "random init" + (f" ({cfg['ckpt']}'s architecture)" if cfg["ckpt"] else "")
        print(f"{cfg['protocol']}: from {src}; {M.count_params(clf) / 1e6:.2f}M trained params, labels {names}, "
              f"{len(train_ds)} train / {len(val_ds)} val images (--train_images/--val_images 0: whole split), "
              f"{world} process(es) on {device}, {total} steps ({spe}/epoch), peak lr {peak:g}", flush=True)
    clf.train()
    metrics, halt, halted = {}, common.GracefulStop(), False  # Ctrl-C / SIGTERM: finish the step, save, exit 128 + N
    bar = tqdm(total=stop, initial=step, disable=not main_rank, dynamic_ncols=True, desc=cfg["protocol"])
    while step < stop and not halted:
        for x, labels in batches(*divmod(step, spe)):
            torch.manual_seed((cfg["seed"] * 1_000_003 + step) * 1009 + rank)  # mixup, drop path: f(step), exact resume
            lr = common.warmup_cosine(step, warmup, total, 0.0, peak, 0.0)
            common.set_schedule(opt, lr)  # each group: lr × its factor (layer decay, predictor / 10, lr grid)
            with common.autocast(device, amp):
                loss = loss_fn(x, labels)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            halted, epoch_end = halt.requested, step % spe == 0  # read once: a stop saves this very step
            saving, logging = epoch_end or step == stop or halted, step % cfg["log_every"] == 0 or step == stop
            if logging or saving:  # checked before every save too: a NaN state is never saved
                loss_v = loss.item()
                if loss_v != loss_v or abs(loss_v) == float("inf"):
                    raise common.NonFiniteLoss(f"loss became {loss_v} at step {step}; lower --blr or use --dtype "
                                               "float32")
            if logging:
                bar.set_postfix(loss=f"{loss_v:.4f}")
                log.write(step=step, epoch=step / spe, loss=loss_v, lr=lr)
            if step == stop or (epoch_end and (step // spe) % cfg["eval_every_epochs"] == 0):
                metrics = evaluate(clf, val_batches(), outputs, device, world)
                log.write(step=step, **metrics)
            halted = halt.requested  # again: a stop that came during the evaluation saves this step too
            if main_rank and (saving or halted):
                common.save_atomic({"model": clf.state_dict(), "opt": opt.state_dict(), "scaler": scaler.state_dict(),
                                    "step": step, "config": cfg, "metrics": metrics}, path)
            if step >= stop or halted:
                break
    bar.close()
    halt.restore()
    if halt.signum:
        common.exit_stopped("finetune.py", halt, step, path, main_rank)
    if not metrics:  # resumed at the end: evaluate the loaded model
        metrics = evaluate(clf, val_batches(), outputs, device, world)
    metrics = headline(metrics, cfg, names)
    metrics["step"] = step
    log.write(final=True, **metrics)
    return metrics


def setup(argv=None, prog="finetune.py", doc=None, defaults=CONFIG, helps=HELP):
    """Parse and check the config, join torchrun's process group: (cfg, rank, world, device). --help shows doc."""
    rows = [("", *COLUMNS)] + [(name, *row.values()) for name, row in PROTOCOLS.items()]
    table = "\n".join("  " + "".join(f"{str(v):11}" for v in row).rstrip() for row in rows)
    cfg = cli.parse_config(defaults, argv, prog, doc or f"{__doc__}\nprotocols:\n{table}", helps, cli.EXIT_TRAINING)
    cli.check_values(cfg, prog, dict.fromkeys(("batch_size", "epochs", "eval_every_epochs", "log_every"), 1), helps)
    per_task = [name for name, row in PROTOCOLS.items() if row["heads"] == "tasks"]  # the protocols that read --tasks
    flag, other = ("label", "tasks") if cfg["protocol"] in per_task else ("tasks", "label")
    if cfg[flag]:  # a flag that the protocol does not read is refused, not ignored
        takers = ", ".join(name for name in PROTOCOLS if (name in per_task) == (flag == "tasks"))
        common.fail(prog, f"--{flag} applies to --protocol {takers} only; --protocol {cfg['protocol']} takes --{other}")
    tasks = cfg["tasks"].split(",") if cfg["tasks"] else []  # each gets a head and a task token: one per label
    if "" in tasks:
        common.fail(prog, f"--tasks {cfg['tasks']!r} has an empty task name; give labels, comma-separated")
    twice = sorted({name for name in tasks if tasks.count(name) > 1})
    if twice:
        common.fail(prog, f"--tasks {cfg['tasks']!r} repeats task {', '.join(twice)}; give each label once")
    cli.check_data_root(cfg, prog)  # before load_models builds the networks
    cfg["out_dir"] = cfg["out_dir"] or f"runs/finetune_{cfg['protocol']}"  # each protocol its own folder
    rank, world, device = common.setup_distributed(cfg["device"])
    if cfg["batch_size"] % world:
        common.fail(prog, f"--batch_size {cfg['batch_size']} must divide by the world size {world}")
    return cfg, rank, world, device


def main(argv=None):
    cfg, rank, world, device = setup(argv)
    with common.running("finetune.py"):  # the disk, a loader worker: one line, within seconds
        try:
            metrics = run(dict(cfg), rank, world, device)
        except (ValueError, FileNotFoundError) as e:  # the checkpoint, the labels, the data
            common.fail("finetune.py", e)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        extra = {k: round(v, 2) for k, v in metrics.items() if k.startswith("top1_")}
        if extra:
            print(("val-selected lr grid: " if PROTOCOLS[cfg["protocol"]]["heads"] == "grid" else "") + str(extra))
        print(f"{cfg['protocol']} top1 {metrics['top1']:.2f}", flush=True)
    return metrics


if __name__ == "__main__":
    main()
