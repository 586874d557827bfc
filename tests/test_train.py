"""train.py: every method/conditioning learns, exact resume, DDP = single process, safe checkpoints, when the
in-training evaluation runs (bad input: test_bad_inputs.py)."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import augment
import cli
import common
import model as M
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ("--data shapes --data_length 48 --img_size 16 --patch_size 4 --model micro --pred_depth 2 --pred_width 64 "
        "--min_keep 4 --batch_size 8 --epochs 2 --warmup_epochs 0 --workers 0 --log_every 1 --eval_images 0 "
        "--lr 0.001").split()


def run(tmp_path, *extra, name="run"):
    out = str(tmp_path / name)
    res = train.main(TINY + ["--out_dir", out] + list(extra))
    return res, out


def losses(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [r["loss"] for r in map(json.loads, f) if "loss" in r]


@pytest.mark.parametrize("method, cond", [("iwm", cond) for cond in M.CONDS] + [("ijepa", "none"), ("cjepa", "none")])
def test_each_method_learns(tmp_path, method, cond):
    torch.manual_seed(0)
    _, out = run(tmp_path, "--method", method, "--cond", cond, "--max_steps", "10")
    ls = losses(out)
    assert len(ls) == 10 and all(map(lambda v: v == v, ls))
    assert sum(ls[-3:]) / 3 < 0.8 * ls[0], ls


def state(out):  # on the CPU: on a GPU machine the runs save CUDA tensors, which tests compare with CPU ones
    return torch.load(os.path.join(out, "latest.pt"), map_location="cpu", weights_only=True)


def test_resume_is_exact(tmp_path):
    _, straight = run(tmp_path, "--max_steps", "9", name="straight")  # 6 steps per epoch: crosses an epoch
    _, split = run(tmp_path, "--max_steps", "4", name="split")
    run(tmp_path, "--max_steps", "9", "--resume", "latest", name="split")
    a, b = state(straight), state(split)
    assert a["step"] == b["step"] == 9
    for key in ("encoder", "predictor", "target_encoder"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)


def test_pred_lr_scale_scales_only_the_predictor_step(tmp_path):
    """--pred_lr_scale 3 (the laptop recipe): the first AdamW step moves the predictor 3× as far as at scale 1 and
    the encoder exactly as far (lr 0 gives the common starting point)."""
    start, one, three = (state(run(tmp_path, "--max_steps", "1", *flags, name=name)[1])
                         for name, flags in (("start", ("--lr", "0", "--start_lr", "0")), ("one", ()),
                                             ("three", ("--pred_lr_scale", "3"))))
    for k in start["encoder"]:
        assert torch.allclose(three["encoder"][k], one["encoder"][k], atol=1e-6), k
    moved = [k for k in start["predictor"] if not torch.equal(one["predictor"][k], start["predictor"][k])]
    assert len(moved) > 10
    for k in moved:
        d1, d3 = one["predictor"][k] - start["predictor"][k], three["predictor"][k] - start["predictor"][k]
        assert torch.allclose(d3, 3 * d1, rtol=1e-3, atol=1e-7), k


@pytest.mark.skipif(not any(map(shutil.which, ("g++", "c++", "clang++"))), reason="CPU inductor needs a C++ compiler")
def test_compile_gives_the_eager_step(tmp_path):
    """--compile compiles each block in place (regional): the losses are the eager ones to float tolerance, across
    steps whose token counts differ, and the checkpoint keys are the plain modules' (no `_orig_mod.`)."""
    _, eager = run(tmp_path, "--max_steps", "3", name="eager")
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    _, compiled = run(tmp_path, "--max_steps", "3", "--compile", "true", name="compiled")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # dynamo did compile the blocks
    assert torch.allclose(torch.tensor(losses(compiled)), torch.tensor(losses(eager)), rtol=1e-4, atol=1e-5)
    a, b = state(eager), state(compiled)
    assert all(a[key].keys() == b[key].keys() for key in ("encoder", "predictor", "target_encoder"))


