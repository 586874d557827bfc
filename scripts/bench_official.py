"""Times the official I-JEPA training step (github.com/facebookresearch/ijepa, src/train.py's inner loop) for the
side-by-side with `bench.py --method ijepa` (README "Speed"). Nothing of the official code is copied here: it is
imported from a clone that you give.

    git clone https://github.com/facebookresearch/ijepa /tmp/ijepa
    python scripts/bench_official.py --ijepa_dir /tmp/ijepa        # ViT-Tiny/16, 224, batch 16, predictor 6x384
    python bench.py --model tiny --patch_size 16 --img_size 224 --pred_depth 6 --pred_width 384 --batch_size 16 \
        --method ijepa --loss smooth_l1 --steps 5 --warmup 2

`--masks ours` feeds the official step the masks that bench.py's steps use (masks.sample_masks seeded by the step
index as train.step_randomness seeds it, with the seed and mask keys of --ours FLAGS, else train.py's defaults), so
that both codes run the same token counts; the default is the official MaskCollator. Both scripts warm up on other
steps, pass once over the timed steps, and time a second pass.

The timed step is the official loop body, as written there: the MaskCollator call (it runs in the loader workers
there, so it is timed separately and reported apart), target forward + layer norm + apply_masks, context encoder
+ predictor, smooth L1, backward, AdamW step, the Python EMA loop and `float(loss)`. Official I-JEPA masks and
ImageNet recipe (1 context block of scale 0.85-1, 4 target blocks 0.15-0.2, aspect 0.75-1.5, min_keep 10).

`--device meta` is for tests (tests/test_bench_official.py): no data and no figures worth reading, but CPU tensors and
meta ones cannot mix, so an input made on the wrong device fails there as CPU images fed to GPU models did on an H200.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--ijepa_dir", required=True, help="a clone of facebookresearch/ijepa")
p.add_argument("--model", default="vit_tiny")
p.add_argument("--patch_size", type=int, default=16)
p.add_argument("--img_size", type=int, default=224)
p.add_argument("--pred_depth", type=int, default=6)
p.add_argument("--pred_width", type=int, default=384)
p.add_argument("--batch_size", type=int, default=16)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--masks", choices=("official", "ours"), default="official")
p.add_argument("--device", default="auto", help="auto (cuda where there is one, else cpu), cpu, cuda, cuda:N or meta "
                                                "(tests: a second device on any machine)")
p.add_argument("--ours", default=None, metavar="FLAGS",
               help='also time our train.train_step, of the same sizes on the same masks (implies --masks ours), '
                    'alternating step by step with the official one; FLAGS: train.py keys, e.g. "--method ijepa '
                    '--loss smooth_l1" or "--cond feature --one_pass true"')
args = p.parse_args()
args.masks = "ours" if args.ours is not None else args.masks
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import augment  # noqa: E402  (this repository, for --masks ours and --ours)
import cli  # noqa: E402
import masks as ours  # noqa: E402
import model as M  # noqa: E402
import train  # noqa: E402
sys.path.insert(0, args.ijepa_dir)
try:
    from src.helper import init_model
    from src.masks.multiblock import MaskCollator
    from src.masks.utils import apply_masks
    from src.utils.tensors import repeat_interleave_batch
except ImportError as e:
    sys.exit(f"bench_official.py: cannot import the official code from {args.ijepa_dir!r} ({e})")

try:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
except RuntimeError:
    device = None
if device is None or device.type not in ("cpu", "cuda", "meta"):
    sys.exit(f"bench_official.py: --device must be auto, cpu, cuda, cuda:N or meta, got {args.device!r}")
if device.type == "cuda" and not torch.cuda.is_available():
    sys.exit(f"bench_official.py: --device {args.device}: this machine has no CUDA GPU")
use_bf16 = device.type == "cuda"
sync = (lambda loss: None) if device.type == "meta" else float  # a meta tensor holds no value to read


class CpuAutocastOnMeta(torch.autocast):
    """torch.autocast has no meta backend, even switched off (it is off there, as on the CPU: bf16 on CUDA only).
    Both codes open one in their step: on meta it is a switched-off CPU one, a no-op that moves nothing."""

    def __init__(self, device_type, *a, **k):
        if device_type == "meta":
            assert not k.get("enabled", True), "autocast switched on for meta"
            device_type = "cpu"
        super().__init__(device_type, *a, **k)


if device.type == "meta":
    torch.autocast = CpuAutocastOnMeta


def our_config():
    """train.py's config of our step for --ours: the official step's sizes, batch and device, then FLAGS."""
    flags = ["--model", args.model.removeprefix("vit_"), "--patch_size", str(args.patch_size), "--img_size",
             str(args.img_size), "--pred_depth", str(args.pred_depth), "--pred_width", str(args.pred_width),
             "--batch_size", str(args.batch_size), "--seed", "0",
             "--device", "cpu" if device.type == "meta" else str(device)]  # train.py knows no meta; unused by build
    return train.check_config(cli.parse_config(train.CONFIG, flags + args.ours.split(), "bench_official.py"),
                              "bench_official.py")


cfg = our_config() if args.ours is not None else train.CONFIG  # the mask keys of --masks ours
torch.manual_seed(0)
encoder, predictor = init_model(device, args.patch_size, args.model, args.img_size, args.pred_depth, args.pred_width)
target_encoder = init_model(device, args.patch_size, args.model, args.img_size, 1, args.pred_width)[0]
target_encoder.load_state_dict(encoder.state_dict())
for q in target_encoder.parameters():
    q.requires_grad = False
decay = lambda n, q: "bias" not in n and q.ndim != 1  # the official param groups
params = list(encoder.named_parameters()) + list(predictor.named_parameters())
optimizer = torch.optim.AdamW([{"params": [q for n, q in params if decay(n, q)], "weight_decay": 0.04},
                               {"params": [q for n, q in params if not decay(n, q)], "weight_decay": 0}], lr=1e-4)
collator = MaskCollator(input_size=(args.img_size, args.img_size), patch_size=args.patch_size,
                        enc_mask_scale=(0.85, 1.0), pred_mask_scale=(0.15, 0.2), aspect_ratio=(0.75, 1.5),
                        nenc=1, npred=4, min_keep=10, allow_overlap=False)
batch = [(torch.randn(3, args.img_size, args.img_size), 0) for _ in range(args.batch_size)]


def collate(i):
    if args.masks == "official":
        return collator(batch)
    c, grid = cfg, (args.img_size // args.patch_size,) * 2  # as train.step_randomness draws them
    ctx, tgt = ours.sample_masks(len(batch), grid, num_targets=c["num_targets"], target_scale=c["target_scale"],
                                 target_aspect=c["target_aspect"], context_scale=c["context_scale"],
                                 min_keep=c["min_keep"],
                                 generator=torch.Generator().manual_seed(c["seed"] * 1_000_003 + i))
    return (torch.stack([b[0] for b in batch]), None), ctx, tgt


def step(i):
    t0 = time.perf_counter()
    (imgs, _), masks_enc, masks_pred = collate(i)
    t1 = time.perf_counter()
    imgs = imgs.to(device)
    masks_enc, masks_pred = [m.to(device) for m in masks_enc], [m.to(device) for m in masks_pred]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        with torch.no_grad():
            h = target_encoder(imgs)
            h = F.layer_norm(h, (h.size(-1),))
            h = repeat_interleave_batch(apply_masks(h, masks_pred), len(h), repeat=len(masks_enc))
        z = predictor(encoder(imgs, masks_enc), masks_enc, masks_pred)
        loss = F.smooth_l1_loss(z, h)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    with torch.no_grad():
        for q, k in zip(encoder.parameters(), target_encoder.parameters()):
            k.data.mul_(0.996).add_((1. - 0.996) * q.detach().data)
    sync(loss)  # the official loop's host sync, float(loss)
    return (time.perf_counter() - t0) * 1e3, (t1 - t0) * 1e3


def our_step():
    """bench.py's step (train.train_step) for --ours: same sizes, batch and device; step i draws the masks that
    collate(i) gives the official step."""
    enc, pred = M.build_models(cfg, augment.ACTION_NAMES)
    run = train.build(dict(cfg, accum=1), 0, 1, device, enc, pred, args.warmup + args.steps)
    imgs = [torch.randint(0, 256, (args.batch_size, 3, args.img_size, args.img_size), dtype=torch.uint8, device=device)]
    # (on the device, as train.py's loop hands them over: CPU images failed on a GPU with a float/bf16 bias mismatch)

    def step_ours(i):
        t0 = time.perf_counter()
        sync(train.train_step(run, i, imgs)["losses"][-1])  # a sync, as the official loop's float(loss)
        return (time.perf_counter() - t0) * 1e3, 0.0
    return step_ours


steps = {"official": step} | ({"ours": our_step()} if args.ours is not None else {})
times = {k: [] for k in steps}
for i in range(args.warmup):
    for f in steps.values():
        f(args.steps + i)
for i in range(2 * args.steps):  # the first pass over the timed steps untimed, as bench.py does; then alternate
    for k, f in steps.items():
        t = f(i % args.steps)
        if i >= args.steps:
            times[k].append(t)
ms, mask_ms = statistics.median(t for t, _ in times["official"]), statistics.median(m for _, m in times["official"])
print(f"official I-JEPA {args.model}/{args.patch_size} {args.img_size}px, predictor {args.pred_depth}x"
      f"{args.pred_width}, batch {args.batch_size}, {device.type}, {torch.get_num_threads()} threads, "
      f"{args.masks} masks")
for k, ts in times.items():
    med = statistics.median(t for t, _ in ts)
    print(f"{k}: median {med:.0f} ms/step, mean {statistics.mean(t for t, _ in ts):.0f}"
          + (f" (ratio of medians {med / ms:.2f}, ours {args.ours})" if k == "ours" else
             f", of which mask collation {mask_ms:.1f} ms") + f"; all steps: {', '.join(f'{t:.0f}' for t, _ in ts)}")
