#!/usr/bin/env bash
# Issue 5 / paper Table 4 at laptop scale: every finetune.py protocol on the quick-start checkpoint and on a random
# init of the same architecture, on one label of the built-in data (shape by default; LABEL=color or count to
# change it). Prints "<init> <protocol> top1 <value> <s>".
# Usage: [LABEL=shape] bash scripts/leverage_table.sh [CKPT]    (CKPT default runs/quickstart/latest.pt)
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:-runs/quickstart/latest.pt}
# the random init gets the checkpoint's own architecture (model.ARCH_KEYS), so the two columns compare like with like
ARCH=$(python -c 'import sys, model as M; run = M.load_checkpoint(sys.argv[1])[1]
print(" ".join(f"--{k} {run[k]}" for k in M.ARCH_KEYS))' "$CKPT")
COMMON="--data shapes --label ${LABEL:-shape} --epochs 5 --train_images 2000 --val_images 1000 --batch_size 64"
COMMON="$COMMON --warmup_epochs 1"
for init in checkpoint random; do
  for p in linear attentive predictor encoder end_to_end multitask; do
    src="--ckpt $CKPT"; [ "$init" = random ] && src="--random_init true --predictor_init random $ARCH"
    lr=""; case $p in encoder|end_to_end) ;; linear) ;; *) lr="--blr 0.004";; esac
    t0=$(date +%s)
    # --overwrite true: every call recomputes the table, over the folders of the previous call
    line=$(python finetune.py --protocol $p $src $COMMON $lr --out_dir runs/leverage/${LABEL:-shape}-$init-$p \
           --overwrite true 2>/dev/null | tail -n 1)
    echo "$init $line $(( $(date +%s) - t0 ))s"
  done
done
