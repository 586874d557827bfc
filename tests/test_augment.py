"""augment.py: batched photometric ops equal torchvision's, the action layout, determinism, probabilities."""
import dataclasses
import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

import augment as A


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
        assert torch.allclose(out[b], theirs(imgs[b], v), atol=1e-5), (ours.__name__, v)


def test_destructive_ops_match_torchvision(imgs):
    gray = A.grayscale(imgs).expand_as(imgs)
    sig = torch.tensor([0.1, 0.7, 1.3, 2.0])
    blur = A.gaussian_blur(imgs, sig, 7)
    sol = A.solarize(imgs, 0.5)
    for b in range(4):
        assert torch.allclose(gray[b], TF.rgb_to_grayscale(imgs[b], num_output_channels=3), atol=1e-5)
        assert torch.allclose(blur[b], TF.gaussian_blur(imgs[b], [7, 7], [float(sig[b])] * 2), atol=1e-5)
        assert torch.allclose(sol[b], TF.solarize(imgs[b], 0.5), atol=1e-5)


def test_apply_params_follows_fixed_order(imgs):
    p = A.sample_params(4, A.IWM, destructive=True, generator=torch.Generator().manual_seed(3))
    p["jitter"][:] = True
    p["grayscale"][:] = torch.tensor([True, False, False, False])
    p["blur"][:] = torch.tensor([False, True, False, False])
    p["solarize"][:] = torch.tensor([False, False, True, False])
    out = A.apply_params(imgs, p)
    k = A.kernel_size_for(20, 0.1)
    for b in range(4):
        ref = TF.adjust_brightness(imgs[b], float(p["brightness"][b]))
        ref = TF.adjust_contrast(ref, float(p["contrast"][b]))
        ref = TF.adjust_saturation(ref, float(p["saturation"][b]))
        ref = TF.adjust_hue(ref, float(p["hue"][b]))
        if b == 0:
            ref = TF.rgb_to_grayscale(ref, num_output_channels=3)
        if b == 1:
            ref = TF.gaussian_blur(ref, [k, k], [float(p["sigma"][b])] * 2)
        if b == 2:
            ref = TF.solarize(ref, 0.5)
        assert torch.allclose(out[b], ref, atol=1e-5)


def test_action_layout():
    src = {"brightness": torch.tensor([1.2]), "contrast": torch.tensor([0.9]), "saturation": torch.tensor([1.0]),
           "hue": torch.tensor([0.05]), "grayscale": torch.tensor([True]), "blur": torch.tensor([False]),
           "solarize": torch.tensor([True])}
    tgt = {"brightness": torch.tensor([0.8]), "contrast": torch.tensor([1.1]), "saturation": torch.tensor([1.3]),
           "hue": torch.tensor([-0.02]), "grayscale": torch.tensor([False]), "blur": torch.tensor([False]),
           "solarize": torch.tensor([False])}
    a = A.action_from_params(src, tgt, encoding="raw")
    assert a.shape == (1, 7) and A.ACTION_NAMES[4] == "grayscale"
    assert torch.allclose(a, torch.tensor([[-0.4, 0.2, 0.3, -0.07, 1.0, 0.0, 1.0]]), atol=1e-6)
    s = A.action_scale(A.IWM)
    expect = [math.log(0.8 / 1.2) / s[0], math.log(1.1 / 0.9) / s[1], math.log(1.3) / s[2], -0.07 / s[3], 1, 0, 1]
    assert torch.allclose(A.action_from_params(src, tgt), torch.tensor([expect]), atol=1e-5)
    for enc in A.ENCODINGS:  # same params → null action
        assert torch.equal(A.action_from_params(tgt, tgt, encoding=enc), torch.zeros(1, 7))


def test_log_std_action_has_unit_std_and_tells_equal_differences_apart():
    g = torch.Generator().manual_seed(0)
    for name in ("iwm", "strong"):
        cfg = dataclasses.replace(A.PRESETS[name], jitter_p=1.0)
        a = A.action_from_params(A.sample_params(20000, cfg, destructive=True, generator=g),
                                 A.sample_params(20000, cfg, destructive=False, generator=g), cfg)
        assert torch.allclose(a[:, :4].std(0), torch.ones(4), atol=0.03), (name, a[:, :4].std(0))
    one = lambda b: {**{k: torch.tensor([1.0]) for k in A.JITTER[:3]}, "brightness": torch.tensor([b]),
                     "hue": torch.tensor([0.0]), **{k: torch.tensor([False]) for k in A.DESTRUCTIVE}}
    # 0.6 → 1.0 and 1.0 → 1.4 are the same raw difference but different image changes
    raw = [A.action_from_params(one(s), one(t), encoding="raw")[0, 0] for s, t in ((0.6, 1.0), (1.0, 1.4))]
    enc = [A.action_from_params(one(s), one(t))[0, 0] for s, t in ((0.6, 1.0), (1.0, 1.4))]
    assert torch.isclose(raw[0], raw[1]) and not torch.isclose(enc[0], enc[1])


