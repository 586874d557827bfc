"""Is a world model limited by its encoder or by its predictor? (README Results, "Why MRR stays below 0.30")
Trains a FRESH predictor with train.py's loop, recipe and flags on the FROZEN encoder and target encoder of CKPT
(the EMA is off, so the targets stay CKPT's), then evaluate_mrr.py scores it as any run. A fresh predictor that
reaches CKPT's MRR within a short budget says CKPT's encoder carried the gain; one that stays at a short run's MRR
says the predictor needed the longer training.

    python scripts/frozen_encoder_wm.py --encoder_from RUN_4X/latest.pt --config configs/quickstart.json \
        --out_dir runs/frozen4x
    python evaluate_mrr.py --ckpt runs/frozen4x/latest.pt --images 16 --bank 256
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli  # noqa: E402
import common  # noqa: E402
import model as M  # noqa: E402
import train  # noqa: E402


def main(argv=None):
    prog = "frozen_encoder_wm.py"
    helps = dict(train.HELP, encoder_from=("the checkpoint whose encoders stay frozen (required)", None, ""))
    cfg = cli.parse_config(dict(train.CONFIG, encoder_from=""), argv, prog, __doc__, helps, cli.EXIT_TRAINING)
    cfg = train.check_config(cfg, prog)
    if not cfg["encoder_from"]:
        common.fail(prog, "--encoder_from CKPT is required: the checkpoint whose encoders stay frozen")
    if cfg["resume"]:  # a resumed run would have to re-freeze from the same file; keep the one way simple
        common.fail(prog, "--resume is not supported here: rerun from the start")
    rank, world, device = common.setup_distributed(cfg["device"])
    if world > 1:  # DDP refuses a module with no trainable parameter; one process is enough for this check
        common.fail(prog, "run it as one process (python, not torchrun)")
    try:  # before setup touches out_dir: the encoders' shapes must match this run's (a differing key is named)
        ck, _ = M.load_checkpoint(cfg["encoder_from"], {k: cfg[k] for k in ("model", "img_size", "patch_size")},
                                  need=("encoder", "target_encoder"))
    except (ValueError, FileNotFoundError) as e:
        common.fail(prog, e)
    with common.running(prog):
        run = train.setup(cfg, rank, world, device)
        M.load_nets(ck, run.nets.encoder, run.nets.target_encoder, name=cfg["encoder_from"])
        run.nets.encoder.requires_grad_(False)  # no gradient: AdamW and the logged grad norm skip it (no weight decay)
        run.ema_source = run.ema_target  # the EMA lerps the target toward itself: it stays CKPT's
        return train.loop(run)


if __name__ == "__main__":
    main()
