"""augment.py: batched photometric ops equal torchvision's, the action layout, determinism, probabilities. Widths,
MRR sources and reference op sequences are derived from augment's names (ACTION_NAMES, DESTRUCTIVE, DESTRUCTIVE_OPS),
so that these tests hold for any appended transform (test_augment_extension.py checks that they do); only the
comparisons with torchvision name the transforms they compare."""
import dataclasses
import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

import augment as A

NJ = len(A.JITTER)  # a_{x→y}'s jitter columns; the destructive flags follow


def close(a, b, atol=0.0, what=""):
    """a equals b to atol (0: bit for bit). A failure is torch's short message (how many elements differ, the
    largest difference and where), never a dump of the tensors."""
    torch.testing.assert_close(a, b, rtol=0, atol=atol, msg=lambda m: f"{what}: {m}" if what else m)


@pytest.fixture
def imgs():
    return torch.rand(4, 3, 20, 24, generator=torch.Generator().manual_seed(0))


OPS = [  # ours (batched, per-sample factor), torchvision's (one image, one value), values per row
    (A.adjust_brightness, TF.adjust_brightness, [0.6, 1.0, 1.3, 1.4]),
    (A.adjust_contrast, TF.adjust_contrast, [0.6, 1.0, 1.2, 1.4]),
    (A.adjust_saturation, TF.adjust_saturation, [0.0, 0.8, 1.0, 1.8]),
    (A.adjust_hue, TF.adjust_hue, [-0.1, 0.0, 0.05, 0.5]),
]


@pytest.mark.parametrize("ours, theirs, values", OPS)
def test_jitter_ops_match_torchvision_per_row(imgs, ours, theirs, values):
    out = ours(imgs, torch.tensor(values))
    for b, v in enumerate(values):
        close(out[b], theirs(imgs[b], v), 1e-5, f"{ours.__name__}({v})")


def test_destructive_ops_match_torchvision(imgs):
    gray = A.grayscale(imgs).expand_as(imgs)
    sig = torch.tensor([0.1, 0.7, 1.3, 2.0])
    blur = A.gaussian_blur(imgs, sig, 7)
    sol = A.solarize(imgs, 0.5)
    for b in range(4):
        close(gray[b], TF.rgb_to_grayscale(imgs[b], num_output_channels=3), 1e-5, f"grayscale, image {b}")
        close(blur[b], TF.gaussian_blur(imgs[b], [7, 7], [float(sig[b])] * 2), 1e-5, f"blur, image {b}")
        close(sol[b], TF.solarize(imgs[b], 0.5), 1e-5, f"solarize, image {b}")


def _tv_blur(img, p, b, cfg):
    k = A.kernel_size_for(min(img.shape[-2:]), cfg.blur_kernel_frac)
    return TF.gaussian_blur(img, [k, k], [float(p["sigma"][b])] * 2)


# torchvision's version of the destructive transforms compared with it: (one image, the batch's parameters, its row,
# config) → the image transformed. Not a list of all transforms: the tests below take those from augment.
TORCHVISION = {
    "grayscale": lambda img, p, b, cfg: TF.rgb_to_grayscale(img, num_output_channels=3),
    "blur": _tv_blur,
    "solarize": lambda img, p, b, cfg: TF.solarize(img, cfg.solarize_threshold),
}


def test_destructive_op_entries_use_the_config_and_match_torchvision(imgs):
    # DESTRUCTIVE_OPS' entries as apply_params calls them: kernel size and threshold come from the config
    cfg = dataclasses.replace(A.IWM, blur_kernel_frac=0.3, solarize_threshold=0.3)
    p = A.sample_params(4, A.IWM, destructive=True, generator=torch.Generator().manual_seed(3))
    for name, ref in TORCHVISION.items():
        out = A.DESTRUCTIVE_OPS[name](imgs, p, cfg)
        for b in range(4):
            close(out[b], ref(imgs[b], p, b, cfg), 1e-5, f"{name}, image {b}")


