"""Issue 12: every bad input of train.py, finetune.py and evaluate_mrr.py is one `prog: error:` line on stderr that
names the problem, with exit status 2 and no traceback, and leaves every file it was given as it was (one table,
ROWS). Below the table: a second run into a run's folder, and stale temp files of killed saves (the exit status of
a stopped run: test_exit_status.py)."""
import hashlib
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import cli
import common
import evaluate_mrr
import finetune
import model as M
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ("--data shapes --data_length 48 --img_size 16 --patch_size 4 --model micro --pred_depth 1 --pred_width 32 "
        "--min_keep 4 --batch_size 8 --workers 0 --eval_images 0").split()
MAIN = {"train": train.main, "finetune": finetune.main, "evaluate_mrr": evaluate_mrr.main}
# each command's own arguments before a row's (a row's flags come later, so they win): tiny and fast
BASE = {"train": TINY + ["--out_dir", "{out}"],
        "finetune": ["--ckpt", "{ck}", "--train_images", "16", "--val_images", "8", "--batch_size", "8",
                     "--out_dir", "{out}"],
        "evaluate_mrr": ["--ckpt", "{ck}", "--images", "1", "--bank", "4"]}
ABSENT_GPU = f"cuda:{torch.cuda.device_count()}"  # a CUDA device this machine lacks, with or without GPUs


