#!/usr/bin/env bash
# Issue 11's goals for one pretrained run: the world model's MRR by source and by jitter component (bank 256), the
# null action, the target tokens' effective rank and variance split (evaluate_mrr.py), then per label:
#   linear     linear probe of the checkpoint's target encoder  vs  a random init of the same architecture
#   predictor  predictor finetuning from the pretrained predictor  vs  a random predictor (both on the frozen encoder)
#   supervised the same architecture trained from random init on the label (plain recipe: no mixup, cutmix,
#              RandAugment, erasing, smoothing or drop path, and no layer-wise lr decay, which would leave a random
#              patch embedding at 5 % of the lr; lr 1e-3): is the label learnable at this size and budget at all?
# Linear probes: 5 epochs on 2000 train / 1000 val images (features cached); the other runs: 3 epochs on
# 1000 / 500 (they run the encoder or predictor every step). Prints "label protocol init top1 seconds" rows and
# writes them to RUN_DIR/check.tsv.
# Usage: bash scripts/recipe_check.sh RUN_DIR [LABELS]        (LABELS: comma-separated; default every label)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$1
CKPT=$RUN/latest.pt
read -r DATA ROOT ALL < <(python - "$CKPT" <<'PY'
import sys
import data, model as M
ck, run = M.load_checkpoint(sys.argv[1])
ds = data.build_dataset(run["data"], run.get("data_root") or None, "val", size=run["img_size"])
print(run["data"], run.get("data_root") or "-", ",".join(ds.label_names))
PY
)
ROOT_FLAG=""; [ "$ROOT" != "-" ] && ROOT_FLAG="--data_root $ROOT"
LABELS=${2:-$ALL}
for label in ${LABELS//,/ }; do  # a misspelt label (colour) fails here, not as shifted columns later
  case ",$ALL," in *",$label,"*) ;; *) echo "recipe_check.sh: error: unknown label '$label' (this data has: $ALL)" >&2
                                      exit 2 ;; esac
done
python evaluate_mrr.py --ckpt "$CKPT" --images 16 --bank 256 | tee "$RUN/mrr.txt"
COMMON="--data $DATA $ROOT_FLAG --batch_size 64"
PROBE="--epochs 5 --train_images 2000 --val_images 1000"
SHORT="--epochs 3 --train_images 1000 --val_images 500"
PLAIN="--mixup 0 --cutmix 0 --randaug 0 --reprob 0 --smoothing 0 --drop_path 0 --layer_decay 1 --blr 0.004"
: > "$RUN/check.tsv"
mkdir -p "$RUN/check"
ft() {  # ft LABEL PROTOCOL INIT [finetune.py flags...]
  local label=$1 proto=$2 init=$3; shift 3
  local t0=$(date +%s)
  # --overwrite true: each call recomputes the table, over the folders of the previous call
  local line  # (declared apart: `local x=$(cmd)` would hide cmd's exit status from set -e)
  line=$(python finetune.py --protocol $proto --label $label $COMMON --out_dir $RUN/check/$label-$proto-$init \
         --overwrite true "$@" 2>"$RUN/check/$label-$proto-$init.err" | tail -n 1) \
    || { echo "recipe_check.sh: error: $label $proto $init failed: see $RUN/check/$label-$proto-$init.err" >&2
         exit 1; }
  printf "%s\t%s\t%s\t%s\t%s\n" $label $proto $init ${line##* } $(( $(date +%s) - t0 )) | tee -a "$RUN/check.tsv"
}
for label in ${LABELS//,/ }; do
  ft $label linear checkpoint --ckpt "$CKPT" $PROBE
  ft $label linear random --ckpt "$CKPT" --random_init true $PROBE  # CKPT's architecture, none of its weights
  ft $label predictor pretrained --ckpt "$CKPT" --blr 0.004 $SHORT
  ft $label predictor random --ckpt "$CKPT" --blr 0.004 --predictor_init random $SHORT
  ft $label supervised random --ckpt "$CKPT" --random_init true $PLAIN --protocol encoder $SHORT
done