def test_apply_params_follows_fixed_order():
    """Jitter in the fixed order brightness, contrast, saturation, hue (torchvision's ops), then the destructive
    transforms an image's flags select, in DESTRUCTIVE's order: image i gets the i-th transform alone, the one after
    them every transform, the last one none."""
    n = len(A.DESTRUCTIVE) + 2
    imgs = torch.rand(n, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    p = A.sample_params(n, A.IWM, destructive=True, generator=torch.Generator().manual_seed(3))
    p["jitter"][:] = True
    for i, name in enumerate(A.DESTRUCTIVE):
        p[name][:] = False
        p[name][i] = p[name][-2] = True
    out = A.apply_params(imgs, p)
    for b in range(n):
        ref = TF.adjust_brightness(imgs[b], float(p["brightness"][b]))
        ref = TF.adjust_contrast(ref, float(p["contrast"][b]))
        ref = TF.adjust_saturation(ref, float(p["saturation"][b]))
        ref = TF.adjust_hue(ref, float(p["hue"][b]))[None]
        row = {k: v[b:b + 1] for k, v in p.items()}
        for name in A.DESTRUCTIVE:
            if p[name][b]:
                ref = A.DESTRUCTIVE_OPS[name](ref, row, A.IWM)
        close(out[b], ref[0], 1e-5, f"image {b}")


def test_action_layout():
    """a_{x→y} = the jitter differences in JITTER's order, then the source's destructive flags in DESTRUCTIVE's."""
    assert A.JITTER == ("brightness", "contrast", "saturation", "hue") and A.ACTION_NAMES == A.JITTER + A.DESTRUCTIVE
    flags = [float(i % 2 == 0) for i in range(len(A.DESTRUCTIVE))]  # on, off, on, ...
    src = {"brightness": 1.2, "contrast": 0.9, "saturation": 1.0, "hue": 0.05, **dict(zip(A.DESTRUCTIVE, flags))}
    tgt = {"brightness": 0.8, "contrast": 1.1, "saturation": 1.3, "hue": -0.02, **dict.fromkeys(A.DESTRUCTIVE, 0.0)}
    src, tgt = ({k: torch.tensor([v]) if k in A.JITTER else torch.tensor([v > 0]) for k, v in d.items()}
                for d in (src, tgt))
    close(A.action_from_params(src, tgt, encoding="raw"), torch.tensor([[-0.4, 0.2, 0.3, -0.07] + flags]), 1e-6, "raw")
    s = A.action_scale(A.IWM)
    expect = [math.log(0.8 / 1.2) / s[0], math.log(1.1 / 0.9) / s[1], math.log(1.3) / s[2], -0.07 / s[3]]
    close(A.action_from_params(src, tgt), torch.tensor([expect + flags]), 1e-5, "log_std")
    for enc in A.ENCODINGS:  # same params → null action
        close(A.action_from_params(tgt, tgt, encoding=enc), torch.zeros(1, len(A.ACTION_NAMES)), what=enc)


def test_log_std_action_has_unit_std_and_tells_equal_differences_apart():
    g = torch.Generator().manual_seed(0)
    for name in ("iwm", "strong"):
        cfg = dataclasses.replace(A.PRESETS[name], jitter_p=1.0)
        a = A.action_from_params(A.sample_params(20000, cfg, destructive=True, generator=g),
                                 A.sample_params(20000, cfg, destructive=False, generator=g), cfg)
        close(a[:, :NJ].std(0), torch.ones(NJ), 0.03, f"{name}: std of the jitter columns")
    one = lambda b: {**{k: torch.tensor([1.0]) for k in A.FACTORS}, "brightness": torch.tensor([b]),
                     "hue": torch.tensor([0.0]), **{k: torch.tensor([False]) for k in A.DESTRUCTIVE}}
    # 0.6 → 1.0 and 1.0 → 1.4 are the same raw difference but different image changes
    raw = [float(A.action_from_params(one(s), one(t), encoding="raw")[0, 0]) for s, t in ((0.6, 1.0), (1.0, 1.4))]
    enc = [float(A.action_from_params(one(s), one(t))[0, 0]) for s, t in ((0.6, 1.0), (1.0, 1.4))]
    assert math.isclose(raw[0], raw[1], abs_tol=1e-6) and not math.isclose(enc[0], enc[1], abs_tol=1e-3)


def test_make_views_shapes_determinism_and_target_clean():
    imgs = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    x, y, a, p = A.make_views(imgs, generator=torch.Generator().manual_seed(0))
    x2, y2, a2, _ = A.make_views(imgs, generator=torch.Generator().manual_seed(0))
    x3, _, _, _ = A.make_views(imgs, generator=torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (8, 3, 32, 32) and a.shape == (8, len(A.ACTION_NAMES)) and x.dtype == torch.float32
    for ours, again, what in ((x, x2, "source"), (y, y2, "target"), (a, a2, "action")):
        close(ours, again, what=f"{what} from the same seed")
    assert not torch.equal(x, x3)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert not any(p["target"][k].any() for k in A.DESTRUCTIVE)  # the target keeps all information
    # the action's flags are the source's destructive transforms
    close(a[:, NJ:], torch.stack([p["source"][k] for k in A.DESTRUCTIVE], 1).float(), what="flags")


def test_probabilities():
    cfg = A.IWM
    p = A.sample_params(4000, cfg, destructive=True, generator=torch.Generator().manual_seed(0))
    assert abs(float(p["jitter"].float().mean()) - cfg.jitter_p) < 0.03
    for k in A.DESTRUCTIVE:
        assert abs(float(p[k].float().mean()) - getattr(cfg, f"{k}_p")) < 0.03, k
    on = p["jitter"]
    assert p["brightness"][on].min() >= 0.6 and p["brightness"][on].max() <= 1.4
    assert p["hue"][on].abs().max() <= 0.1 and torch.all(p["hue"][~on] == 0)
    assert torch.all(p["contrast"][~on] == 1)
    strong = A.sample_params(4000, A.PRESETS["strong"], destructive=False, generator=torch.Generator().manual_seed(0))
    assert strong["saturation"].max() > 1.5  # SimCLR strength 0.8


def test_ijepa_preset_is_identity():
    imgs = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    x, y, a, _ = A.make_views(imgs, A.PRESETS["ijepa"], generator=torch.Generator().manual_seed(0))
    close(x, imgs / 255, what="source")
    close(y, imgs / 255, what="target")
    close(a, torch.zeros(4, len(A.ACTION_NAMES)), what="action")


def test_cpu_generator_drives_other_device_and_b1():
    # B = 1 (inside a loader worker) and float input work the same way
    img = torch.rand(1, 3, 16, 16)
    x, y, a, _ = A.make_views(img, generator=torch.Generator().manual_seed(5))
    assert x.shape == (1, 3, 16, 16) and a.shape == (1, len(A.ACTION_NAMES))


def test_cpu_chunking_gives_the_whole_batch_result(monkeypatch):
    # 37 images: two full chunks of 16 and a ragged one; every destructive op forced on somewhere in the batch
    g = torch.Generator().manual_seed(3)
    img = torch.rand(37, 3, 24, 24, generator=g)
    p = A.sample_params(37, A.IWM, destructive=True, generator=g)
    for k in A.DESTRUCTIVE:
        p[k][::3] = True
    chunked = A.apply_params(img, p)
    monkeypatch.setattr(A, "CPU_CHUNK", 1000)
    close(chunked, A.apply_params(img, p), what="chunked vs whole batch")


@pytest.mark.parametrize("n, chunk", [(5, A.CPU_CHUNK), (24, A.CPU_CHUNK), (37, 1000)])  # 1000: as on a GPU
def test_make_views_one_pass_gives_each_views_own_result(monkeypatch, n, chunk):
    """make_views runs apply_params once over source and target stacked (half the kernel launches on a GPU), unless
    the CPU would chunk the batch anyway: each view must be bit for bit what apply_params gives for that view's
    parameters alone, either way."""
    monkeypatch.setattr(A, "CPU_CHUNK", chunk)
    calls = []
    monkeypatch.setattr(A, "_apply_needed", lambda *a, f=A._apply_needed: calls.append(len(a[0])) or f(*a))
    imgs = torch.randint(0, 256, (n, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    x, y, _, p = A.make_views(imgs, A.PRESETS["strong"], generator=torch.Generator().manual_seed(1))
    two_passes = [min(chunk, n - i) for i in range(0, n, chunk)] * 2
    assert calls == (two_passes if 2 * n > chunk else [2 * n]), calls
    for view, params, what in ((x, p["source"], "source"), (y, p["target"], "target")):
        close(view, A.apply_params(A.to_float(imgs), params, A.PRESETS["strong"]), what=what)


# apply_params skips the ops that no image needs (issue 14). The reference below is apply_params as it was before,
# every op on every image then torch.where: the new one must give the same bits for any parameters.
def _reference_apply_params(images, p, cfg=A.IWM):
    sel = lambda flag, new, old: torch.where(flag.view(-1, 1, 1, 1), new, old)
    x = A.adjust_brightness(images, p["brightness"])
    x = A.adjust_contrast(x, p["contrast"])
    x = A.adjust_saturation(x, p["saturation"])
    x = sel(p["jitter"], A.adjust_hue(x, p["hue"]), images)
    for name in A.DESTRUCTIVE:
        x = sel(p[name], A.DESTRUCTIVE_OPS[name](x, p, cfg), x)
    return x


FLAT = dataclasses.replace(A.IWM, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)  # jitter on, factors 1
CASES = [(name, destructive) for name in ("iwm", "jitter", "strong", "ijepa") for destructive in (True, False)]


def _params(n, cfg, destructive, seed, force=None):
    p = A.sample_params(n, cfg, destructive=destructive, generator=torch.Generator().manual_seed(seed))
    if force is not None:  # every switch of every image set to `force`: all-on / all-off
        for k in ("jitter",) + A.DESTRUCTIVE:
            p[k][:] = force
    return p


@pytest.mark.parametrize("n", [5, 37])  # 37: CPU chunks of 16, 16 and 5, decided chunk by chunk
@pytest.mark.parametrize("preset, destructive", CASES)
def test_apply_params_skipping_is_bit_identical(n, preset, destructive):
    cfg = A.PRESETS[preset]
    img = torch.rand(n, 3, 20, 24, generator=torch.Generator().manual_seed(n))
    for seed in range(3):
        p = _params(n, cfg, destructive, seed)
        close(A.apply_params(img, p, cfg), _reference_apply_params(img, p, cfg), what=f"{preset}, seed {seed}")


@pytest.mark.parametrize("cfg", [A.IWM, FLAT], ids=["iwm", "flat"])
@pytest.mark.parametrize("force", [True, False], ids=["all_on", "all_off"])
def test_apply_params_all_on_all_off_bit_identical(cfg, force):
    img = torch.rand(37, 3, 17, 17, generator=torch.Generator().manual_seed(1))
    p = _params(37, cfg, True, 0, force)
    ref = _reference_apply_params(img, p, cfg)
    close(A.apply_params(img, p, cfg), ref, what="CPU path")
    need = dict.fromkeys(("jitter",) + A.FACTORS + A.DESTRUCTIVE, True)
    close(A._apply_needed(img, p, cfg, need), ref, what="accelerator path")


def test_apply_params_runs_only_needed_ops(monkeypatch):
    calls = []
    record = lambda name, op: lambda *a: calls.append(name) or op(*a)
    for name in ("adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue"):
        monkeypatch.setattr(A, name, record(name, getattr(A, name)))
    for name, op in list(A.DESTRUCTIVE_OPS.items()):
        monkeypatch.setitem(A.DESTRUCTIVE_OPS, name, record(name, op))
    img = torch.rand(4, 3, 16, 16)
    out = A.apply_params(img, _params(4, A.PRESETS["ijepa"], True, 0))
    assert calls == [] and torch.equal(out, img) and out is not img  # I-JEPA: nothing runs, still a new tensor
    p = _params(4, FLAT, False, 0)
    p["jitter"][:] = True
    A.apply_params(img, p, FLAT)
    assert calls == ["adjust_hue"]  # factors 1 are skipped, a zero hue shift is not (not an exact identity)
    for name in A.DESTRUCTIVE:  # one image flagged for one transform: that transform alone runs
        calls.clear()
        p = _params(4, A.IWM, True, 0, force=False)
        p[name][2] = True
        A.apply_params(img, p)
        assert calls == [name]


def test_needed_ops_never_read_accelerator_tensors():
    # parameters off the CPU are never read (a host sync per step on GPU): every op counts as needed
    p = {k: v.to("meta") for k, v in _params(4, A.PRESETS["ijepa"], True, 0).items()}
    assert all(A._needed_ops(p).values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_apply_params_cuda_cpu_params_skip_bit_identical():
    img = torch.rand(37, 3, 32, 32, generator=torch.Generator().manual_seed(0)).cuda()
    for preset, destructive in CASES:
        p = _params(37, A.PRESETS[preset], destructive, 0)
        on_gpu = {k: v.cuda() for k, v in p.items()}
        skipped = A.apply_params(img, p, A.PRESETS[preset])  # CPU parameters: decided on the host, then copied
        assert skipped.device == img.device
        close(skipped, A.apply_params(img, on_gpu, A.PRESETS[preset]), what=preset)
        ref = _reference_apply_params(img.cpu(), p, A.PRESETS[preset])
        close(skipped.cpu(), ref, 3e-3, preset)  # the blur's cuDNN convolutions run in TF32 by default


# augment.py is the single source of truth for a_{x→y} (issue 13): draws, presets, MRR sources and the action width
# all follow its names. The draw layout is pinned below, then a dummy destructive transform is registered the way a
# real one would be and every consumer must see it without another edit.
def test_draw_layout_is_one_row_per_name_then_sigma():
    n, cfg = 500, A.IWM
    p = A.sample_params(n, cfg, destructive=True, generator=torch.Generator().manual_seed(0))
    u = torch.rand(len(A.ACTION_NAMES) + 2, n, generator=torch.Generator().manual_seed(0))
    row = lambda name: u[1 + A.ACTION_NAMES.index(name)]  # row 0: the jitter switch
    jitter = u[0] < 0.8
    close(p["jitter"], jitter, what="jitter")
    close(p["brightness"], torch.where(jitter, 0.6 + row("brightness") * 0.8, torch.ones(n)), what="brightness")
    close(p["hue"], torch.where(jitter, (2 * row("hue") - 1) * 0.1, torch.zeros(n)), what="hue")
    for name in A.DESTRUCTIVE:
        close(p[name], row(name) < getattr(cfg, f"{name}_p"), what=name)
    close(p["sigma"], 0.1 + u[-1] * 1.9, what="sigma")


DUMMY = "dummy_negate"  # no real transform's name: registered below next to whatever augment.py defines
DummyConfig = dataclasses.make_dataclass("DummyConfig", [(f"{DUMMY}_p", float, 0.5)], bases=(A.AugmentConfig,),
                                         frozen=True)


@pytest.fixture
def dummy(monkeypatch):
    """A dummy destructive transform (1 − x): its name appended, a probability field (DummyConfig) and an op."""
    names = A.ACTION_NAMES + (DUMMY,)
    monkeypatch.setattr(A, "ACTION_NAMES", names)
    monkeypatch.setattr(A, "DESTRUCTIVE", names[NJ:])
    monkeypatch.setitem(A.DESTRUCTIVE_OPS, DUMMY, lambda x, p, cfg: 1.0 - x)
    return DummyConfig()


def test_new_destructive_op_gets_its_own_draw_and_is_applied(dummy):
    gen, n = lambda: torch.Generator().manual_seed(0), 1000
    p = A.sample_params(n, dummy, destructive=True, generator=gen())
    u = torch.rand(len(A.ACTION_NAMES) + 2, n, generator=gen())  # jitter switch, one row per name, then sigma
    close(p[DUMMY], u[-2] < 0.5, what="the new transform's own row, not sigma's")
    close(p["sigma"], 0.1 + u[-1] * 1.9, what="sigma, one row down")
    for name in A.DESTRUCTIVE[:-1]:  # the existing transforms keep their rows
        close(p[name], u[1 + A.ACTION_NAMES.index(name)] < getattr(dummy, f"{name}_p"), what=name)
    assert not A.sample_params(n, dummy, destructive=False, generator=gen())[DUMMY].any()  # never the target
    img = torch.rand(3, 3, 8, 8)
    q = _params(3, A.make_presets(dummy)["ijepa"], True, 0)
    q[DUMMY] = torch.tensor([True, False, False])
    out = A.apply_params(img, q, dummy)
    close(out[0], 1.0 - img[0], what="flagged image")
    close(out[1:], img[1:], what="the others")


def test_new_destructive_op_is_off_in_presets_and_clean_mrr_source(dummy):
    import evaluate_mrr as E
    prob = lambda cfg, name=DUMMY: getattr(cfg, f"{name}_p")
    presets = A.make_presets(dummy)
    assert prob(presets["iwm"]) == prob(presets["strong"]) == 0.5
    for name in ("jitter", "ijepa"):  # presets without destructive transforms do not apply the new one
        assert prob(presets[name]) == 0.0, name
        assert not A.sample_params(500, presets[name], destructive=True)[DUMMY].any()
    assert E.sources() == ("clean",) + A.DESTRUCTIVE and E.sources()[-1] == DUMMY
    assert prob(E.source_config(dummy, "clean")) == 0.0
    forced = E.source_config(dummy, DUMMY)
    assert prob(forced) == 1.0 and forced.jitter_p == 0.0
    assert all(prob(forced, name) == 0.0 for name in A.DESTRUCTIVE[:-1])
    with pytest.raises(ValueError, match="unknown MRR source"):
        E.source_config(dummy, "no_such_source")


def test_new_destructive_op_widens_the_action_and_the_mrr(dummy):
    import evaluate_mrr as E
    import model as M
    x, y, a, p = A.make_views(torch.rand(6, 3, 16, 16), dummy, generator=torch.Generator().manual_seed(0))
    assert a.shape == (6, len(A.ACTION_NAMES)) and A.ACTION_NAMES[-1] == DUMMY
    close(a[:, -1], p["source"][DUMMY].float(), what="the new flag")
    torch.manual_seed(0)
    enc, pred = M.build_models(dict(model="micro", img_size=16, patch_size=8, pred_depth=1, pred_width=32,
                                    cond="feature"), A.ACTION_NAMES)
    res = E.mrr_score(enc.eval(), enc, pred.eval(), torch.rand(1, 3, 16, 16), dummy, bank_size=4,
                      sources=E.sources())
    assert f"mrr/{DUMMY}" in res and pred.action_dim == len(A.ACTION_NAMES)


def test_every_destructive_name_needs_an_op_and_a_probability(dummy):
    A.check_names(DummyConfig)
    with pytest.raises(ValueError, match=DUMMY):
        A.check_names(A.AugmentConfig)  # no probability field
    with pytest.raises(ValueError, match=DUMMY):
        A.check_names(DummyConfig, {k: v for k, v in A.DESTRUCTIVE_OPS.items() if k != DUMMY})

