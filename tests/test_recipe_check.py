"""scripts/recipe_check.sh refuses a label the checkpoint's data does not have, at once and in one line."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ("--data shapes --data_length 32 --img_size 16 --patch_size 4 --model micro --pred_depth 1 --pred_width 32 "
        "--min_keep 4 --batch_size 8 --max_steps 1 --workers 0 --eval_images 0 --device cpu").split()


def test_misspelt_label_fails_before_any_work(tmp_path):
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "train.py", *TINY, "--out_dir", str(run)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(["bash", "scripts/recipe_check.sh", str(run), "shape,colour"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == "recipe_check.sh: error: unknown label 'colour' (this data has: shape,color,count)"
    assert not (run / "mrr.txt").exists()  # refused before the evaluation
