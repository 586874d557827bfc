"""Leveraging the world model (IWM, arXiv 2403.00504, §5, Tables 4-8) and the evaluation probes.

One script, one `--protocol`:
  linear      frozen target encoder f_θ^EMA, mean-pooled tokens → BatchNorm1d(affine=False) + Linear (Table 8);
              features are extracted once, then one head per lr of `--linear_lrs` is trained at once and the best
              on the val split is reported (a val-selected grid, as in the usual linear-probe practice).
  attentive   frozen target encoder + attentive probe: one learned query cross-attends to the tokens (V-JEPA).
  predictor   frozen target encoder → predictor p_φ with all tokens as context, a mask token at every position and
              the null action → attentive head (Table 4 "frozen encoder + predictor"); the pretrained predictor
              gets 1/10 of the lr (§5), a random one (`--predictor_init random`) the full lr.
  encoder     finetune the encoder (Table 4 "encoder finetuning"), MAE ViT-B recipe: layer-wise lr decay, drop
              path, mixup/cutmix, label smoothing, RandAugment, random erasing; mean-pooled tokens → LayerNorm →
              Linear (head init std 2e-5). It starts from the checkpoint's TARGET encoder.
  end_to_end  encoder (layer decay) + pretrained predictor (lr/10) trained together, attentive head (Table 4).
  multitask   one predictor on the frozen target encoder, one learned task token per task (extra predictor token),
              one attentive head per task, each batch split evenly across tasks, losses summed (§5); on a
              dataset with several label types the tasks are those types. `--baseline true` also trains one
              single-task predictor per task with the same steps and batch (the paper's comparison).
`--init random` is the random-init baseline of every table (architecture from --model/--img_size/...).

    python finetune.py --protocol linear --ckpt runs/iwm/latest.pt --data shapes --label color
    torchrun --nproc_per_node=8 finetune.py --protocol predictor --ckpt IN1K-vit.h.14-300e.pth.tar --model huge \
        --img_size 224 --patch_size 14 --pred_depth 12 --pred_width 384 --data imagefolder --data_root /data/in1k \
        --epochs 100 --warmup_epochs 5 --batch_size 1024 --train_images 0 --val_images 0 --workers 8
The paper's runs are 100 epochs (warmup 5) on whole splits; the defaults are a CPU quick start. The last line printed is
`<protocol> top1 <val top-1 in %>`.
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
import common
import data
import model as M

PROTOCOLS = ("linear", "attentive", "predictor", "encoder", "end_to_end", "multitask")
FINETUNE = ("encoder", "end_to_end")  # the protocols that train the encoder with the MAE recipe
ARCH_KEYS = ("model", "img_size", "patch_size", "pred_depth", "pred_width", "cond")
CONFIG = dict(
    protocol="linear", ckpt="", init="checkpoint", predictor_init="pretrained",  # init: checkpoint | random
    # architecture for --init random and official I-JEPA files (our checkpoints carry their own config)
    model="micro", img_size=32, patch_size=8, pred_depth=2, pred_width=64, cond="none",
    data="shapes", data_root="", label="", tasks="", crop_scale=(0.08, 1.0), workers=0,
    train_images=5000, val_images=1000,  # evenly spaced subsets for a CPU quick start; 0: the whole split
    # optimisation: lr = blr · batch / 256 (blr 0: 5e-4 for encoder / end_to_end (MAE), 1e-3 for the probes);
    # the linear probe trains one head per absolute lr of linear_lrs instead; steps > 0 stops early (resumable)
    epochs=10, steps=0, batch_size=64, blr=0.0, linear_lrs=(1e-3, 3e-3, 1e-2), warmup_epochs=1, weight_decay=0.05,
    # MAE finetuning recipe (encoder, end_to_end)
    layer_decay=0.65, drop_path=0.1, smoothing=0.1, mixup=0.8, cutmix=1.0, randaug=9, reprob=0.25,
    baseline=False, device="auto", dtype="auto", seed=0, out_dir="runs/finetune", resume=False,
    log_every=20, eval_every=1,  # eval_every: epochs (the final step is always evaluated)
)
RESUME_KEYS = ARCH_KEYS + ("protocol", "label", "tasks", "data", "batch_size", "epochs", "linear_lrs", "init",
                           "predictor_init")


def layer_decay_scale(name, num_layers, decay):
    """MAE layer-wise lr decay for an encoder parameter name: patch_embed / pos_embed are layer 0, blocks.i is
    layer i+1, everything after the blocks (norm, head) layer L+1; the lr factor is decay^(L+1-layer)."""
    if name.startswith(("patch_embed", "pos_embed")):
        layer = 0
    elif name.startswith("blocks."):
        layer = int(name.split(".")[1]) + 1
    else:
        layer = num_layers + 1
    return decay ** (num_layers + 1 - layer)


class AttentiveHead(nn.Module):
    """V-JEPA attentive probe: one learned query token cross-attends to the tokens (pre-norm on the keys/values),
    an MLP with residuals and LayerNorm refines it, a Linear classifies it."""
    def __init__(self, dim, num_heads, num_classes):
        super().__init__()
        self.num_heads = num_heads
        self.query_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm1, self.q, self.kv = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.proj, self.norm2, self.mlp = nn.Linear(dim, dim), nn.LayerNorm(dim, eps=1e-6), M.MLP(dim, 4 * dim)
        self.linear = nn.Linear(dim, num_classes)
        for m in self.modules():  # the encoder's init: truncated normal std 0.02, zero bias (LayerNorm: 1, 0)
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.query_token, std=0.02, a=-0.04, b=0.04)

    def forward(self, x):
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(self.query_token).reshape(1, h, 1, C // h).expand(B, -1, -1, -1)
        k, v = self.kv(self.norm1(x)).reshape(B, N, 2, h, C // h).permute(2, 0, 3, 1, 4)
        y = self.query_token + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, 1, C))
        y = y + self.mlp(self.norm2(y))
        return self.linear(y[:, 0])


def pooled_head(dim, num_classes):
    """MAE finetuning head on mean-pooled tokens: LayerNorm → Linear, weights init std 2e-5, zero bias."""
    head = nn.Sequential(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, num_classes))
    nn.init.trunc_normal_(head[1].weight, std=2e-5)
    nn.init.zeros_(head[1].bias)
    return head


class Classifier(nn.Module):
    """The trained part of every protocol: [encoder] → [predictor: all positions, null action, task token] →
    [mean pool] → heads. Its input is images when the encoder is trained, the frozen target encoder's tokens
    otherwise, pooled features for the linear probe. `task`: None (every head on every row), an int (that task's
    token and head on every row) or a LongTensor [B] (row-wise tasks; head t sees only the rows of task t)."""
    def __init__(self, heads, encoder=None, predictor=None, num_tasks=1, pool=False):
        super().__init__()
        self.encoder, self.predictor, self.heads, self.pool = encoder, predictor, nn.ModuleList(heads), pool
        self.task_token = None
        if num_tasks > 1:
            self.task_token = nn.Parameter(torch.zeros(num_tasks, 1, predictor.predictor_embed.out_features))
            nn.init.trunc_normal_(self.task_token, std=0.02, a=-0.04, b=0.04)

    def forward(self, x, task=None):
        z = self.encoder(x) if self.encoder is not None else x
        if self.predictor is not None:  # masks None: every position is context and every position is predicted
            tok = None if self.task_token is None else self.task_token[task]
            if isinstance(task, int) and tok is not None:
                tok = tok.expand(len(z), -1, -1)
            z = self.predictor(z, extra_tokens=tok)
        if self.pool:
            z = z.mean(1)
        if task is None:
            return [h(z) for h in self.heads]
        if isinstance(task, int):
            return [self.heads[task](z)]
        return [h(z[task == t]) for t, h in enumerate(self.heads)]


def epoch_batches(n, batch, rank, world, seed, epoch, start):
    """This rank's rows of the global batches start, start+1, ... of `epoch` (permutation seeded by seed, epoch):
    any world size sees the same global batches, and a resume starts mid-epoch without reading skipped data."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
    local = batch // world
    return [perm[b * batch + rank * local:b * batch + (rank + 1) * local] for b in range(start, n // batch)]


def load_models(cfg):
    """(target encoder, predictor, predictor is pretrained). Ours: the architecture comes from the checkpoint's
    config; official I-JEPA files (no config): from the flags. --init random: fresh weights (the baseline)."""
    ck = None
    if cfg["init"] == "checkpoint":
        if not cfg["ckpt"]:
            raise ValueError("--ckpt PATH is required (or --init random for the random-init baseline)")
        ck = common.load_checkpoint(cfg["ckpt"])
        if not isinstance(ck, dict) or "target_encoder" not in ck:
            raise ValueError(f"{cfg['ckpt']} has no 'target_encoder' weights (not a train.py / I-JEPA checkpoint)")
        cfg.update({k: ck["config"][k] for k in ARCH_KEYS if k in ck.get("config", {})})
    encoder, predictor = M.build_models(dict(cfg, drop_path=cfg["drop_path"] if cfg["protocol"] in FINETUNE else 0.0))
    pretrained = ck is not None and cfg["predictor_init"] == "pretrained"
    if ck is not None:  # the EMA target encoder: the one I-JEPA and IWM evaluate
        M.load_state(encoder, ck["target_encoder"], name=f"{cfg['ckpt']}:target_encoder")
        if pretrained and cfg["protocol"] in ("predictor", "end_to_end", "multitask"):
            if "predictor" not in ck:
                raise ValueError(f"{cfg['ckpt']} has no 'predictor' weights; use --predictor_init random")
            M.load_state(predictor, ck["predictor"], M.conditioning_keys(predictor), f"{cfg['ckpt']}:predictor")
    return encoder, predictor, pretrained


def label_index(ds, name):
    names = list(ds.label_names)
    if name and name not in names:
        raise ValueError(f"--label/--tasks {name!r} is not a label of this dataset; choose from {names}")
    return names.index(name) if name else 0


def build_data(cfg):
    """Train split (crop + flip; the MAE protocols add RandAugment, and normalise before random erasing as MAE
    does, so their images arrive as normalised floats) and val split (resize + centre crop)."""
    size, proto = cfg["img_size"], cfg["protocol"]
    tf = data.train_transform(size, cfg["crop_scale"])
    if proto == "linear":  # features are extracted once, from unaugmented images
        tf = data.eval_transform(size)
    elif proto in FINETUNE:
        tf = v2.Compose([tf, v2.RandAugment(num_ops=2, magnitude=cfg["randaug"]), v2.ToDtype(torch.float32, scale=True),
                         v2.Normalize(augment.MEAN, augment.STD), v2.RandomErasing(p=cfg["reprob"], value="random")])
    train, val = (subset(data.build_dataset(cfg["data"], cfg["data_root"] or None, split, transform=t, size=size), n)
                  for split, t, n in (("train", tf, cfg["train_images"]), ("val", data.eval_transform(size),
                                                                               cfg["val_images"])))
    if len(train) < cfg["batch_size"]:
        raise ValueError(f"the train split has {len(train)} images, fewer than one batch of {cfg['batch_size']}")
    return train, val


def subset(ds, n):
    """n evenly spaced items (every class of a class-sorted folder is kept); 0 or n >= len: all of them."""
    if not n or n >= len(ds):
        return ds
    sub = torch.utils.data.Subset(ds, torch.linspace(0, len(ds) - 1, n).long().tolist())
    sub.label_names, sub.num_classes = ds.label_names, ds.num_classes
    return sub


def prep(imgs, device):
    imgs = imgs.to(device, non_blocking=True)
    return augment.normalize(imgs.float() / 255) if imgs.dtype == torch.uint8 else imgs.float()


def loader(ds, batches, workers, device):
    return torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=workers,
                                       pin_memory=device.type == "cuda")


@torch.no_grad()
def extract(encoder, ds, cfg, rank, world, device, amp):
    """Mean-pooled frozen-encoder features and labels of this rank's share of ds (linear probe)."""
    idx = list(range(rank, len(ds), world))
    feats, labels = [], []
    for imgs, y in loader(ds, [idx[i:i + cfg["batch_size"]] for i in range(0, len(idx), cfg["batch_size"])],
                          cfg["workers"], device):
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            feats.append(encoder(prep(imgs, device)).float().mean(1))
        labels.append(y.to(device))
    return torch.cat(feats), torch.cat(labels)


def make_batches(cfg, encoder, train_ds, val_ds, rank, world, device, amp):
    """(steps per epoch, batches(epoch, first step) → iterator of this rank's (x, labels), val batches()). Linear
    probe: cached features; otherwise normalised images (data.EpochIndexed: augmentations are a function of epoch and index)."""
    bs, local = cfg["batch_size"], cfg["batch_size"] // world
    spe = len(train_ds) // bs  # from the global size, so every rank runs the same number of steps
    if cfg["protocol"] == "linear":
        tr_x, tr_y = extract(encoder, train_ds, cfg, rank, world, device, amp)
        va_x, va_y = extract(encoder, val_ds, cfg, rank, world, device, amp)
        def batches(epoch, start):
            g = torch.Generator().manual_seed((cfg["seed"] * 7919 + epoch) * 101 + rank)
            perm = torch.randperm(len(tr_x), generator=g).to(device)[:spe * local].view(spe, local)
            return ((tr_x[i], tr_y[i]) for i in perm[start:])
        return spe, batches, lambda: zip(va_x.split(bs), va_y.split(bs))
    keyed = data.EpochIndexed(train_ds, cfg["seed"])
    def batches(epoch, start):
        keys = [[(epoch, i) for i in b] for b in epoch_batches(len(train_ds), bs, rank, world, cfg["seed"], epoch,
                                                                start)]
        return ((prep(x, device), y.to(device)) for x, y in loader(keyed, keys, cfg["workers"], device))
    idx = list(range(rank, len(val_ds), world))  # every val image counted once over the ranks
    return spe, batches, lambda: ((prep(x, device), y.to(device)) for x, y in loader(
        val_ds, [idx[i:i + bs] for i in range(0, len(idx), bs)], cfg["workers"], device))


def build(cfg, encoder, predictor, pretrained, num_classes, label_ids):
    """The Classifier of the protocol and the per-parameter lr factor (layer decay, predictor lr/10)."""
    D, heads, proto = encoder.embed_dim, encoder.num_heads, cfg["protocol"]
    if proto == "linear":
        clf = Classifier([nn.Sequential(nn.BatchNorm1d(D, affine=False), nn.Linear(D, num_classes[label_ids[0]]))
                          for _ in cfg["linear_lrs"]])
    elif proto == "encoder":
        clf = Classifier([pooled_head(D, num_classes[label_ids[0]])], encoder=encoder, pool=True)
    else:
        clf = Classifier([AttentiveHead(D, heads, num_classes[i]) for i in label_ids],
                         encoder=encoder if proto == "end_to_end" else None,
                         predictor=None if proto == "attentive" else predictor, num_tasks=len(label_ids))
    pred_scale = 0.1 if pretrained else 1.0
    L = len(encoder.blocks)

    def scale(name):
        if name.startswith("encoder."):
            return layer_decay_scale(name[len("encoder."):], L, cfg["layer_decay"])
        if name.startswith("predictor."):
            return pred_scale
        if proto == "linear":  # heads.{i}: the i-th lr of the grid (the schedule's peak is then 1)
            return cfg["linear_lrs"][int(name.split(".")[1])]
        return 1.0  # heads and task tokens: layer L+1 (decay^0)
    return clf, scale


@torch.no_grad()
def evaluate(clf, batches, outputs, num_classes, device, world):
    """Top-1 (and top-5 where there are more than 5 classes) of every output over the val split, summed over
    ranks. outputs(x, y) → {suffix: (logits, targets)}."""
    clf.eval()
    stats = {}
    for x, y in batches:
        for key, (logits, target) in outputs(x, y).items():
            top = logits.float().topk(min(5, logits.shape[1]), dim=1).indices == target[:, None]
            s = torch.stack([top[:, 0].sum(), top.any(1).sum(), torch.tensor(len(target), device=device)]).double()
            stats[key] = stats.get(key, 0) + s
    clf.train()
    res = {}
    for key, s in stats.items():
        if world > 1:
            dist.all_reduce(s)
        c1, c5, n = s.tolist()
        res[f"top1{key}"] = 100 * c1 / n
        if num_classes[key] > 5:
            res[f"top5{key}"] = 100 * c5 / n
    return res


def run(cfg, rank, world, device):
    """Train and evaluate one protocol; returns the final val metrics (same on every rank)."""
    proto, main_rank = cfg["protocol"], rank == 0
    torch.manual_seed(cfg["seed"])  # heads, tokens and random-init models: the same on every rank
    amp = common.autocast_dtype(device, cfg["dtype"])
    encoder, predictor, pretrained = load_models(cfg)
    train_ds, val_ds = build_data(cfg)
    names = cfg["tasks"].split(",") if proto == "multitask" and cfg["tasks"] else None
    names = names or (list(train_ds.label_names) if proto == "multitask" else [cfg["label"]])
    label_ids = [label_index(train_ds, n) for n in names]
    names = [train_ds.label_names[i] for i in label_ids]
    num_classes = list(train_ds.num_classes)
    clf, scale = build(cfg, encoder, predictor, pretrained, num_classes, label_ids)
    encoder.to(device)
    clf.to(device)
    frozen = None if proto in FINETUNE else encoder
    if frozen is not None:  # frozen means frozen: no grad, eval mode (no drop path), never in the optimizer
        frozen.eval().requires_grad_(False)
    groups = common.param_groups({"": clf}, cfg["weight_decay"], scale)
    peak = 1.0 if proto == "linear" else (cfg["blr"] or (5e-4 if proto in FINETUNE else 1e-3)) * cfg["batch_size"] / 256
    opt = common.make_adamw(groups, peak, device=device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    step, path = 0, os.path.join(cfg["out_dir"], "latest.pt")
    if cfg["resume"]:
        ck = common.load_checkpoint(path)
        diff = common.config_diff(ck["config"], cfg, RESUME_KEYS)
        if diff:
            raise ValueError(f"{path} was trained with another config: {'; '.join(diff)}")
        clf.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        scaler.load_state_dict(ck["scaler"])
        step = ck["step"]
    net = DDP(clf, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else clf
    autocast = lambda: torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)

    spe, batches, val_batches = make_batches(cfg, encoder, train_ds, val_ds, rank, world, device, amp)
    lab = torch.tensor(label_ids, device=device)
    C = num_classes[label_ids[0]]
    mix = None
    if proto in FINETUNE and (cfg["mixup"] > 0 or cfg["cutmix"] > 0):  # MAE: mixup or cutmix, chosen 50/50
        mix = v2.RandomChoice([v2.MixUp(alpha=cfg["mixup"], num_classes=C) if cfg["mixup"] > 0 else v2.Identity(),
                               v2.CutMix(alpha=cfg["cutmix"], num_classes=C) if cfg["cutmix"] > 0 else v2.Identity()])

    def tokens(x):
        if frozen is None or proto == "linear":
            return x
        with torch.no_grad():
            return frozen(x)

    def loss_fn(x, labels):
        if proto == "multitask":  # the batch is split evenly across tasks; each head sees its own rows
            task = torch.arange(len(x), device=device) * len(names) // len(x)
            y = labels.gather(1, lab[task][:, None])[:, 0]
            return sum(F.cross_entropy(o.float(), y[task == t]) for t, o in enumerate(net(tokens(x), task)))
        y = labels[:, label_ids[0]] if labels.ndim == 2 else labels
        if mix is not None:  # soft targets, then label smoothing on them (timm's mixup + smoothing)
            x, y = mix(x, y)
            y = y if y.is_floating_point() else F.one_hot(y, C).float()  # when mixup or cutmix is switched off
            y = y * (1 - cfg["smoothing"]) + cfg["smoothing"] / C
            return sum(torch.sum(-y * F.log_softmax(o.float(), 1), 1).mean() for o in net(tokens(x)))
        smooth = cfg["smoothing"] if proto in FINETUNE else 0.0
        return sum(F.cross_entropy(o.float(), y, label_smoothing=smooth) for o in net(tokens(x)))

    def outputs(x, labels):
        y = labels[:, label_ids[0]] if labels.ndim == 2 else labels
        with autocast():
            if proto == "linear":
                return {f"_lr{lr:g}": (o, y) for lr, o in zip(cfg["linear_lrs"], clf(x))}
            if proto == "multitask":
                z = tokens(x)
                return {f"_{nm}": (clf(z, t)[0], labels[:, label_ids[t]])
                        for t, nm in enumerate(names)}
            return {"": (clf(tokens(x))[0], y)}
    out_names = ([f"_lr{lr:g}" for lr in cfg["linear_lrs"]] if proto == "linear" else
                 [f"_{nm}" for nm in names] if proto == "multitask" else [""])
    out_classes = {k: num_classes[label_ids[i if proto == "multitask" else 0]] for i, k in enumerate(out_names)}

    total = cfg["epochs"] * spe  # the schedule spans all epochs; --steps only stops early (resume continues)
    warmup, stop = min(cfg["warmup_epochs"] * spe, total), min(cfg["steps"] or total, total)
    log = common.JsonlLog(os.path.join(cfg["out_dir"], "log.jsonl"), main_rank)
    if main_rank:
        os.makedirs(cfg["out_dir"], exist_ok=True)
        src = "random init" if cfg["init"] == "random" else f"{cfg['ckpt']}: target encoder" + (
            ", predictor" if pretrained and proto in ("predictor", "end_to_end", "multitask") else "")
        print(f"{proto}: from {src}; {M.count_params(clf) / 1e6:.2f}M trained params, labels {names}, "
              f"{len(train_ds)} train / {len(val_ds)} val images (--train_images/--val_images 0: whole split), "
              f"{world} process(es) on {device}, {total} steps ({spe}/epoch), peak lr {peak:g}", flush=True)
    clf.train()
    metrics = {}
    bar = tqdm(total=stop, initial=step, disable=not main_rank, dynamic_ncols=True, desc=proto)
    while step < stop:
        for x, labels in batches(*divmod(step, spe)):
            torch.manual_seed((cfg["seed"] * 1_000_003 + step) * 1009 + rank)  # mixup, drop path: f(step), exact resume
            lr = common.warmup_cosine(step, warmup, total, 0.0, peak, 0.0)
            common.set_schedule(opt, lr)  # each group: lr × its factor (layer decay, predictor / 10, lr grid)
            with autocast():
                loss = loss_fn(x, labels)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if step % cfg["log_every"] == 0 or step == stop:
                loss_v = loss.item()
                if loss_v != loss_v or abs(loss_v) == float("inf"):
                    raise ValueError(f"loss became {loss_v} at step {step}; lower --blr or use --dtype float32")
                bar.set_postfix(loss=f"{loss_v:.4f}")
                log.write(step=step, epoch=step / spe, loss=loss_v, lr=lr)
            epoch_end = step % spe == 0
            if step == stop or (epoch_end and (step // spe) % cfg["eval_every"] == 0):
                metrics = evaluate(clf, val_batches(), outputs, out_classes, device, world)
                log.write(step=step, **metrics)
            if main_rank and (epoch_end or step == stop):
                common.save_atomic({"model": clf.state_dict(), "opt": opt.state_dict(), "scaler": scaler.state_dict(),
                                    "step": step, "config": cfg, "metrics": metrics}, path)
            if step >= stop:
                break
    bar.close()
    if not metrics:  # resumed at the end: evaluate the loaded model
        metrics = evaluate(clf, val_batches(), outputs, out_classes, device, world)
    if proto == "linear":  # val-selected lr grid
        best = max(cfg["linear_lrs"], key=lambda lr: metrics[f"top1_lr{lr:g}"])
        metrics.update(top1=metrics[f"top1_lr{best:g}"], best_lr=best)
        if f"top5_lr{best:g}" in metrics:
            metrics["top5"] = metrics[f"top5_lr{best:g}"]
    if proto == "multitask":
        metrics["top1"] = sum(metrics[f"top1_{nm}"] for nm in names) / len(names)
    metrics["step"] = step
    log.write(final=True, **metrics)
    return metrics


def main(argv=None):
    cfg = common.parse_config(CONFIG, argv, "finetune.py", __doc__)
    checks = {"protocol": PROTOCOLS, "init": ("checkpoint", "random"), "predictor_init": ("pretrained", "random")}
    for key, allowed in checks.items():
        if cfg[key] not in allowed:
            common.fail("finetune.py", f"--{key} must be one of {', '.join(allowed)}, got {cfg[key]!r}")
    rank, world, device = common.setup_distributed()
    device = common.pick_device(cfg["device"], device)
    if cfg["batch_size"] % world or cfg["epochs"] < 1 or cfg["eval_every"] < 1 or cfg["log_every"] < 1:
        common.fail("finetune.py", f"--batch_size must divide by the world size {world}; --epochs, --eval_every and "
                                   "--log_every must be >= 1")
    try:
        metrics = run(dict(cfg), rank, world, device)
        if cfg["protocol"] == "multitask" and cfg["baseline"]:  # one single-task predictor per task, same budget
            for nm in [k[len("top1_"):] for k in list(metrics) if k.startswith("top1_")]:
                sub = dict(cfg, protocol="predictor", label=nm, out_dir=os.path.join(cfg["out_dir"], f"single_{nm}"))
                sub["resume"] = cfg["resume"] and os.path.isfile(os.path.join(sub["out_dir"], "latest.pt"))
                metrics[f"single_top1_{nm}"] = run(sub, rank, world, device)["top1"]
            singles = [v for k, v in metrics.items() if k.startswith("single_top1_")]
            metrics["single_top1"] = sum(singles) / len(singles)
    except (ValueError, FileNotFoundError) as e:
        common.fail("finetune.py", e)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        extra = {k: round(v, 2) for k, v in metrics.items() if k.startswith(("top1_", "single_top1"))}
        if extra:
            print(("val-selected lr grid: " if cfg["protocol"] == "linear" else "") + str(extra), flush=True)
        print(f"{cfg['protocol']} top1 {metrics['top1']:.2f}", flush=True)
    return metrics


if __name__ == "__main__":
    main()
