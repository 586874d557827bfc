#!/usr/bin/env bash
# Issue 14: the GPU check. One GPU, at most ~8 minutes, one summary table (markdown) at the end:
#   1. the test suite on the GPU (the tests that call train / bench / finetune / evaluate_mrr pick CUDA themselves);
#   2. bench.py, the real training step, eager: ViT-B/16 IWM-Equi (predictor 18x384, feature conditioning, bf16) at
#      the largest of 256/128/64 that fits, I-JEPA mode (predictor 6x384, I-JEPA's ViT-B) likewise, ViT-H/14 at the
#      largest of 64/32/16: ms/step (and at the first sight of the steps' token counts; see bench.py), images/s,
#      peak memory per image, model GFLOP per image, MFU;
#   3. a ~2-minute real training run (configs/quickstart.json at batch 256) and the MRR in its log;
#   4. with IJEPA_DIR (a clone of github.com/facebookresearch/ijepa): our step against the official I-JEPA step,
#      scripts/bench_official.py --ours at ViT-B/16, 224, batch 256 (bf16): I-JEPA mode per-block and one-pass
#      (predictor 6x384), IWM-Equi 18x384; ms/step is ours, the note the official figure and the ratio. Without
#      IJEPA_DIR one row says "skipped: no IJEPA_DIR";
#   5. the two ViT-B rows again with --compile true at the batch found in 2, each in a fresh process.
# The steps run in that order, each under a time limit cut from what is left of GPU_CHECK_BUDGET (default 465 s),
# so the whole check stays within 8 minutes; a step that runs out is cut or skipped and its rows say so.
# --smoke: the same pipeline on the CPU at toy shapes (tests/test_bench.py runs it; compile rows are skipped; step 4
# runs at toy shapes only with IJEPA_DIR, and without it adds no row, only a line on stderr).
# Without a GPU (and without --smoke) it prints one line and exits 0. Logs: runs/gpu_check/ (GPU_CHECK_DIR).
# Exit status 1 when a test or a row failed.
# Usage: bash scripts/gpu_check.sh [--smoke]
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
case "${1:-}" in
  --smoke) SMOKE=1 ;;
  "") ;;
  *) echo "usage: bash scripts/gpu_check.sh [--smoke]" >&2; exit 2 ;;
esac
if [ "$SMOKE" = 0 ] && ! python -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU on this machine, nothing checked (--smoke runs the same pipeline on the CPU)"
  exit 0
fi
DIR=${GPU_CHECK_DIR:-runs/gpu_check}
RES=$DIR/results.jsonl
mkdir -p "$DIR"
: > "$RES"
DEADLINE=$((SECONDS + ${GPU_CHECK_BUDGET:-465}))

if [ "$SMOKE" = 1 ]; then  # toy shapes on the CPU: every step of the pipeline in seconds
  TOY="--device cpu --img_size 16 --patch_size 4 --model micro --pred_depth 1 --pred_width 32 --min_keep 4"
  BENCH_EXTRA="$TOY --steps 1 --warmup 1"
  BATCHES=4; H_BATCHES=4
  TESTS=(tests/test_summarize.py::test_tables_from_results)  # the plumbing only: one quick torch-free test
  TRAIN_BATCH=4; TRAIN_S=90
  TRAIN_EXTRA="$TOY --workers 0 --max_steps 2 --eval_images 2 --eval_bank 4 --probe_images 16"
  SIDE_EXTRA="--device cpu --model vit_tiny --img_size 16 --patch_size 4 --pred_depth 1 --pred_width 48"
  SIDE_EXTRA+=" --batch_size 4 --steps 1 --warmup 1"  # vit_tiny: a name the official code has; 48: its 3 heads
  SIDE_OURS="--min_keep 4"
else
  BENCH_EXTRA=""
  BATCHES=256,128,64; H_BATCHES=64,32,16
  TESTS=(-k "not gpu_check")  # all but this script's own tests (CPU work, and the smoke test would recurse)
  TRAIN_BATCH=256; TRAIN_S=130
  TRAIN_EXTRA="--workers 8 --data_length 768000 --max_steps 3000"  # stopped by time (SIGTERM) near 2 minutes
  SIDE_EXTRA=""; SIDE_OURS=""
fi