def test_make_views_shapes_determinism_and_target_clean():
    imgs = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    x, y, a, p = A.make_views(imgs, generator=torch.Generator().manual_seed(0))
    x2, y2, a2, _ = A.make_views(imgs, generator=torch.Generator().manual_seed(0))
    x3, _, _, _ = A.make_views(imgs, generator=torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (8, 3, 32, 32) and a.shape == (8, len(A.ACTION_NAMES)) and x.dtype == torch.float32
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(a, a2)
    assert not torch.equal(x, x3)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert not any(p["target"][k].any() for k in A.DESTRUCTIVE)  # the target keeps all information
    # the action's flags are the source's destructive transforms
    assert torch.equal(a[:, 4:], torch.stack([p["source"][k] for k in A.DESTRUCTIVE], 1).float())


def test_probabilities():
    p = A.sample_params(4000, A.IWM, destructive=True, generator=torch.Generator().manual_seed(0))
    assert abs(p["jitter"].float().mean() - 0.8) < 0.03
    for k in A.DESTRUCTIVE:
        assert abs(p[k].float().mean() - 0.2) < 0.03
    on = p["jitter"]
    assert p["brightness"][on].min() >= 0.6 and p["brightness"][on].max() <= 1.4
    assert p["hue"][on].abs().max() <= 0.1 and torch.all(p["hue"][~on] == 0)
    assert torch.all(p["contrast"][~on] == 1)
    strong = A.sample_params(4000, A.PRESETS["strong"], destructive=False, generator=torch.Generator().manual_seed(0))
    assert strong["saturation"].max() > 1.5  # SimCLR strength 0.8


def test_ijepa_preset_is_identity():
    imgs = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    x, y, a, _ = A.make_views(imgs, A.PRESETS["ijepa"], generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, imgs / 255) and torch.equal(y, imgs / 255)
    assert torch.equal(a, torch.zeros(4, len(A.ACTION_NAMES)))


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
    whole = A.apply_params(img, p)
    assert torch.equal(chunked, whole) and chunked.shape == img.shape


# apply_params skips the ops that no image needs (issue 14). The reference below is apply_params as it was before,
# every op on every image then torch.where: the new one must give the same bits for any parameters.
from dataclasses import replace  # noqa: E402  (this block was appended)


def _reference_apply_params(images, p, cfg=A.IWM):
    sel = lambda flag, new, old: torch.where(flag.view(-1, 1, 1, 1), new, old)
    x = A.adjust_brightness(images, p["brightness"])
    x = A.adjust_contrast(x, p["contrast"])
    x = A.adjust_saturation(x, p["saturation"])
    x = sel(p["jitter"], A.adjust_hue(x, p["hue"]), images)
    x = sel(p["grayscale"], A.grayscale(x).expand_as(x), x)
    k = A.kernel_size_for(min(x.shape[-2:]), cfg.blur_kernel_frac)
    x = sel(p["blur"], A.gaussian_blur(x, p["sigma"], k), x)
    return sel(p["solarize"], A.solarize(x, cfg.solarize_threshold), x)


FLAT = replace(A.IWM, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)  # jitter on, every factor exactly 1
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
        assert torch.equal(A.apply_params(img, p, cfg), _reference_apply_params(img, p, cfg)), (preset, seed)


@pytest.mark.parametrize("cfg", [A.IWM, FLAT], ids=["iwm", "flat"])
@pytest.mark.parametrize("force", [True, False], ids=["all_on", "all_off"])
def test_apply_params_all_on_all_off_bit_identical(cfg, force):
    img = torch.rand(37, 3, 17, 17, generator=torch.Generator().manual_seed(1))
    p = _params(37, cfg, True, 0, force)
    assert torch.equal(A.apply_params(img, p, cfg), _reference_apply_params(img, p, cfg))
    need = {k: True for k in ("jitter", "brightness", "contrast", "saturation") + A.DESTRUCTIVE}
    assert torch.equal(A._apply_needed(img, p, cfg, need), _reference_apply_params(img, p, cfg))  # accelerator path


def test_apply_params_runs_only_needed_ops(monkeypatch):
    calls = []
    for name in ("adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue", "grayscale",
                 "gaussian_blur", "solarize"):
        op = getattr(A, name)
        monkeypatch.setattr(A, name, lambda *a, _op=op, _name=name: calls.append(_name) or _op(*a))
    img = torch.rand(4, 3, 16, 16)
    out = A.apply_params(img, _params(4, A.PRESETS["ijepa"], True, 0))
    assert calls == [] and torch.equal(out, img) and out is not img  # I-JEPA: nothing runs, still a new tensor
    p = _params(4, FLAT, False, 0)
    p["jitter"][:] = True
    A.apply_params(img, p, FLAT)
    assert calls == ["adjust_hue"]  # factors 1 are skipped, a zero hue shift is not (not an exact identity)
    calls.clear()
    p = _params(4, A.IWM, True, 0, force=False)
    p["blur"][2] = True
    A.apply_params(img, p)
    assert calls == ["gaussian_blur"]


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
        assert torch.equal(skipped, A.apply_params(img, on_gpu, A.PRESETS[preset])), preset
        ref = _reference_apply_params(img.cpu(), p, A.PRESETS[preset])
        assert torch.allclose(skipped.cpu(), ref, atol=3e-3)  # the blur's cuDNN convolutions run in TF32 by default


# augment.py is the single source of truth for a_{x→y} (issue 13): draws, presets, MRR sources and the action width
# all follow its names. The draw layout is pinned below, then a dummy destructive transform is registered the way a
# real one would be and every consumer must see it without another edit.
def test_draw_layout_is_one_row_per_name_then_sigma():
    p = A.sample_params(500, A.IWM, destructive=True, generator=torch.Generator().manual_seed(0))
    u = torch.rand(len(A.ACTION_NAMES) + 2, 500, generator=torch.Generator().manual_seed(0))
    jitter = u[0] < 0.8
    assert torch.equal(p["jitter"], jitter)
    assert torch.equal(p["brightness"], torch.where(jitter, 0.6 + u[1] * 0.8, torch.ones(500)))
    assert torch.equal(p["hue"], torch.where(jitter, (2 * u[4] - 1) * 0.1, torch.zeros(500)))
    for j, name in enumerate(A.DESTRUCTIVE, start=5):
        assert torch.equal(p[name], u[j] < 0.2), name
    assert torch.equal(p["sigma"], 0.1 + u[-1] * 1.9)


@dataclasses.dataclass(frozen=True)
class InvertConfig(A.AugmentConfig):
    invert_p: float = 0.5


@pytest.fixture
def invert(monkeypatch):
    """A dummy destructive transform: its name appended, a probability field (InvertConfig) and an op."""
    names = A.ACTION_NAMES + ("invert",)
    monkeypatch.setattr(A, "ACTION_NAMES", names)
    monkeypatch.setattr(A, "DESTRUCTIVE", names[len(A.JITTER):])
    monkeypatch.setitem(A.DESTRUCTIVE_OPS, "invert", lambda x, p, cfg: 1.0 - x)
    return InvertConfig()


def test_new_destructive_op_gets_its_own_draw_and_is_applied(invert):
    gen, n = lambda: torch.Generator().manual_seed(0), 1000
    p = A.sample_params(n, invert, destructive=True, generator=gen())
    u = torch.rand(len(A.ACTION_NAMES) + 2, n, generator=gen())  # jitter switch, 8 names, then sigma
    assert len(u) == 10 and torch.equal(p["invert"], u[8] < 0.5)  # its own row, not sigma's
    assert torch.equal(p["sigma"], 0.1 + u[9] * 1.9)
    assert torch.equal(p["blur"], u[6] < 0.2)  # the existing transforms keep their rows
    assert not A.sample_params(n, invert, destructive=False, generator=gen())["invert"].any()  # never the target
    img = torch.rand(3, 3, 8, 8)
    q = _params(3, A.make_presets(invert)["ijepa"], True, 0)
    q["invert"] = torch.tensor([True, False, False])
    out = A.apply_params(img, q, invert)
    assert torch.equal(out[0], 1.0 - img[0]) and torch.equal(out[1:], img[1:])


def test_new_destructive_op_is_off_in_presets_and_clean_mrr_source(invert):
    import evaluate_mrr as E
    presets = A.make_presets(invert)
    assert presets["iwm"].invert_p == presets["strong"].invert_p == 0.5
    for name in ("jitter", "ijepa"):  # presets without destructive transforms do not apply the new one
        assert presets[name].invert_p == 0.0, name
        assert not A.sample_params(500, presets[name], destructive=True)["invert"].any()
    assert E.sources() == ("clean", "grayscale", "blur", "solarize", "invert")
    assert E.source_config(invert, "clean").invert_p == 0.0
    forced = E.source_config(invert, "invert")
    assert forced.invert_p == 1.0 and forced.jitter_p == forced.grayscale_p == forced.blur_p == 0.0
    with pytest.raises(ValueError, match="unknown MRR source"):
        E.source_config(invert, "posterize")


def test_new_destructive_op_widens_the_action_and_the_mrr(invert):
    import evaluate_mrr as E
    import model as M
    x, y, a, p = A.make_views(torch.rand(6, 3, 16, 16), invert, generator=torch.Generator().manual_seed(0))
    assert a.shape == (6, 8) and torch.equal(a[:, -1], p["source"]["invert"].float())
    torch.manual_seed(0)
    enc, pred = M.build_models(dict(model="micro", img_size=16, patch_size=8, pred_depth=1, pred_width=32,
                                    cond="feature"), len(A.ACTION_NAMES))
    res = E.mrr_score(enc.eval(), enc, pred.eval(), torch.rand(1, 3, 16, 16), invert, bank_size=4,
                      sources=E.sources())
    assert "mrr/invert" in res and pred.action_dim == 8


def test_every_destructive_name_needs_an_op_and_a_probability(invert):
    A.check_names(InvertConfig)
    with pytest.raises(ValueError, match="invert"):
        A.check_names(A.AugmentConfig)  # no invert_p field
    with pytest.raises(ValueError, match="invert"):
        A.check_names(InvertConfig, {k: v for k, v in A.DESTRUCTIVE_OPS.items() if k != "invert"})
