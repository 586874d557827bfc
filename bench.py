"""Speed and memory of the real IWM / I-JEPA training step (train.py's functions, IWM §3), on synthetic images.

    python bench.py --model tiny --pred_depth 6 --batch_size 16 --method ijepa --loss smooth_l1   # CPU reference
    python bench.py --batch_size 256 --compile true                        # GPU: ViT-B/16, IWM-Equi 18×384, bf16
Prints ms/step and images/s of the whole step (no syncs inside), then a per-stage breakdown measured in a second,
synchronised pass (augment, masks, target fwd, context fwd/bwd, predictor fwd/bwd, optimizer, EMA), peak memory,
model FLOPs per image and, on GPU, MFU against the assumed bf16 peak. `batch_size` is per device here.
main() also returns these figures as a dict (scripts/gpu_check.sh tabulates them).
"""
import time

import torch

import augment
import common
import model as M
import train

CONFIG = dict(train.CONFIG, batch_size=64, steps=10, warmup=3, compile=False)
BF16_PEAK_TFLOPS = {"H100 SXM": 989, "H100 NVL": 835, "H100 PCIe": 756, "H100": 989, "H200": 989, "GH200": 989,
                    "A100": 312, "L40S": 362, "A10": 125, "L4": 121, "4090": 165, "B200": 2250}


def peak_tflops(name):
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup(cfg, device):
    encoder, predictor = M.build_models(cfg, len(augment.ACTION_NAMES))
    target = M.build_models(cfg, len(augment.ACTION_NAMES))[0]
    target.load_state_dict(encoder.state_dict())
    target.requires_grad_(False)
    for m in (encoder, predictor, target):
        m.to(device).grad_ckpt = cfg["grad_ckpt"]
    opt = common.make_adamw(common.param_groups({"e": encoder, "p": predictor}, cfg["weight_decay"]), cfg["lr"],
                            device=device)
    run = [torch.compile(m) if cfg["compile"] else m for m in (encoder, predictor, target)]
    return (encoder, predictor, target), run, opt


def full_step(cfg, nets, run, opt, imgs, step, amp):
    """Exactly train.py's step for one micro-batch: randomness, views, loss, backward, AdamW, EMA."""
    ctx, tgt, src_p, tgt_p = train.step_randomness(cfg, step, imgs.shape[0], nets[0].grid, imgs.device)
    loss, _ = train.jepa_loss(cfg, run, imgs, ctx, tgt, src_p, tgt_p, amp)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        torch._foreach_lerp_(list(nets[2].parameters()), list(nets[0].parameters()), 0.004)
    return loss


def staged_step(cfg, nets, run, opt, imgs, step, amp, times):
    """The same step with a sync and a clock between stages (slower than full_step; for the breakdown only)."""
    dev, auto = imgs.device, dict(device_type=imgs.device.type, dtype=amp or torch.float32, enabled=amp is not None)
    clock = [time.perf_counter()]
    def lap(name):
        sync(dev)
        now = time.perf_counter()
        times[name] = times.get(name, 0.0) + now - clock[0]
        clock[0] = now
    ctx, tgt, src_p, tgt_p = train.step_randomness(cfg, step, imgs.shape[0], nets[0].grid, dev)
    lap("masks + params")
    x, y, action = train.views(imgs, src_p, tgt_p, augment.PRESETS[cfg["augment"]], cfg["action"])
    lap("augment")
    with torch.autocast(**auto):
        h_all, h = train.targets(run[2], y, tgt)
    lap("target fwd")
    with torch.autocast(**auto):
        z = run[0](augment.normalize(x), ctx)
    lap("context fwd")
    zd = z.detach().requires_grad_()  # cut the graph so predictor and encoder backward are timed apart
    with torch.autocast(**auto):
        p = run[1](zd, ctx, tgt, action, one_pass=cfg["one_pass"])
    loss = train.loss_terms(cfg, zd, p, h)
    lap("predictor fwd")
    loss.backward()
    lap("predictor bwd")
    z.backward(zd.grad)
    lap("context bwd")
    opt.step()
    opt.zero_grad(set_to_none=True)
    lap("optimizer")
    with torch.no_grad():
        torch._foreach_lerp_(list(nets[2].parameters()), list(nets[0].parameters()), 0.004)
    lap("EMA")


def main(argv=None):
    cfg = common.parse_config(CONFIG, argv, "bench.py", __doc__)
    if cfg["method"] != "iwm":
        cfg.update(augment="ijepa", cond="none")
    device = common.pick_device(cfg["device"], common.setup_distributed()[2])
    amp = common.autocast_dtype(device, cfg["dtype"])
    torch.manual_seed(cfg["seed"])
    nets, run, opt = setup(cfg, device)
    B, S = cfg["batch_size"], cfg["img_size"]
    imgs = torch.randint(0, 256, (B, 3, S, S), dtype=torch.uint8, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"{cfg['model']}/{cfg['patch_size']} at {S}px, predictor {cfg['pred_depth']}x{cfg['pred_width']}, "
          f"cond {cfg['cond']}, method {cfg['method']}, batch {B}, dtype {amp or torch.float32}, "
          f"compile {cfg['compile']}, one_pass {cfg['one_pass']}")
    for i in range(cfg["warmup"]):
        full_step(cfg, nets, run, opt, imgs, i, amp)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(cfg["steps"]):
        loss = full_step(cfg, nets, run, opt, imgs, cfg["warmup"] + i, amp)
    loss.item()  # one sync at the end: the loop itself never waits for the device
    dt = (time.perf_counter() - t0) / cfg["steps"]
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    times = {}
    for i in range(cfg["steps"]):
        staged_step(cfg, nets, run, opt, imgs, i, amp, times)
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:  # model FLOPs of one step (forward + backward), eager
        staged_step(cfg, nets, nets, opt, imgs, 0, amp, {})
    flops = fc.get_total_flops() / B
    print(f"step {dt * 1e3:.1f} ms, {B / dt:.1f} images/s")
    total = sum(times.values())
    for k, v in times.items():
        print(f"  {k:<15} {v / cfg['steps'] * 1e3:8.2f} ms  {100 * v / total:5.1f}%")
    print(f"model FLOPs per image {flops / 1e9:.2f} GFLOP (fwd+bwd)")
    out = {"device": name, "batch_size": B, "ms_per_step": dt * 1e3, "img_per_s": B / dt,
           "gflop_per_image": flops / 1e9, "peak_mem_gib": mem, "mib_per_image": None, "mfu": None,
           "stages_ms": {k: v / cfg["steps"] * 1e3 for k, v in times.items()}}
    if mem is not None:
        out["mib_per_image"] = mem / B * 1024
        print(f"peak memory {mem:.2f} GiB, {out['mib_per_image']:.1f} MiB per image")
        peak = peak_tflops(name)
        if peak:
            out["mfu"] = flops * B / dt / (peak * 1e12)
            print(f"MFU {100 * out['mfu']:.1f}% (assumed bf16 dense peak {peak} TFLOPS)")
    return out


if __name__ == "__main__":
    main()