# bench.py rows in one process, in order; a row is "NAME|BATCHES|FLAGS": the first of the comma list BATCHES that
# fits in memory. Each row goes to RES as one JSON line as soon as it is done; an error fails that row only.
ROW_PY=$(cat <<'PY'
import gc, json, sys, time, traceback
import torch
import bench
res, extra, *specs = sys.argv[1:]
for spec in specs:
    name, batches, flags = spec.split("|")
    row, t0, tries = {"name": name, "ok": False}, time.time(), batches.split(",")
    for b in tries:
        try:
            out = bench.main(flags.split() + extra.split() + ["--batch_size", b])
        except torch.OutOfMemoryError:
            row["note"] = f"out of memory at batch {b}"
        except Exception as e:
            traceback.print_exc()
            row["note"] = f"{type(e).__name__}: {e}"[:100]
            break
        else:
            row.update(out, ok=True, note="" if b == tries[0] else f"largest of {batches} that fits")
            break
        finally:
            gc.collect()
            torch.cuda.empty_cache()
    row.pop("stages_ms", None)
    row["wall_s"] = time.time() - t0
    with open(res, "a") as f:
        f.write(json.dumps(row) + "\n")
PY
)
# The training run's row: throughput and memory of its last log interval, its last MRR, from log.jsonl.
TRAIN_PY=$(cat <<'PY'
import json, os, sys
res, name, log, batch, wall, rc, text, smoke = sys.argv[1:]
rows = [json.loads(line) for line in open(log)] if os.path.exists(log) else []
ev, tr = [r for r in rows if "mrr" in r], [r for r in rows if "img_per_s" in r]
B = int(batch)
row = {"name": name, "ok": bool(ev), "batch_size": B, "wall_s": float(wall),
       "note": f"no MRR in the log (exit status {rc}), see {text}"}
if tr:
    row.update(img_per_s=tr[-1]["img_per_s"], ms_per_step=1e3 * B / tr[-1]["img_per_s"],
               mib_per_image=None if smoke == "1" else tr[-1]["peak_mem_gb"] * 1024 / B)  # CPU: RSS, not comparable
if ev:
    e = ev[-1]
    row["note"] = f"MRR {e['mrr']:.3f} at step {e['step']} (chance {e['mrr_chance']:.3f})"
    row["note"] += f", loss {tr[-1]['loss']:.3f}" if tr else ""
with open(res, "a") as f:
    f.write(json.dumps(row) + "\n")
PY
)
# Rows for the NAMEs a step did not write: skipped (no time left), cut (its time limit) or failed (exit status).
FILL_PY=$(cat <<'PY'
import json, sys
res, rc, limit, log, wall, *names = sys.argv[1:]
done = {json.loads(line)["name"] for line in open(res)}
with open(res, "a") as f:
    for name in names:
        if name in done:
            continue
        if rc == "skip":
            row = {"ok": True, "note": "skipped: the time budget is spent"}
        elif rc in ("124", "137"):
            row = {"ok": True, "note": f"cut at the {limit}s time limit"}
        else:
            row = {"ok": False, "note": f"exit status {rc}, see {log}"}
        f.write(json.dumps(dict(row, name=name, wall_s=float(wall) if rc != "skip" else None)) + "\n")
PY
)
# The side by side's row from bench_official.py's output: ms/step and images/s ours, the official step in the note.
SIDE_PY=$(cat <<'PY'
import json, re, sys
res, name, log, rc, wall = sys.argv[1:]
text = open(log).read()
head = re.search(r"^official I-JEPA .*, batch (\d+), ", text, re.M)
off = re.search(r"^official: median (\d+) ms/step.* mask collation ([\d.]+) ms", text, re.M)
ours = re.search(r"^ours: median (\d+) ms/step.*\(ratio of medians ([\d.]+)", text, re.M)
row = {"name": name, "ok": rc == "0" and bool(head and off and ours), "wall_s": float(wall)}
if row["ok"]:
    B, ms = int(head[1]), float(ours[1])
    row.update(batch_size=B, ms_per_step=ms, img_per_s=1e3 * B / ms if ms else None,
               note=f"ratio {ours[2]} to the official step's {off[1]} ms (masks {off[2]} ms apart)")
else:
    last = [line for line in text.splitlines() if line.strip()][-1:] or [""]
    row["note"] = f"exit status {rc}, see {log}: {last[0][:80]}"
with open(res, "a") as f:
    f.write(json.dumps(row) + "\n")
PY
)
TABLE_PY=$(cat <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
dev = next((r["device"] for r in rows if r.get("device")), "?")
print(f"\ngpu_check summary: {'SMOKE (CPU, toy shapes)' if sys.argv[2] == '1' else dev}")
cols = ["check", "batch", "ms/step", "first sight", "images/s", "MiB/image", "MFU %", "GFLOP/image", "s", "note"]
fmt = lambda v, f, scale=1: "-" if v is None else format(v * scale, f)
print("| " + " | ".join(cols) + " |")
print("|" + "---|" * len(cols))
for r in rows:
    g = r.get
    cells = [r["name"], fmt(g("batch_size"), "d"), fmt(g("ms_per_step"), ".1f"), fmt(g("ms_per_step_first"), ".1f"),
             fmt(g("img_per_s"), ".0f"),
             fmt(g("mib_per_image"), ".1f"), fmt(g("mfu"), ".1f", 100), fmt(g("gflop_per_image"), ".1f"),
             fmt(g("wall_s"), ".0f"), ("" if r["ok"] else "FAILED: ") + (g("note") or "")]
    print("| " + " | ".join(cells) + " |")
bad = [r["name"] for r in rows if not r["ok"]]
skipped = sum(r["ok"] and (r.get("note") or "").startswith(("skipped", "cut")) for r in rows)
print(f"gpu_check: {len(rows) - len(bad) - skipped} ok, {len(bad)} failed, {skipped} skipped or cut"
      + (": failed " + "; ".join(bad) if bad else ""))
sys.exit(1 if bad else 0)
PY
)

