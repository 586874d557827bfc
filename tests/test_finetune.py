"""finetune.py (IWM §5 protocols and the probes) on a micro ViT and the built-in Shapes data at 32 px, on CPU."""
import importlib.util
import pathlib

import pytest
import torch

import augment
import finetune
import model as M

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARCH = dict(model="micro", img_size=32, patch_size=8, pred_depth=1, pred_width=64, cond="feature")


def load(path):  # checkpoints written on a GPU hold CUDA tensors: compare everything on the CPU
    return torch.load(path, map_location="cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # 2 shared cores: intra-op threads fighting other processes make tiny models ~2x slower
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    enc, pred = M.build_models(ARCH, len(augment.ACTION_NAMES))
    path = tmp_path_factory.mktemp("ckpt") / "pretrained.pt"
    torch.save({"encoder": enc.state_dict(), "predictor": pred.state_dict(), "target_encoder": enc.state_dict(),
                "config": ARCH}, path)
    return path


def run(ckpt, out, protocol, *flags):  # the one-head protocols predict color; multitask every label (or --tasks)
    label = [] if finetune.PROTOCOLS[protocol]["heads"] == "tasks" else ["--label", "color"]
    return finetune.main(["--protocol", protocol, "--ckpt", str(ckpt), "--data", "shapes", *label,
                          "--batch_size", "32", "--train_images", "256",
                          "--val_images", "64", *flags, "--out_dir", str(out)])


@pytest.fixture
def captured(monkeypatch):
    """The models load_models built, to inspect them after a run."""
    got = {}
    def spy(cfg):
        got["encoder"], got["predictor"], got["pretrained"] = out = load(cfg)
        return out
    load = finetune.load_models
    monkeypatch.setattr(finetune, "load_models", spy)
    return got


def color_chance():
    import data
    ds = data.build_dataset("shapes", split="val", size=32)
    return 100.0 / ds.num_classes[list(ds.label_names).index("color")]


def test_layer_decay_scale_is_decay_power_of_depth_from_top():
    L, d = 12, 0.65
    assert finetune.layer_decay_scale("patch_embed.proj.weight", L, d) == pytest.approx(d ** 13)
    assert finetune.layer_decay_scale("pos_embed", L, d) == pytest.approx(d ** 13)
    for i in range(L):
        assert finetune.layer_decay_scale(f"blocks.{i}.attn.qkv.weight", L, d) == pytest.approx(d ** (L - i))
    assert finetune.layer_decay_scale("norm.weight", L, d) == 1.0
    assert finetune.layer_decay_scale("head.weight", L, d) == 1.0


def test_encoder_param_groups_get_layer_decay_and_head_full_lr():
    enc, pred = M.build_models(ARCH, len(augment.ACTION_NAMES))
    cfg = dict(finetune.CONFIG, protocol="end_to_end")
    clf, scale = finetune.build(cfg, enc, pred, True, [3, 4, 5], [1])
    L = len(enc.blocks)
    assert scale("encoder.patch_embed.proj.weight") == pytest.approx(0.65 ** (L + 1))
    assert scale("encoder.blocks.0.mlp.fc1.weight") == pytest.approx(0.65 ** L)
    assert scale(f"encoder.blocks.{L - 1}.norm1.weight") == pytest.approx(0.65)
    assert scale("heads.0.linear.weight") == 1.0
    assert scale("predictor.predictor_blocks.0.attn.qkv.weight") == pytest.approx(0.1)  # pretrained: lr / 10
    assert finetune.build(cfg, enc, pred, False, [3, 4, 5], [1])[1]("predictor.mask_token") == 1.0


@pytest.mark.parametrize("protocol,flags", [("linear", ["--epochs", "4", "--linear_lrs", "0.03,0.3"]),
                                            ("attentive", ["--epochs", "4", "--blr", "0.04", "--crop_scale", "0.5,1"])])
def test_probes_beat_chance_and_keep_encoder_frozen(ckpt, tmp_path, capsys, captured, protocol, flags):
    """The linear probe's grid is as long as --linear_lrs says (a list default: any length), the best head counts."""
    metrics = run(ckpt, tmp_path, protocol, "--val_images", "128", *flags)
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{protocol} top1 {metrics['top1']:.2f}"
    assert metrics["top1"] > 2 * color_chance(), metrics
    grid = sorted(k for k in metrics if k.startswith("top1_lr"))
    assert grid == ([] if protocol != "linear" else ["top1_lr0.03", "top1_lr0.3"]), grid
    if protocol == "linear":
        assert metrics["top1"] == max(metrics[k] for k in grid) == metrics[f"top1_lr{metrics['best_lr']:g}"]
    assert_frozen(ckpt, captured["encoder"])


def assert_frozen(ckpt, encoder):
    ref, after = load(ckpt)["target_encoder"], encoder.state_dict()
    assert ref.keys() == after.keys() and all(torch.equal(ref[k], after[k].cpu()) for k in ref)
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training


def test_predictor_protocol_trains_predictor_only(ckpt, tmp_path, captured):
    metrics = run(ckpt, tmp_path, "predictor", "--max_steps", "2", "--model", "micro")  # agrees with the checkpoint
    assert metrics["step"] == 2 and 0 <= metrics["top1"] <= 100 and captured["pretrained"]
    assert_frozen(ckpt, captured["encoder"])
    saved, ref = load(tmp_path / "latest.pt")["model"], load(ckpt)["predictor"]
    assert all(torch.equal(saved[f"predictor.{k}"], v) for k, v in ref.items() if k.endswith("pos_embed"))
    assert not torch.equal(saved["predictor.predictor_embed.weight"], ref["predictor_embed.weight"])


def test_encoder_finetuning_resumes_exactly_from_the_target_encoder(ckpt, tmp_path, capsys):
    """2 steps + resume to 4 == 4 straight steps (mixup/cutmix, drop path, RandAugment, erasing all seeded by
    step / sample); and finetuning starts from the checkpoint's target encoder, not the online one."""
    sd = load(ckpt)
    sd["target_encoder"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in sd["target_encoder"].items()}
    torch.save(sd, tmp_path / "ck.pt")
    flags = ["--epochs", "2", "--warmup_epochs", "1"]
    run(tmp_path / "ck.pt", tmp_path / "a", "encoder", *flags, "--max_steps", "2")
    resumed = run(tmp_path / "ck.pt", tmp_path / "a", "encoder", *flags, "--max_steps", "4", "--resume", "latest")
    straight = run(tmp_path / "ck.pt", tmp_path / "b", "encoder", *flags, "--max_steps", "4")
    assert resumed == straight and resumed["step"] == 4
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"encoder top1 {straight['top1']:.2f}"
    a, b = (load(tmp_path / d / "latest.pt") for d in ("a", "b"))
    assert a["step"] == 4 and all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    moved = a["model"]["encoder.blocks.0.attn.qkv.weight"] - sd["target_encoder"]["blocks.0.attn.qkv.weight"]
    assert 0 < moved.abs().max() < 0.005  # trained, starting from the target encoder (the online one is 0.01 away)


def test_end_to_end_and_multitask_run(ckpt, tmp_path, capsys):
    m = run(ckpt, tmp_path / "e2e", "end_to_end", "--max_steps", "2")
    assert m["step"] == 2 and "top5" in m  # 6 colors: top-5 reported
    m = run(ckpt, tmp_path / "mt", "multitask", "--tasks", "shape,count", "--max_steps", "2")
    assert {"top1_shape", "top1_count"} <= m.keys()
    assert m["top1"] == pytest.approx((m["top1_shape"] + m["top1_count"]) / 2)
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"multitask top1 {m['top1']:.2f}"
    assert load(tmp_path / "mt" / "latest.pt")["model"]["task_token"].shape[0] == 2


def multitask_script():  # scripts/ is not a package: load scripts/multitask_baseline.py as a module
    spec = importlib.util.spec_from_file_location("multitask_baseline", ROOT / "scripts" / "multitask_baseline.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_multitask_baseline_script_adds_one_single_task_predictor_per_task(ckpt, tmp_path, capsys):
    script = multitask_script()
    flags = ["--ckpt", str(ckpt), "--batch_size", "32", "--train_images", "64",
             "--val_images", "32", "--max_steps", "1", "--out_dir", str(tmp_path)]
    m = script.main(["--tasks", "shape,count", *flags])
    alone = finetune.main(["--protocol", "predictor", "--label", "count", *flags, "--out_dir", str(tmp_path / "p")])
    assert m["single_top1_count"] == alone["top1"]  # the same run as finetune.py --protocol predictor
    assert m["single_top1"] == pytest.approx((m["single_top1_shape"] + m["single_top1_count"]) / 2)
    assert m["top1"] == pytest.approx((m["top1_shape"] + m["top1_count"]) / 2)
    assert (tmp_path / "single_shape" / "latest.pt").is_file()
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"predictor top1 {alone['top1']:.2f}" and f"multitask top1 {m['top1']:.2f}" in out


def test_multitask_baseline_equal_images_gives_the_multitask_run_an_epoch_per_task(ckpt, tmp_path, capsys):
    """--equal images: each head of the multitask predictor sees a batch's share, so it gets --epochs × the tasks,
    the single-task runs --epochs (a step each here: 64 images, batch 32, 2 steps an epoch, stopped at 1)."""
    script = multitask_script()
    tasks = ["shape", "count"]
    m = script.main(["--ckpt", str(ckpt), "--batch_size", "32", "--train_images", "64", "--val_images", "32",
                     "--epochs", "3", "--max_steps", "1", "--tasks", ",".join(tasks), "--equal", "images",
                     "--out_dir", str(tmp_path)])
    assert (m["epochs"], m["single_epochs"]) == (3 * len(tasks), 3)
    assert load(tmp_path / "latest.pt")["config"]["epochs"] == 3 * len(tasks)
    assert all(load(tmp_path / f"single_{t}" / "latest.pt")["config"]["epochs"] == 3 for t in tasks)
    assert "equal" not in load(tmp_path / "latest.pt")["config"]  # the script's own key stays out of finetune.py
    assert f"'epochs': {3 * len(tasks)}, 'single_epochs': 3" in capsys.readouterr().out


# issue 27 #17: a --label or --tasks that the protocol would ignore, or a task that would get a second (or an
# empty-named) head, is one line at start-up, before any network is built or any file touched
TINY = ("--random_init true --data shapes --img_size 16 --patch_size 4 --model micro --pred_depth 1 --pred_width 32 "
        "--train_images 16 --val_images 8 --batch_size 8 --max_steps 1 --workers 0").split()


@pytest.mark.parametrize("args, message", [
    ("--protocol multitask --tasks ,", "--tasks ',' has an empty task name"),
    ("--protocol multitask --tasks shape,", "--tasks 'shape,' has an empty task name"),
    ("--protocol multitask --tasks shape,shape", "--tasks 'shape,shape' repeats task shape;"),
    ("--protocol multitask --tasks count,shape,color,count", "repeats task count;"),
    ("--protocol predictor --tasks count", "--tasks applies to --protocol multitask only; --protocol predictor takes "
                                           "--label"),
    ("--protocol linear --tasks color,count", "--tasks applies to --protocol multitask only"),
    ("--tasks count", "--tasks applies to --protocol multitask only; --protocol linear"),  # the default protocol
    ("--protocol multitask --label count", "--label applies to --protocol linear, attentive, predictor, encoder, "
                                           "end_to_end only; --protocol multitask takes --tasks"),
    ("--protocol multitask --label count --tasks count", "--label applies to"),
])
def test_label_and_tasks_the_protocol_would_ignore_or_duplicate_are_refused(tmp_path, monkeypatch, capsys, args,
                                                                            message):
    monkeypatch.setattr(finetune, "load_models", lambda cfg: pytest.fail("a network was built"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        finetune.main(TINY + args.split() + ["--out_dir", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("finetune.py: error: ") and message in err, err
    assert not out.exists()


def test_multitask_baseline_refuses_label(tmp_path, capsys):  # it was ignored: each single-task run sets its own
    script = multitask_script()
    with pytest.raises(SystemExit) as e:
        script.main(TINY + ["--label", "color", "--out_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"{script.PROG}: error: --label applies to --protocol linear"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("protocol,flags", [(p, []) for p in finetune.PROTOCOLS] +
                         [("predictor", ["--predictor_init", "random"]), ("linear", ["--linear_lrs", "0.05"])])
def test_each_protocol_does_what_its_table_row_says(ckpt, tmp_path, monkeypatch, protocol, flags):
    """One step at the peak lr (no warmup): the encoder moves iff the row trains it, the predictor iff the row uses
    it, at the row's lr factor when pretrained; the head, the head count, the MAE recipe, the feature cache and the
    base lr are the row's."""
    row, got = finetune.PROTOCOLS[protocol], {}
    load, build, make_adamw, extract = (finetune.load_models, finetune.build, finetune.common.make_adamw,
                                        finetune.extract)

    def spy_load(cfg):
        out = load(cfg)
        got["models"], got["before"] = out, [{k: v.clone() for k, v in m.state_dict().items()} for m in out[:2]]
        return out
    monkeypatch.setattr(finetune, "load_models", spy_load)
    monkeypatch.setattr(finetune, "build", lambda *a: got.setdefault("clf", build(*a)))
    monkeypatch.setattr(finetune.common, "make_adamw", lambda *a, **k: got.setdefault("opt", make_adamw(*a, **k)))
    monkeypatch.setattr(finetune, "extract", lambda *a: got.setdefault("extracted", []).append(1) or extract(*a))
    run(ckpt, tmp_path, protocol, "--max_steps", "1", "--warmup_epochs", "0", "--batch_size", "16", "--train_images",
        "32", "--val_images", "16", *flags)
    (encoder, predictor, pretrained), (clf, scale) = got["models"], got["clf"]
    moved = [any(not torch.equal(v.cpu(), before[k].cpu()) for k, v in m.state_dict().items())
             for m, before in zip((encoder, predictor), got["before"])]
    assert moved[0] == (row["encoder"] == "trained") == (clf.encoder is encoder)
    if row["encoder"] == "frozen":
        assert_frozen(ckpt, encoder)
    assert moved[1] == (row["predictor"] is not None) == (clf.predictor is predictor)
    assert pretrained == (row["predictor"] is not None and not flags)

    lr = {id(p): g["lr"] for g in got["opt"].param_groups for p in g["params"]}
    head_lr = [lr[id(h[-1].weight if isinstance(h, torch.nn.Sequential) else h.linear.weight)] for h in clf.heads]
    lrs = (0.05,) if "--linear_lrs" in flags else finetune.CONFIG["linear_lrs"]  # a grid of one lr is a grid too
    assert head_lr == pytest.approx(list(lrs) if row["heads"] == "grid" else [row["blr"] * 16 / 256] * len(head_lr))
    if row["predictor"] is not None:
        assert row["predictor"] == 0.1  # §5: a pretrained predictor gets 1/10 of the lr, a random one all of it
        factor = row["predictor"] if pretrained else 1.0
        assert lr[id(predictor.predictor_embed.weight)] == pytest.approx(factor * head_lr[0])
    if row["encoder"] == "trained":  # layer-wise lr decay: the first block learns slower than the last
        assert lr[id(encoder.blocks[0].attn.qkv.weight)] < lr[id(encoder.blocks[-1].attn.qkv.weight)] < head_lr[0]

    kind = {"linear": torch.nn.BatchNorm1d, "attentive": finetune.AttentiveHead, "pooled": torch.nn.LayerNorm}
    assert all(isinstance(h if row["head"] == "attentive" else h[0], kind[row["head"]]) for h in clf.heads)
    assert clf.pool == (row["head"] == "pooled")
    assert len(clf.heads) == {"grid": len(lrs), "label": 1, "tasks": 3}[row["heads"]]  # Shapes: shape, color, count
    assert (max(b.drop_path.p for b in encoder.blocks) > 0) == row["mae"]
    assert bool(got.get("extracted")) == row["cached"]


def test_random_init_takes_the_checkpoints_architecture_and_none_of_its_weights(ckpt):
    """--random_init true --ckpt CKPT: the random baseline of CKPT's own architecture (scripts pass the checkpoint,
    not a copy of its flags); no --ckpt: RANDOM_ARCH under the flags given."""
    ref = torch.load(ckpt)
    cfg = dict(finetune.CONFIG, protocol="predictor", ckpt=str(ckpt), random_init=True)
    torch.manual_seed(1)
    enc, pred, pretrained = finetune.load_models(cfg)
    assert not pretrained and {k: cfg[k] for k in ARCH} == ARCH
    for net, key, name in ((enc, "target_encoder", "blocks.0.attn.qkv.weight"), (pred, "predictor", "mask_token")):
        assert net.state_dict().keys() == ref[key].keys()  # the same architecture ...
        assert not torch.equal(net.state_dict()[name], ref[key][name])  # ... freshly drawn
    cfg = dict(finetune.CONFIG, protocol="linear", random_init=True, pred_depth=3)
    finetune.load_models(cfg)
    assert cfg["img_size"] == finetune.RANDOM_ARCH["img_size"] and cfg["pred_depth"] == 3


def test_each_protocol_has_its_own_default_out_dir(ckpt, tmp_path, monkeypatch):
    """Without --out_dir, a protocol writes runs/finetune_<protocol>: a second protocol is not refused for the first's
    folder (the README runs several one after another)."""
    monkeypatch.chdir(tmp_path)
    for protocol in ("linear", "attentive"):
        finetune.main(["--protocol", protocol, "--ckpt", str(ckpt), "--data", "shapes", "--label", "color",
                       "--batch_size", "32", "--train_images", "64", "--val_images", "32", "--epochs", "1"])
        assert (tmp_path / "runs" / f"finetune_{protocol}" / "latest.pt").is_file()