class Callable:
    def __reduce__(self):  # what a malicious checkpoint does with os.system
        return print, ("this must never run",)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every file a row is given, made once: {name: path}. `run` is a finished train.py run (latest.pt and
    log.jsonl) and `ck` a copy of its checkpoint."""
    d = tmp_path_factory.mktemp("inputs")
    f = {k: str(d / k) for k in ("run", "ck", "text", "truncated", "foreign", "list", "nopred", "official", "empty",
                                 "corrupt", "noval", "afile", "list_json", "short_json", "step_abc", "opt_empty",
                                 "dir_files", "malicious", "size_text")}
    train.main(TINY + ["--epochs", "1", "--max_steps", "2", "--out_dir", f["run"]])
    ck = torch.load(os.path.join(f["run"], "latest.pt"), weights_only=True)
    torch.save(ck, f["ck"])
    with open(f["text"], "w") as fh:
        fh.write("encoder: not a checkpoint\n")
    torch.save(ck, f["truncated"])  # a real checkpoint whose write was cut short
    with open(f["truncated"], "r+b") as fh:
        fh.truncate(4096)
    torch.save({"x": 1}, f["foreign"])
    torch.save([1, 2], f["list"])
    torch.save({k: ck[k] for k in ("encoder", "target_encoder", "config")}, f["nopred"])
    torch.save({"encoder": Callable()}, f["malicious"])  # unpickling it would call print: weights_only refuses
    torch.save(dict(ck, step="abc"), f["step_abc"])  # hand-edited checkpoints
    torch.save(dict(ck, config=dict(ck["config"], img_size="16")), f["size_text"])
    torch.save(dict(ck, opt={}), f["opt_empty"])
    for name in ("latest.pt", "log.jsonl"):  # a run's file names, as folders
        os.makedirs(os.path.join(f["dir_files"], name))
    torch.save({k: {f"module.{n}": t for n, t in ck[k].items()} for k in M.NETS}, f["official"])  # no config
    os.makedirs(f["empty"])
    for split in ("train", "val"):  # every file unreadable
        os.makedirs(os.path.join(f["corrupt"], split, "a"))
        for k in range(10):
            with open(os.path.join(f["corrupt"], split, "a", f"{k}.png"), "wb") as fh:
                fh.write(b"not an image")
    for c in "ab":  # readable images, but a train split only
        os.makedirs(os.path.join(f["noval"], "train", c))
        for k in range(5):
            Image.fromarray(np.full((20, 20, 3), 40 * k, np.uint8)).save(os.path.join(f["noval"], "train", c,
                                                                                      f"{k}.png"))
    for name, text in (("afile", "a file, not a folder"), ("list_json", "[1, 2]"),
                       ("short_json", '{"crop_scale": [0.3]}')):
        with open(f[name], "w") as fh:
            fh.write(text)
    return f


def snapshot(root):
    """{path: sha256} of every file under root."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as fh:
                out[os.path.join(folder, name)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def row(cli, name, args, message, code=2, **kw):
    return pytest.param(cli, args.split(), message, code, id=f"{cli}-{name}", **kw)


CHECKPOINT_FILES = [("missing", "checkpoint not found: {ck}.missing"),
                    ("text", "cannot read checkpoint {text} (truncated, or not a torch.save file)"),
                    ("truncated", "cannot read checkpoint {truncated} (truncated, or not a torch.save file)"),
                    ("foreign", "{foreign} has no 'encoder'"), ("list", "{list} is not a checkpoint: it holds a list")]
PATH = {"missing": "{ck}.missing"}
ROWS = [
    # --init / --resume / --ckpt: every kind of file that is not a checkpoint
    *[row("train", f"init-{kind}", f"--init {PATH.get(kind, '{' + kind + '}')}", msg)
      for kind, msg in CHECKPOINT_FILES],
    *[row("train", f"resume-{kind}", f"--resume {PATH.get(kind, '{' + kind + '}')}", msg)
      for kind, msg in CHECKPOINT_FILES],
    *[row("finetune", f"ckpt-{kind}", f"--ckpt {PATH.get(kind, '{' + kind + '}')}",
          msg.replace("'encoder'", "'target_encoder'")) for kind, msg in CHECKPOINT_FILES],
    *[row("evaluate_mrr", f"ckpt-{kind}", f"--ckpt {PATH.get(kind, '{' + kind + '}')}", msg)
      for kind, msg in CHECKPOINT_FILES],
    row("finetune", "resume-text", "--resume {text}", "cannot read checkpoint {text}"),
    row("finetune", "resume-truncated", "--resume {truncated}", "cannot read checkpoint {truncated}"),
    row("train", "resume-latest-absent", "--resume latest", "checkpoint not found: {out}/latest.pt"),
    row("finetune", "resume-latest-absent", "--resume latest", "checkpoint not found: {out}/latest.pt"),
    row("evaluate_mrr", "ckpt-without-predictor", "--ckpt {nopred}", "{nopred} has no 'predictor' weights"),
    row("evaluate_mrr", "official-ckpt-without-data", "--ckpt {official}", "pass --data"),
    row("evaluate_mrr", "no-ckpt", "--ckpt=", "pass --ckpt PATH"),
    row("finetune", "no-ckpt", "--ckpt=", "--ckpt PATH is required (or --random_init true"),
    # flags that contradict the checkpoint
    row("train", "init-contradicts", "--init {ck} --pred_width 64", "--pred_width 64 vs checkpoint 32"),
    row("finetune", "ckpt-contradicts", "--img_size 64 --cond none",
        "--img_size 64 vs checkpoint 16, --cond none vs checkpoint feature"),
    row("evaluate_mrr", "ckpt-contradicts", "--img_size 64", "--img_size 64 vs checkpoint 16"),
    # an out_dir that holds a run, or cannot be one
    row("train", "existing-run", "--out_dir {run}", "--out_dir {run} already holds a run (latest.pt, log.jsonl): "
        "continue it with --resume latest, or start over with --overwrite true"),
    row("finetune", "existing-run", "--out_dir {run}", "--out_dir {run} already holds a run"),
    row("train", "resume-and-overwrite", "--out_dir {run} --resume latest --overwrite true", "contradict each other"),
    row("train", "out_dir-is-a-file", "--out_dir {afile}", "--out_dir {afile}: {afile} is a file"),
    row("finetune", "out_dir-is-a-file", "--out_dir {afile}", "--out_dir {afile}: {afile} is a file"),
    row("evaluate_mrr", "png-under-a-file", "--png {afile}/nn.png", "--png {afile}: {afile} is a file"),
    row("train", "out_dir-empty", "--out_dir=", "--out_dir must name a folder, got ''"),
    row("train", "out_dir-in-proc", "--out_dir /proc/iwm_run", "--out_dir /proc/iwm_run cannot hold a run: "),
    row("train", "run-files-are-folders", "--out_dir {dir_files} --resume latest",
        "--out_dir {dir_files}: latest.pt, log.jsonl should be a file"),
    row("finetune", "run-files-are-folders", "--out_dir {dir_files} --resume latest", "latest.pt, log.jsonl should"),
    row("evaluate_mrr", "ckpt-malicious", "--ckpt {malicious}",
        "cannot read checkpoint {malicious} (it holds more than weights, and loading it could run code)"),
    row("evaluate_mrr", "ckpt-size-edited", "--ckpt {size_text}", "sizes img_size '16', patch_size 4, pred_depth 1,"),
    row("train", "init-size-edited", "--init {size_text}", "cannot tell the architecture of {size_text} (TypeError"),
    row("train", "resume-step-edited", "--resume {step_abc} --epochs 1",
        "{step_abc}: its step 'abc' is not a step count"),
    row("train", "resume-opt-emptied", "--resume {opt_empty} --epochs 1",
        "{opt_empty}: its 'opt' state does not fit this run"),
    row("evaluate_mrr", "png-a-folder", "--png {out}", "--png {out} must name a .png file"),
    row("evaluate_mrr", "png-no-extension", "--png {out}/nn", "--png {out}/nn must name a .png file"),
    # data: an empty folder, unreadable images, an ImageFolder without val/
    row("train", "empty-folder", "--data imagefolder --data_root {empty}", "expected ImageNet-style folders"),
    row("finetune", "empty-folder", "--data imagefolder --data_root {empty}", "got no folder {empty}/train"),
    row("evaluate_mrr", "empty-folder", "--data imagefolder --data_root {empty}", "got no folder {empty}/val"),
    row("train", "corrupt-images", "--data imagefolder --data_root {corrupt}",
        "cannot read {corrupt}/train: 10 consecutive unreadable images"),
    row("train", "corrupt-images-1-worker", "--data imagefolder --data_root {corrupt} --workers 1",
        "cannot read {corrupt}/train: 10 consecutive unreadable images"),
    row("finetune", "corrupt-images-1-worker", "--data imagefolder --data_root {corrupt} --workers 1",
        "cannot read {corrupt}/train: 10 consecutive unreadable images"),
    row("evaluate_mrr", "corrupt-images", "--data imagefolder --data_root {corrupt}",
        "cannot read {corrupt}/val: 10 consecutive unreadable images"),
    row("train", "no-val-split-with-evaluation",
        "--data imagefolder --data_root {noval} --eval_images 2 --eval_bank 4 --probe_images 4",
        "the in-training evaluation (--eval_every 0 turns it off) needs the val split"),
    row("finetune", "no-val-split", "--data imagefolder --data_root {noval}", "got no folder {noval}/val"),
    row("evaluate_mrr", "no-val-split", "--data imagefolder --data_root {noval}", "got no folder {noval}/val"),
    row("train", "unknown-dataset", "--data mnist", "--data must be one of shapes, imagefolder, cifar10"),
    row("finetune", "unknown-label", "--label nope", "'nope' is not a label of this dataset"),
    # two-number flags, typed or from a config file; numbers that are not numbers
    row("train", "crop_scale-one-number", "--crop_scale 0.3", "--crop_scale expects 2 numbers, got (0.3,)"),
    row("train", "ema-one-number", "--ema 0.99", "--ema expects 2 numbers, got (0.99,)"),
    row("train", "crop_scale-not-numbers", "--crop_scale abc", "--crop_scale expects comma-separated numbers"),
    row("finetune", "crop_scale-one-number", "--crop_scale 0.3", "--crop_scale expects 2 numbers"),
    row("finetune", "linear_lrs-not-numbers", "--linear_lrs abc", "--linear_lrs expects comma-separated numbers"),
    row("finetune", "linear_lrs-empty", "--linear_lrs ,", "--linear_lrs expects 1 or more numbers, got ()"),
    row("train", "config-short-pair", "--config {short_json}", "crop_scale in {short_json} expects 2 numbers"),
    row("train", "config-not-an-object", "--config {list_json}", "must hold one JSON object"),
    row("train", "config-missing", "--config {ck}.json", "cannot read config file {ck}.json"),
    row("train", "lr-not-a-number", "--lr fast", "--lr expects float, got 'fast'"),
    row("train", "bool-not-a-bool", "--one_pass maybe", "--one_pass expects true/false"),
    row("train", "unknown-option", "--nope 1", "unknown option --nope"),
    row("train", "flag-without-value", "--lr", "--lr needs a value"),
    # values out of range, or not one of a key's choices: one place (cli.check_values)
    row("train", "patch_size-0", "--patch_size 0", "--patch_size must be >= 1, got 0"),
    row("train", "batch_size-0", "--batch_size 0", "--batch_size must be >= 1, got 0"),
    row("train", "epochs-0", "--epochs 0", "--epochs must be >= 1, got 0"),
    row("train", "lr-negative", "--lr -1", "--lr must be >= 0, got -1.0"),
    row("train", "lr-inf", "--lr inf", "--lr must be a finite number >= 0, got inf"),
    row("train", "ema-above-1", "--ema 1.5,2", "--ema must be >= 0 and <= 1, got 1.5,2.0"),
    row("finetune", "drop_path-above-1", "--drop_path 1.5", "--drop_path must be >= 0 and <= 1, got 1.5"),
    row("finetune", "randaug-above-30", "--randaug 31", "--randaug must be >= 0 and <= 30, got 31"),
    row("train", "workers-negative", "--workers -1", "--workers must be >= 0, got -1"),
    row("train", "eval_every-below-minus-1", "--eval_every -2", "--eval_every must be >= -1, got -2"),
    row("finetune", "batch_size-0", "--batch_size 0", "--batch_size must be >= 1, got 0"),
    row("finetune", "train_images-negative", "--train_images -1", "--train_images must be >= 0, got -1"),
    row("evaluate_mrr", "bank-1", "--bank 1", "--bank must be >= 2, got 1"),
    row("evaluate_mrr", "chunk-0", "--chunk 0", "--chunk must be >= 1, got 0"),
    row("train", "probe_images-1-with-evaluation", "--eval_images 2 --probe_images 1",
        "needs --eval_bank and --probe_images >= 2"),
    row("train", "patch-does-not-divide", "--patch_size 5", "not divisible by patch size"),
    row("train", "pred_width-not-split-into-heads", "--pred_width 30",
        "--pred_width 30 does not split into the 4 heads"),
    row("train", "method-unknown", "--method mae", "--method must be one of iwm, ijepa, cjepa, got 'mae'"),
    row("finetune", "protocol-unknown", "--protocol bogus", "--protocol must be one of"),
    row("evaluate_mrr", "augment-unknown", "--augment heavy", "--augment must be one of"),
    row("train", "dtype-unknown", "--dtype fp8", "--dtype must be one of auto, float32, bfloat16, float16"),
    row("finetune", "dtype-unknown", "--dtype fp8", "--dtype must be one of"),
    row("train", "device-unknown", "--device tpu", "--device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    row("train", "device-absent", f"--device {ABSENT_GPU}", f"--device {ABSENT_GPU}: this machine has"),
    row("finetune", "device-absent", f"--device {ABSENT_GPU}", f"--device {ABSENT_GPU}: this machine has"),
    row("evaluate_mrr", "device-absent", f"--device {ABSENT_GPU}", f"--device {ABSENT_GPU}: this machine has"),
    # issue 27: the same checks through every script, suggestions, and ranges with an upper end
    row("train", "misspelt-option", "--max-steps 3", "unknown option --max-steps; did you mean --max_steps?"),
    row("finetune", "misspelt-option", "--max-steps 3", "unknown option --max-steps; did you mean --max_steps?"),
    row("evaluate_mrr", "misspelt-option", "--bank-size 8", "unknown option --bank-size"),
    row("finetune", "unknown-option", "--nope 1", "unknown option --nope"),
    row("evaluate_mrr", "unknown-option", "--nope 1", "unknown option --nope"),
    row("finetune", "flag-without-value", "--blr", "--blr needs a value"),
    row("evaluate_mrr", "flag-without-value", "--bank", "--bank needs a value"),
    row("finetune", "blr-not-a-number", "--blr fast", "--blr expects float, got 'fast'"),
    row("evaluate_mrr", "images-not-a-number", "--images many", "--images expects int, got 'many'"),
    row("finetune", "bool-not-a-bool", "--random_init maybe", "--random_init expects true/false"),
    row("finetune", "config-missing", "--config {ck}.json", "cannot read config file {ck}.json"),
    row("evaluate_mrr", "config-missing", "--config {ck}.json", "cannot read config file {ck}.json"),
    row("finetune", "config-not-an-object", "--config {list_json}", "must hold one JSON object"),
    row("train", "seed-beyond-32-bits", "--seed 99999999999", "--seed must be between -(2**32 - 1) and 2**32 - 1,"),
    row("finetune", "seed-beyond-32-bits", "--seed 99999999999", "--seed must be between -(2**32 - 1) and 2**32"),
    row("evaluate_mrr", "seed-beyond-32-bits", "--seed 99999999999", "--seed must be between"),
    row("train", "lr-nan", "--lr nan", "--lr must be a finite number >= 0, got nan"),
    row("finetune", "blr-inf", "--blr inf", "--blr must be a finite number >= 0, got inf"),
    row("train", "ema-negative", "--ema -0.1,1", "--ema must be >= 0 and <= 1, got -0.1,1.0"),
    row("finetune", "smoothing-above-1", "--smoothing 2", "--smoothing must be >= 0 and <= 1, got 2.0"),
    row("finetune", "reprob-above-1", "--reprob 1.5", "--reprob must be >= 0 and <= 1, got 1.5"),
    row("finetune", "drop_path-negative", "--drop_path -0.1", "--drop_path must be >= 0 and <= 1, got -0.1"),
    row("finetune", "epochs-0", "--epochs 0", "--epochs must be >= 1, got 0"),
    row("evaluate_mrr", "images-0", "--images 0", "--images must be >= 1, got 0"),
    row("evaluate_mrr", "png_images-0", "--png_images 0", "--png_images must be >= 1, got 0"),
    row("train", "cond-unknown", "--cond film", "--cond must be one of none, sequence, feature, got 'film'"),
    row("train", "augment-unknown", "--augment heavy", "--augment must be one of"),
    row("train", "action-unknown", "--action diff", "--action must be one of log_std, raw, got 'diff'"),
    row("train", "loss-unknown", "--loss l1", "--loss must be one of l2, smooth_l1, got 'l1'"),
    row("train", "model-unknown", "--model giant", "--model must be one of"),
    row("finetune", "predictor_init-unknown", "--predictor_init zeros", "--predictor_init must be one of"),
    row("finetune", "unknown-dataset", "--data mnist", "--data must be one of shapes, imagefolder, cifar10"),
    row("train", "device-cuda-without-gpu", "--device cuda", "--device cuda: this machine has 0 CUDA device(s)",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
]


@pytest.mark.parametrize("cli, args, message, code", ROWS)
def test_bad_input_is_one_line_and_touches_nothing(files, tmp_path, capsys, cli, args, message, code):
    paths = dict(files, out=str(tmp_path / "out"))
    before = snapshot(os.path.dirname(files["run"]))
    with pytest.raises(SystemExit) as e:
        MAIN[cli]([a.format(**paths) for a in BASE[cli] + args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert e.value.code == code and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"{cli}.py: error: "), err
    assert message.format(**paths) in lines[0], err
    assert snapshot(os.path.dirname(files["run"])) == before  # no file given was changed, lost or added
    assert not os.path.exists(paths["out"])  # nothing created either


def test_help_documents_exit_status_and_eval_every(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and " ".join(cli.EXIT_TRAINING.split()) in " ".join(out.split())
    assert "steps per in-training evaluation; 0 never, -1 at every save" in out


def test_worker_traceback_becomes_its_last_line(capsys):
    """A DataLoader worker's error carries the worker's traceback in its text: fail() prints the error line only."""
    msg = ('Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n'
           '  File "data.py", line 1, in f\nValueError: 10 consecutive unreadable images')
    with pytest.raises(SystemExit) as e:
        common.fail("x.py", ValueError(msg))
    assert e.value.code == 2
    assert capsys.readouterr().err == "x.py: error: ValueError: 10 consecutive unreadable images\n"


# ---------------------------------------------------------------------------------------------- a run's folder
def log_rows(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_second_run_is_refused_then_resumed_or_started_over(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = TINY + ["--epochs", "2", "--keep_every", "1", "--log_every", "1", "--out_dir", out]
    train.main(args + ["--max_steps", "7"])  # crosses the first epoch (6 steps): ep0001.pt is kept
    first = snapshot(out)
    assert {os.path.basename(p) for p in first} == {"latest.pt", "ep0001.pt", "log.jsonl", common.LOCK}
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.main(args + ["--max_steps", "8"])
    assert e.value.code == 2 and "--resume latest" in capsys.readouterr().err
    assert snapshot(out) == first  # the first run's files are byte-identical
    train.main(args + ["--max_steps", "8", "--resume", "latest"])  # continues: the log grows
    assert [r["step"] for r in log_rows(out) if "loss" in r] == list(range(1, 9))
    train.main(args + ["--max_steps", "2", "--overwrite", "true"])  # starts over: a fresh log, the old files gone
    assert [r["step"] for r in log_rows(out) if "loss" in r] == [1, 2]
    assert sorted(os.listdir(out)) == [common.LOCK, "latest.pt", "log.jsonl"]
    assert torch.load(os.path.join(out, "latest.pt"), weights_only=True)["step"] == 2


def test_finetune_refuses_a_second_run_and_starts_over_on_request(files, tmp_path, capsys):
    out = str(tmp_path / "ft")
    args = [a.format(ck=files["ck"], out=out) for a in BASE["finetune"]] + ["--epochs", "1"]
    finetune.main(args)
    first = snapshot(out)
    with pytest.raises(SystemExit) as e:
        finetune.main(args)
    assert e.value.code == 2 and "already holds a run" in capsys.readouterr().err and snapshot(out) == first
    finetune.main(args + ["--overwrite", "true"])
    assert sum("final" in r for r in log_rows(out)) == 1  # a fresh log, not the old one appended to


def test_stale_temp_files_of_killed_saves_are_removed_at_the_next_start(tmp_path, capsys):
    """Under the folder's lock no other save of this tool can be running: every temp file of a save is stale."""
    out = tmp_path / "run"
    args = TINY + ["--epochs", "1", "--out_dir", str(out)]
    train.main(args + ["--max_steps", "1"])
    stale = [out / f"latest.pt.tmp.{os.getppid()}", out / "ep0001.pt.tmp.12345"]
    other = out / "notes.tmp.20240101"  # not a name this tool writes
    for path in stale + [other]:
        path.write_bytes(b"half a checkpoint")
    capsys.readouterr()
    train.main(args + ["--max_steps", "2", "--resume", "latest"])
    err = capsys.readouterr().err
    assert not any(p.exists() for p in stale) and other.exists()
    assert all(f"removed {p}, left by a save that was killed" in err for p in stale)