RC=0; T=0; WALL=0
run_step() {  # CAP LOG CMD...: CMD under min(CAP, budget left); RC its exit status, or "skip" (returns 1)
  local cap=$1 log=$2 left=$((DEADLINE - SECONDS)) t0=$SECONDS
  shift 2
  T=$((left < cap ? left : cap)); WALL=0
  if [ "$T" -lt 20 ]; then RC=skip; return 1; fi
  echo "gpu_check: $log (at most ${T}s)" >&2
  timeout ${TIMEOUT_OPTS:-} -k 60 "$T" "$@" > "$log" 2>&1
  RC=$?; WALL=$((SECONDS - t0))
}
fill() {  # LOG NAME...
  python -c "$FILL_PY" "$RES" "$RC" "$T" "$1" "$WALL" "${@:2}"
}
skip_row() {  # NAME NOTE: a row for a check that was not run
  python -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "ok": True, "note": sys.argv[2]}))' "$@" >> "$RES"
}
batch_of() {  # NAME: the batch its bench row ran at (empty if it did not run)
  python -c 'import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(next((r["batch_size"] for r in rows if r["name"] == sys.argv[2] and r.get("batch_size")), ""))' "$RES" "$1"
}

# 1. tests
if run_step 150 "$DIR/pytest.log" python -m pytest -q -p no:cacheprovider "${TESTS[@]}" \
    && [ "$RC" != 124 ] && [ "$RC" != 137 ]; then
  summary=$(tail -n 1 "$DIR/pytest.log" | tr -d '=' | sed 's/^ *//; s/ *$//')  # "N passed, M skipped in Xs"
  python -c 'import json, sys; name, rc, log, wall = sys.argv[1:]
print(json.dumps({"name": name, "ok": rc == "0", "note": "" if rc == "0" else f"exit status {rc}, see {log}",
                  "wall_s": float(wall)}))' "pytest: $summary" "$RC" "$DIR/pytest.log" "$WALL" >> "$RES"
else
  fill "$DIR/pytest.log" pytest
fi

# 2. the training step, eager, one process
B16="--model base --patch_size 16 --img_size 224"
IWM="ViT-B/16 IWM-Equi 18x384"
IJEPA="ViT-B/16 I-JEPA 6x384"
IWM_FLAGS="$B16 --pred_depth 18 --pred_width 384 --cond feature --method iwm"
IJEPA_FLAGS="$B16 --pred_depth 6 --pred_width 384 --method ijepa"
H14="ViT-H/14 IWM-Equi 18x384, eager"
EAGER=("$IWM, eager|$BATCHES|$IWM_FLAGS" "$IJEPA, eager|$BATCHES|$IJEPA_FLAGS"
       "$H14|$H_BATCHES|--model huge --patch_size 14 --img_size 224 --pred_depth 18 --pred_width 384 --cond feature")
