"""The multitask comparison of IWM §5 (arXiv 2403.00504, Table 7): finetune.py's multitask predictor, then one
single-task predictor per task (`--protocol predictor --label TASK`) with the same batch and lr, each in
OUT_DIR/single_TASK. Takes finetune.py's keys (--protocol is multitask) and --equal: what both sides get alike, the
steps (--epochs each) or the images per head (the multitask run splits each batch evenly across its tasks, so it
gets --epochs × the number of tasks). Prints the per-task top-1 of both and their epochs, then `multitask top1 <mean
over tasks>` like finetune.py. --resume latest resumes every run that has a checkpoint.

    python scripts/multitask_baseline.py --ckpt runs/quickstart/latest.pt --tasks shape,color,count --epochs 5
"""
import os
import sys

import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli  # noqa: E402
import common  # noqa: E402
import data  # noqa: E402
import finetune  # noqa: E402

PROG = "scripts/multitask_baseline.py"
KEYS, HELP = cli.table(equal=("steps", "what the multitask run and each single-task run get alike: steps (the same "
                              "--epochs) or images per head (the multitask run: --epochs × its number of tasks)",
                              ("steps", "images")))


def compare(cfg, rank, world, device):
    """The multitask run's metrics plus single_top1_TASK per task, their mean single_top1, and each side's epochs."""
    base = {k: v for k, v in cfg.items() if k not in KEYS}
    heads = 1
    if cfg["equal"] == "images":  # each multitask batch is split evenly across its heads
        heads = len(finetune.task_labels(base, data.build_dataset(cfg["data"], cfg["data_root"] or None, "val")))
    multi = dict(base, epochs=cfg["epochs"] * heads)
    metrics = finetune.run(multi, rank, world, device)
    names = [k[len("top1_"):] for k in list(metrics) if k.startswith("top1_")]
    for name in names:
        sub = dict(base, protocol="predictor", label=name, out_dir=os.path.join(cfg["out_dir"], f"single_{name}"))
        sub["resume"] = "latest" if cfg["resume"] and os.path.isfile(os.path.join(sub["out_dir"], "latest.pt")) else ""
        metrics[f"single_top1_{name}"] = finetune.run(sub, rank, world, device)["top1"]
    metrics["single_top1"] = sum(metrics[f"single_top1_{name}"] for name in names) / len(names)
    return dict(metrics, epochs=multi["epochs"], single_epochs=cfg["epochs"])


def main(argv=None):
    cfg, rank, world, device = finetune.setup(argv, PROG, __doc__, dict(finetune.CONFIG, protocol="multitask", **KEYS),
                                               dict(finetune.HELP, **HELP))
    if cfg["protocol"] != "multitask":
        common.fail(PROG, f"--protocol must be multitask, got {cfg['protocol']!r}")
    with common.running(PROG):  # out_dir locks released at the end; an error: workers killed, one line
        try:
            metrics = compare(cfg, rank, world, device)
        except (ValueError, FileNotFoundError) as e:  # the checkpoint, the labels, the data
            common.fail(PROG, e)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        keep = ("top1_", "single_top1", "epochs", "single_epochs")
        print({k: round(v, 2) for k, v in metrics.items() if k.startswith(keep)}, flush=True)
        print(f"multitask top1 {metrics['top1']:.2f}", flush=True)
    return metrics


if __name__ == "__main__":
    main()
