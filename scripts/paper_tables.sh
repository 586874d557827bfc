#!/usr/bin/env bash
# The paper's experiments at laptop scale (issue 7) on the built-in Shapes data: every run is the quick start
# (configs/paper_tables.json: the previous quick start, ViT "micro" at 32 px / patch 8, predictor 3x96, raw action,
# lr 1e-3, 1000 steps of batch 32; kept so that the README tables stay reproducible) with one thing changed.
#   table1   conditioning none / sequence / feature (paper Table 1), seeds 0 1 2
#   table2   difficulty (jitter, + destructive, + strong jitter) x predictor depth 1 / 3, and I-JEPA (Table 2),
#            seeds 0 1 2; the (+ destructive, depth 3) cell is table1's feature runs
#   table4   leveraging the world model on seed 0 of I-JEPA, IWM "Inv-like" (depth 1) and "Equi-like" (depth 3):
#            encoder FT, frozen encoder + random / pretrained predictor, end-to-end, linear and attentive probes,
#            and the same protocols from a random init of the architecture (the baseline)
#   table8   linear probe and predictor finetuning of every pretrained run (MRR vs probe, Figure 4 / Table 8)
#   longer   Table 1's feature runs at 4x the steps (4000), with their probes: what a longer run changes
#   fig1     the nearest-neighbour picture (Figure 1) -> assets/nn.png
#   summary  the README tables from runs/paper/results.tsv
# Usage: bash scripts/paper_tables.sh [table1 table2 table4 table8 longer fig1 summary]   (default: all, in order)
# Finished runs are skipped (a `done` marker), so an interrupted call can simply be repeated: an interrupted run
# continues from its latest.pt (--resume latest), or starts over (--overwrite true) when it saved none. Each result
# line is appended to runs/paper/results.tsv as: table, run, seed, metric, value, seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/paper
RES=$OUT/results.tsv
mkdir -p $OUT
TARGETS=${*:-table1 table2 table4 table8 longer fig1 summary}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # the seeds of a table run side by side, one thread each

pretrain() {  # pretrain NAME SEED [train.py flags...]: one quick-start run, then its MRR (bank 256, 16 images)
  local name=$1 seed=$2 dir=$OUT/$1_s$2; shift 2
  if [ ! -f $dir/done ]; then
    local t0=$(date +%s) again="--overwrite true"; [ -f $dir/latest.pt ] && again="--resume latest"
    python train.py --config configs/paper_tables.json --seed $seed --eval_every 0 --out_dir $dir $again "$@" \
      > $dir.log 2>&1
    echo -e "pretrain\t$name\t$seed\tseconds\t$(( $(date +%s) - t0 ))\t$(( $(date +%s) - t0 ))" >> $RES
    local t1=$(date +%s)
    local mrr=$(python evaluate_mrr.py --ckpt $dir/latest.pt --images 16 --bank 256 | tail -n 1 | cut -d' ' -f2)
    echo -e "mrr\t$name\t$seed\tmrr\t$mrr\t$(( $(date +%s) - t1 ))" >> $RES
    touch $dir/done
  fi
}

RANDOM_INIT="--random_init true --predictor_init random --model micro --img_size 32 --patch_size 8 --pred_depth 3 \
             --pred_width 96 --cond feature"  # the quick start's architecture (finetune.py then ignores --ckpt)

finetune() {  # finetune TABLE NAME SEED PROTOCOL [finetune.py flags...] on the colour label
  # (shape stays at chance for every protocol and init at this budget, so it cannot rank them)
  local table=$1 name=$2 seed=$3 proto=$4; shift 4
  local tag=$proto; for a in "$@"; do case $a in random) tag=${proto}_random;; esac; done
  local dir=$OUT/ft/${name}_s${seed}_$tag
  if [ ! -f $dir/done ]; then
    local t0=$(date +%s) again="--overwrite true"; [ -f $dir/latest.pt ] && again="--resume latest"
    local line=$(python finetune.py --protocol $proto --ckpt $OUT/${name}_s${seed}/latest.pt --label color \
                 --train_images 2000 --val_images 1000 --epochs 5 --batch_size 64 --out_dir $dir $again "$@" \
                 2>/dev/null | tail -n 1)
    echo -e "$table\t$name\t$seed\t$tag\t${line##* }\t$(( $(date +%s) - t0 ))" >> $RES
    mkdir -p $dir && touch $dir/done
  fi
}

for target in $TARGETS; do
  t0=$(date +%s)
  case $target in
    table1)
      for s in 0 1 2; do (for c in none sequence feature; do pretrain cond_$c $s --cond $c; done) & done; wait ;;
    table2)
      for s in 0 1 2; do (
        for a in jitter iwm strong; do pretrain ${a}_d1 $s --augment $a --pred_depth 1; done
        for a in jitter strong; do pretrain ${a}_d3 $s --augment $a; done
        pretrain ijepa_d3 $s --method ijepa
      ) & done; wait ;;
    table4)
      for n in ijepa_d3 iwm_d1 cond_feature random; do (
        r=""; [ $n = random ] && r=$RANDOM_INIT  # the baseline: same architecture, nothing pretrained
        finetune table4 $n 0 encoder $r
        finetune table4 $n 0 predictor --predictor_init random --blr 0.004 $r
        finetune table4 $n 0 predictor --blr 0.004 $r
        finetune table4 $n 0 end_to_end $r
        finetune table4 $n 0 linear $r
        finetune table4 $n 0 attentive --blr 0.004 $r
      ) & done; wait ;;
    table8)
      for s in 0 1 2; do (
        for n in cond_none cond_sequence cond_feature jitter_d1 iwm_d1 strong_d1 jitter_d3 strong_d3 ijepa_d3; do
          finetune table8 $n $s linear
          finetune table8 $n $s predictor --blr 0.004
        done
      ) & done; wait ;;
    longer)  # what a longer run changes: Table 1's feature runs with 4x the steps (4000), MRR and probes
      for s in 0 1 2; do (
        pretrain long_feature $s --cond feature --epochs 4
        finetune table8 long_feature $s linear
        finetune table8 long_feature $s predictor --blr 0.004
      ) & done; wait ;;
    fig1)
      python evaluate_mrr.py --ckpt $OUT/cond_feature_s0/latest.pt --images 16 --bank 256 --png assets/nn.png \
        --png_images 4 | tail -n 3 ;;
    summary)
      python scripts/summarize.py $RES ;;
    *) echo "unknown target $target (table1 table2 table4 table8 longer fig1 summary)"; exit 2 ;;
  esac
  echo "$target: $(( $(date +%s) - t0 )) s"
done