run_step 290 "$DIR/bench_eager.log" python -c "$ROW_PY" "$RES" "$BENCH_EXTRA" "${EAGER[@]}"
fill "$DIR/bench_eager.log" "$IWM, eager" "$IJEPA, eager" "$H14"

# 3. a real training run, stopped by SIGTERM near TRAIN_S (train.py then finishes the step, evaluates and saves);
# --foreground: the signal goes to train.py alone, not to its loader workers
rm -rf "$DIR/train"
NAME="train quickstart (micro/8 at 64px)"
# shellcheck disable=SC2086  # TRAIN_EXTRA is a list of flags
if TIMEOUT_OPTS="--foreground -s TERM" run_step "$TRAIN_S" "$DIR/train.log" python train.py --config \
    configs/quickstart.json --batch_size "$TRAIN_BATCH" --eval_every -1 --out_dir "$DIR/train" $TRAIN_EXTRA; then
  python -c "$TRAIN_PY" "$RES" "$NAME" "$DIR/train/log.jsonl" "$TRAIN_BATCH" "$WALL" "$RC" "$DIR/train.log" "$SMOKE"
else
  fill "$DIR/train.log" "$NAME"
fi

# 4. ours against the official I-JEPA step, each row in its own process: "NAME|bench_official.py flags|--ours FLAGS"
SIDE_B16="--model vit_base --patch_size 16 --img_size 224 --pred_width 384 --batch_size 256 --steps 5 --warmup 2"
SIDE=("ours/official: I-JEPA 6x384, per-block|$SIDE_B16 --pred_depth 6|--method ijepa --loss smooth_l1"
      "ours/official: I-JEPA 6x384, one-pass|$SIDE_B16 --pred_depth 6|--method ijepa --loss smooth_l1 --one_pass true"
      "ours/official: IWM-Equi 18x384|$SIDE_B16 --pred_depth 18|--cond feature --method iwm")
if [ -z "${IJEPA_DIR:-}" ] && [ "$SMOKE" = 1 ]; then
  echo "gpu_check: ours/official I-JEPA step (bench_official.py) skipped: no IJEPA_DIR" >&2
elif [ -z "${IJEPA_DIR:-}" ]; then
  skip_row "ours/official I-JEPA step (bench_official.py)" "skipped: no IJEPA_DIR (a clone of facebookresearch/ijepa)"
else
  for i in "${!SIDE[@]}"; do
    IFS="|" read -r name flags ours <<< "${SIDE[$i]}"
    log="$DIR/bench_official_$i.log"
    # shellcheck disable=SC2086  # flags: a list of flags
    if run_step 120 "$log" python scripts/bench_official.py --ijepa_dir "$IJEPA_DIR" $flags $SIDE_EXTRA \
        --ours "$ours $SIDE_OURS" && [ "$RC" != 124 ] && [ "$RC" != 137 ]; then
      python -c "$SIDE_PY" "$RES" "$name" "$log" "$RC" "$WALL"
    else
      fill "$log" "$name"
    fi
  done
fi

# 5. the ViT-B rows compiled, at the batch the eager row found, each in a fresh process (fresh dynamo caches)
for row in "$IWM" "$IJEPA"; do
  b=$(batch_of "$row, eager")
  name="$row, --compile true"
  flags=$([ "$row" = "$IWM" ] && echo "$IWM_FLAGS" || echo "$IJEPA_FLAGS")
  log="$DIR/bench_compile_$([ "$row" = "$IWM" ] && echo iwm || echo ijepa).log"
  if [ "$SMOKE" = 1 ]; then
    skip_row "$name" "skipped: --smoke (inductor on the CPU takes minutes)"
  elif [ -z "$b" ]; then
    skip_row "$name" "skipped: no batch from the eager row"
  else
    run_step 600 "$log" python -c "$ROW_PY" "$RES" "$BENCH_EXTRA" "$name|$b|$flags --compile true --warmup 5"
    fill "$log" "$name"
  fi
done

python -c "$TABLE_PY" "$RES" "$SMOKE" | tee "$DIR/summary.md"