def test_resume_refuses_other_config(tmp_path, capsys, monkeypatch):
    _, out = run(tmp_path, "--max_steps", "1")
    assert state(out)["action_names"] == list(augment.ACTION_NAMES)
    with pytest.raises(SystemExit):
        run(tmp_path, "--max_steps", "2", "--resume", "latest", "--cond", "sequence")
    assert "--cond sequence vs checkpoint feature" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # AdamW's groups would keep the file's lr scales (or fail to load: 1 merges them)
        run(tmp_path, "--max_steps", "2", "--resume", "latest", "--pred_lr_scale", "3")
    assert "--pred_lr_scale 3.0 vs checkpoint 1.0" in capsys.readouterr().err
    for flag, value, said in (("--lr", "0.002", "--lr 0.002 vs checkpoint 0.001"), ("--epochs", "3", "--epochs 3 vs "
                              "checkpoint 2"), ("--seed", "5", "--seed 5 vs checkpoint 0"), ("--batch_size", "4",
                              "--batch_size 4 vs checkpoint 8")):  # the schedule and the data order: not silently
        with pytest.raises(SystemExit):
            run(tmp_path, "--max_steps", "2", "--resume", "latest", flag, value)
        assert said in capsys.readouterr().err
    monkeypatch.setattr(augment, "ACTION_NAMES", augment.ACTION_NAMES + ("added_later",))  # a transform added since
    with pytest.raises(SystemExit):
        run(tmp_path, "--max_steps", "2", "--resume", "latest")
    err = capsys.readouterr().err.strip()
    assert f"was trained with actions ({', '.join(augment.ACTION_NAMES[:-1])}) but this code has" in err
    assert "a_{x→y} changed" in err and "\n" not in err


def test_resume_reads_a_key_an_older_checkpoint_lacks_as_what_it_meant_then(tmp_path, capsys):
    """A checkpoint saved before --action and --pred_lr_scale existed trained with raw differences and one lr
    (M.LEGACY). A resume compares the flags with those values: it neither refuses every value (the key is
    absent) nor assumes today's defaults (--action was raw before log_std became the default)."""
    _, out = run(tmp_path, "--max_steps", "1", "--action", "raw")
    ck = state(out)
    for key in M.LEGACY:  # the file as such a run saved it
        del ck["config"][key]
    torch.save(ck, os.path.join(out, "latest.pt"))
    with pytest.raises(SystemExit):
        run(tmp_path, "--max_steps", "2", "--resume", "latest")
    assert "--action log_std vs checkpoint raw" in capsys.readouterr().err
    assert run(tmp_path, "--max_steps", "2", "--resume", "latest", "--action", "raw")[0]["step"] == 2


def test_init_loads_our_weights(tmp_path):
    _, out = run(tmp_path, "--max_steps", "1", "--cond", "none", name="src")
    src = os.path.join(out, "latest.pt")
    _, dst = run(tmp_path, "--max_steps", "1", "--ema", "1,1", "--init", src, name="dst")  # EMA 1: target stays
    a, b = state(out), state(dst)  # (the cond none checkpoint initialises a cond feature run: conditioning is fresh)
    assert all(torch.equal(a["target_encoder"][k], b["target_encoder"][k]) for k in a["target_encoder"])


