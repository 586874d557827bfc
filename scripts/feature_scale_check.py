"""Why predictor finetuning on the previous quick start's pretrained encoder stayed near chance (README Results,
"Earlier results"; on the laptop recipe's color label it reaches 98-100 %, Table 4): trains
the predictor-finetuning head (heads.py's Classifier with a random predictor, or the attentive probe alone) on
cached frozen target-encoder tokens, with the tokens as they are or standardised per channel (train-split mean /
std over all tokens), and prints the share of the token variance that is position and that is per-image mean.

    python scripts/feature_scale_check.py --ckpt CKPT --label color     # the README's figures: commit f5425ab's
                                                                        # runs/paper/cond_feature_s0/latest.pt
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import augment  # noqa: E402
import data  # noqa: E402
import heads  # noqa: E402
import model as M  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--ckpt", required=True)
p.add_argument("--label", default="color")
p.add_argument("--epochs", type=int, default=5)
args = p.parse_args()
try:
    ck, run = M.load_checkpoint(args.ckpt, need=("target_encoder",))
except (ValueError, FileNotFoundError) as e:
    p.error(str(e))
size = run["img_size"]


def tokens(encoder, split, n):
    ds = data.build_dataset("shapes", None, split, transform=data.eval_transform(size), size=size)
    idx = torch.linspace(0, len(ds) - 1, n).long().tolist()
    x = augment.normalize(torch.stack([ds[i][0] for i in idx]).float() / 255)
    with torch.no_grad():
        return encoder(x), torch.stack([ds[i][1] for i in idx])[:, ds.label_names.index(args.label)]


for init in ("pretrained", "random"):
    torch.manual_seed(0)
    load = ("target_encoder",) if init == "pretrained" else ()
    encoder = M.build_from_checkpoint(ck, run, augment.ACTION_NAMES, load, args.ckpt)[1].eval()
    (ztr, ytr), (zva, yva) = tokens(encoder, "train", 2000), tokens(encoder, "val", 1000)
    var = lambda t: ((t - ztr.mean((0, 1))) ** 2).mean().item()
    tot = var(ztr)
    print(f"{init} encoder: token variance {var(ztr.mean(0, keepdim=True)) / tot:.0%} position, "
          f"{var(ztr.mean(1, keepdim=True)) / tot:.0%} per-image mean")
    for head in ("predictor", "attentive"):
        for scaled in (False, True):
            torch.manual_seed(0)
            # a random predictor: the paper's control
            _, predictor = M.build_models(run, augment.ACTION_NAMES)
            clf = heads.Classifier([heads.AttentiveHead(encoder.embed_dim, encoder.num_heads, int(ytr.max()) + 1)],
                                   predictor=predictor if head == "predictor" else None)
            mu, sd = (ztr.mean((0, 1)), ztr.std((0, 1))) if scaled else (0.0, 1.0)
            opt = torch.optim.AdamW(clf.parameters(), lr=1e-3, weight_decay=0.05)
            for _ in range(args.epochs):
                for b in torch.randperm(len(ztr)).split(64):
                    loss = F.cross_entropy(clf((ztr[b] - mu) / sd)[0], ytr[b])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                acc = (clf((zva - mu) / sd)[0].argmax(1) == yva).float().mean().item()
            print(f"  {head:9s} tokens {'standardised' if scaled else 'as they are '}: train loss {loss.item():.3f}, "
                  f"val top-1 {100 * acc:.1f}", flush=True)
