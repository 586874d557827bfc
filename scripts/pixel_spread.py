"""How much each jitter component changes the pixels of the evaluation images: for every component, evaluate_mrr.py's
bank where only that component varies (the training preset's range), and the mean squared difference per pixel value
between two of its views. A component that hardly moves the pixels is one the world model can hardly resolve
(evaluate_mrr.py prints the same spread in latent space, where the encoder has had its say).

    python scripts/pixel_spread.py [--data shapes] [--data_root DIR] [--augment strong] [--images 16] [--bank 64]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import augment  # noqa: E402
import evaluate_mrr as E  # noqa: E402


def pixel_spread(images, aug_cfg, bank, generator):
    """{component: mean over images of the mean squared pixel difference between two views of its bank}; images are
    floats in [0, 1], [N, 3, H, W]."""
    out = {}
    for c in augment.JITTER:
        cfg, per_image = E.bank_config(aug_cfg, c), []
        for img in images:
            params = augment.sample_params(bank, cfg, destructive=False, generator=generator)
            v = E._views(img[None], params, cfg).flatten(1)[..., None]  # each pixel value a "patch" of width 1
            per_image.append(E.distances(v, v).sum() / (bank * (bank - 1)))  # evaluate_mrr's spread
        out[c] = torch.stack(per_image).mean().item()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="shapes", help="as evaluate_mrr.py's --data (with --data_root)")
    ap.add_argument("--data_root", default="")
    ap.add_argument("--augment", default="strong", choices=tuple(augment.PRESETS))
    ap.add_argument("--img_size", type=int, default=64)
    ap.add_argument("--images", type=int, default=16, help="validation images, spread evenly over the split")
    ap.add_argument("--bank", type=int, default=64)
    args = ap.parse_args(argv)
    cfg = {"data": args.data, "data_root": args.data_root, "split": "val", "images": args.images}
    images = augment.to_float(E.load_images(cfg, {"img_size": args.img_size}, "pixel_spread.py")[0])  # evaluate_mrr's
    spread = pixel_spread(images, augment.PRESETS[args.augment], args.bank, torch.Generator().manual_seed(0))
    top = max(spread.values())
    for c, v in spread.items():
        print(f"{c:<11} pixel spread {v:.4f}  ({v / top:.2f} of the largest)")
    return spread


if __name__ == "__main__":
    main()