def test_frozen_encoder_script_trains_the_predictor_only(tmp_path, capsys):
    """scripts/frozen_encoder_wm.py: the encoders stay the source checkpoint's, bit for bit (no step, no weight decay,
    no EMA drift); the predictor starts fresh and trains."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import frozen_encoder_wm
    _, src = run(tmp_path, "--max_steps", "3", name="src")
    out = str(tmp_path / "frozen")
    res = frozen_encoder_wm.main(TINY + ["--max_steps", "3", "--seed", "1", "--out_dir", out,
                                         "--encoder_from", os.path.join(src, "latest.pt")])
    a, b = state(src), state(out)
    assert res["step"] == 3 and b["step"] == 3
    for key in ("encoder", "target_encoder"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    torch.manual_seed(1)  # the predictor train.setup builds for seed 1, before any step
    fresh = M.build_models(b["config"], len(augment.ACTION_NAMES))[1].state_dict()
    for k in ("predictor_embed.weight", "predictor_proj.weight"):  # trained: neither its init nor the source's
        assert not torch.equal(fresh[k], b["predictor"][k]) and not torch.equal(a["predictor"][k], b["predictor"][k])
    other = str(tmp_path / "other")  # encoders of another grid: one line naming the key, before out_dir exists
    with pytest.raises(SystemExit):
        frozen_encoder_wm.main(TINY + ["--img_size", "32", "--out_dir", other, "--encoder_from",
                                       os.path.join(src, "latest.pt")])
    assert "--img_size 32 vs checkpoint 16" in capsys.readouterr().err and not os.path.exists(other)


def test_ddp_two_processes_match_single(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = TINY + ["--max_steps", "3", "--accum", "1", "--device", "cpu"]  # gloo, on a GPU machine too
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           os.path.join(ROOT, "train.py")] + args + ["--out_dir", str(tmp_path / "ddp")]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "replicas identical: True" in p.stdout
    # one process with the same global batch, here as 2 accumulation micro-batches of 4 like the 2 ranks
    train.main(args + ["--accum", "2", "--out_dir", str(tmp_path / "one")])
    a, b = state(str(tmp_path / "ddp")), state(str(tmp_path / "one"))
    for key in ("encoder", "predictor"):
        for k in a[key]:
            assert torch.allclose(a[key][k], b[key][k], atol=1e-5), (key, k)


def test_interrupted_save_keeps_latest(tmp_path, monkeypatch):
    path = str(tmp_path / "latest.pt")
    common.save_atomic({"step": 1}, path)
    def dying_save(obj, f):  # killed half-way through writing
        f.write(b"partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        common.save_atomic({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1


def test_nan_loss_stops_without_saving(tmp_path, monkeypatch, capsys):
    real = train.loss_terms
    calls = {"n": 0}
    def poisoned(*a):
        calls["n"] += 1
        loss = real(*a)
        return loss * float("nan") if calls["n"] >= 3 else loss
    monkeypatch.setattr(train, "loss_terms", poisoned)
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "--max_steps", "6", "--log_every", "2")
    assert e.value.code == common.EXIT_NONFINITE == 3  # distinct from bad input (2) and a crash (1)
    assert "NaN/Inf" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run" / "latest.pt")  # nothing saved from the bad state


def test_nan_loss_before_an_in_training_evaluation_stops_with_exit_3(tmp_path, monkeypatch, capsys):
    real = train.loss_terms  # NaN from the first step; step 3 evaluates but does not log: no evaluation of NaN weights
    monkeypatch.setattr(train, "loss_terms", lambda *a: real(*a) * float("nan"))
    monkeypatch.setattr(train, "in_training_eval", lambda *a: pytest.fail("evaluated a NaN state"))
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "--max_steps", "6", "--log_every", "50", "--eval_every", "3", "--eval_images", "2",
            "--eval_bank", "4", "--probe_images", "16")
    assert e.value.code == 3 and "NaN/Inf" in capsys.readouterr().err


@pytest.mark.parametrize("every, steps", [("0", []), ("-1", [3]), ("2", [2])])  # never; at every save; every N
def test_eval_every(tmp_path, every, steps):
    _, out = run(tmp_path, "--max_steps", "3", "--eval_every", every, "--eval_images", "2", "--eval_bank", "4",
                 "--probe_images", "4")
    with open(os.path.join(out, "log.jsonl")) as f:
        assert [r["step"] for r in map(json.loads, f) if "mrr" in r] == steps


def test_more_processes_than_gpus_is_one_clear_error(monkeypatch, capsys):
    """torchrun --nproc_per_node=2 on a one-GPU machine: rank 1 would ask for cuda:1. --device cpu there stays on
    the CPU (gloo) instead of taking the GPU."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit) as e:
        common.setup_distributed("auto")
    assert e.value.code == 2 and "cuda:1 does not exist: this machine has 1 CUDA device(s)" in capsys.readouterr().err
    assert common.setup_distributed("cpu")[2] == torch.device("cpu")


def test_iwm_loss_is_the_step_loss_from_networks_and_batch_alone():
    """A notebook computes the IWM loss of a batch with train.iwm_loss; train_step's loss is that same number."""
    cfg = train.check_config(cli.parse_config(train.CONFIG, TINY + ["--device", "cpu"]))
    torch.manual_seed(0)
    encoder, predictor = M.build_models(cfg, len(augment.ACTION_NAMES))
    run = train.build(dict(cfg, accum=1), 0, 1, torch.device("cpu"), encoder, predictor, 10)
    imgs = torch.randint(0, 256, (cfg["batch_size"], 3, 16, 16), dtype=torch.uint8)
    draws = train.step_randomness(cfg, 3, cfg["batch_size"], encoder.grid, torch.device("cpu"))
    loss, z, h_all = train.iwm_loss(cfg, run.nets, imgs, draws)
    assert loss.ndim == 0 and loss.item() > 0 and h_all.shape[:2] == (cfg["batch_size"], 16)
    loss.backward()  # the loss reaches both trained networks
    assert encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0 and predictor.mask_token.grad.abs().sum() > 0
    run.opt.zero_grad(set_to_none=True)
    out = train.train_step(run, 3, [imgs])  # same weights before its update: the same loss
    assert torch.allclose(out["losses"][0], loss.detach(), rtol=1e-6, atol=0)
