"""augment.py: batched photometric ops equal torchvision's, the action layout, determinism, probabilities."""
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
    a = A.action_from_params(src, tgt)
    assert a.shape == (1, 7) and A.ACTION_NAMES[4] == "grayscale"
    assert torch.allclose(a, torch.tensor([[-0.4, 0.2, 0.3, -0.07, 1.0, 0.0, 1.0]]), atol=1e-6)
    assert torch.equal(A.action_from_params(tgt, tgt), torch.zeros(1, 7))  # same params → null action


def test_make_views_shapes_determinism_and_target_clean():
    imgs = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    x, y, a, p = A.make_views(imgs, generator=torch.Generator().manual_seed(0))
    x2, y2, a2, _ = A.make_views(imgs, generator=torch.Generator().manual_seed(0))
    x3, _, _, _ = A.make_views(imgs, generator=torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (8, 3, 32, 32) and a.shape == (8, 7) and x.dtype == torch.float32
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
    assert torch.equal(x, imgs / 255) and torch.equal(y, imgs / 255) and torch.equal(a, torch.zeros(4, 7))


def test_cpu_generator_drives_other_device_and_b1():
    # B = 1 (inside a loader worker) and float input work the same way
    img = torch.rand(1, 3, 16, 16)
    x, y, a, _ = A.make_views(img, generator=torch.Generator().manual_seed(5))
    assert x.shape == (1, 3, 16, 16) and a.shape == (1, 7)


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
