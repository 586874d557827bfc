"""evaluate_mrr.py: the world-model MRR (IWM §4) scores a perfect world model 1, an action-blind or constant one
at most chance, is deterministic, draws the Figure-1 grid, and its CLI loads checkpoints and fails clearly."""
import dataclasses
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.io import read_image

import augment
import evaluate_mrr as E
import model as M

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# blur sigma fixed so that every source view is a deterministic function of the image (the oracle looks it up)
AUG = dataclasses.replace(augment.PRESETS["iwm"], blur_sigma=(1.0, 1.0))


def small_encoder(seed):
    torch.manual_seed(seed)
    enc = M.VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3).eval()
    with torch.no_grad():  # a trained-looking final norm, so that its output is not already layer-normed
        enc.norm.weight.uniform_(0.5, 1.5)
        enc.norm.bias.normal_()
    return enc


def images(n=2, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


class Oracle(nn.Module):
    """A perfect world model: finds which (image, source view) z encodes, rebuilds the target view from the
    action (target jitter = identity source jitter + difference) and returns its layer-normed target latent."""
    def __init__(self, encoder, target_encoder, imgs):
        super().__init__()
        self.encoder, self.target_encoder, self.imgs = encoder, target_encoder, imgs
        views, self.owner = [], []
        for s in E.sources():
            p = augment.sample_params(len(imgs), E.source_config(AUG, s), destructive=True)
            views.append(augment.apply_params(imgs, p, AUG))
            self.owner += range(len(imgs))
        with torch.no_grad():
            self.keys = encoder(augment.normalize(torch.cat(views))).flatten(1)

    def forward(self, z, masks_x=None, masks=None, action=None):
        assert masks_x is None and masks is None  # MRR predicts every position from the full context
        i = self.owner[(self.keys - z[:1].flatten(1)).norm(dim=1).argmin()]
        B, a = len(action), action[:, :4] * torch.tensor(augment.action_scale(AUG))  # undo the log_std encoding
        p = {"brightness": a[:, 0].exp(), "contrast": a[:, 1].exp(), "saturation": a[:, 2].exp(),
             "hue": a[:, 3], "jitter": torch.ones(B, dtype=torch.bool), "sigma": torch.ones(B),
             **{k: torch.zeros(B, dtype=torch.bool) for k in augment.DESTRUCTIVE}}
        y = augment.apply_params(self.imgs[i:i + 1].expand(B, -1, -1, -1), p, AUG)
        out = self.target_encoder(augment.normalize(y))
        return F.layer_norm(out, out.shape[-1:])


@pytest.fixture(scope="module")
def nets():
    enc, tgt = small_encoder(0), small_encoder(1)  # different weights: the bank must use the target encoder
    return enc, tgt, images()


def score(enc, tgt, pred, imgs, **kw):
    kw.setdefault("bank_size", 16)
    return E.mrr_score(enc, tgt, pred, imgs, AUG, generator=torch.Generator().manual_seed(kw.pop("seed", 0)), **kw)


def test_oracle_scores_one_for_every_source_and_component(nets):
    enc, tgt, imgs = nets
    res = score(enc, tgt, Oracle(enc, tgt, imgs), imgs, sources=E.sources(), components=True)
    for k in ("mrr",) + tuple(f"mrr/{s}" for s in E.sources() + augment.JITTER):
        assert res[k] == 1.0, (k, res[k])
    assert res["mrr_ci"] == 0.0
    # uint8 input is the same images
    u8 = (imgs * 255).round().to(torch.uint8)
    assert score(enc, tgt, Oracle(enc, tgt, u8.float() / 255), u8)["mrr"] == 1.0


def test_null_action_sends_the_oracle_to_chance(nets):
    enc, tgt, imgs = nets
    res = score(enc, tgt, Oracle(enc, tgt, imgs), imgs, null_action=True)
    assert res["mrr"] <= res["chance"] + 1e-9  # without the action it predicts the same latent for every entry


def test_action_blind_and_constant_predictors_at_most_chance(nets):
    enc, tgt, imgs = nets
    torch.manual_seed(2)
    blind = M.Predictor(enc.grid, 48, 24, depth=1, num_heads=3, cond="none", action_dim=len(augment.ACTION_NAMES))
    blind.eval()
    res = score(enc, tgt, blind, imgs, bank_size=64)
    assert abs(res["chance"] - sum(1 / r for r in range(1, 65)) / 64) < 1e-12
    assert res["mrr"] < 0.1 and res["mrr"] <= res["chance"] + 1e-6
    zeros = lambda z, mx, m, a: torch.zeros(len(a), z.shape[1], z.shape[2])
    res = score(enc, tgt, zeros, imgs, bank_size=64)
    assert res["mrr"] <= res["chance"] + 1e-9
    assert abs(score(enc, tgt, zeros, imgs, bank_size=256)["chance"] - 0.0239) < 1e-4  # the paper's chance level


def test_ties_count_against_the_entry():
    d = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 1.0], [5.0, 5.0, 5.0]])
    assert E.ranks_from_distances(d).tolist() == [1, 3, 3]
    # a bank of identical views (no jitter strength): even the oracle cannot tell the entries apart
    enc, tgt, imgs = small_encoder(0), small_encoder(1), images(1)
    flat = dataclasses.replace(AUG, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    res = E.mrr_score(enc, tgt, Oracle(enc, tgt, imgs), imgs, flat, bank_size=32)
    assert res["mrr"] < 0.2  # optimistic ties would give 1.0


def test_deterministic_from_seed_and_independent_of_other_sources(nets):
    enc, tgt, imgs = nets
    torch.manual_seed(3)
    pred = M.Predictor(enc.grid, 48, 24, depth=1, num_heads=3, cond="feature", action_dim=len(augment.ACTION_NAMES))
    pred.eval()
    a = score(enc, tgt, pred, imgs, sources=E.sources())
    assert a == score(enc, tgt, pred, imgs, sources=E.sources())
    assert a["mrr/clean"] == score(enc, tgt, pred, imgs)["mrr/clean"]  # the bank is drawn first
    assert a != score(enc, tgt, pred, imgs, sources=E.sources(), seed=1)
    assert set(a) >= {"mrr", "mrr_ci", "chance"} | {f"mrr/{s}" for s in E.sources()}


def test_bad_arguments(nets):
    enc, tgt, imgs = nets
    with pytest.raises(ValueError, match="unknown MRR source"):
        score(enc, tgt, None, imgs, sources=("jpeg",))
    with pytest.raises(ValueError, match="bank of >= 2"):
        score(enc, tgt, None, imgs, bank_size=1)


def test_nearest_neighbour_grid_png(nets, tmp_path):
    enc, tgt, imgs = nets
    path = E.nearest_neighbour_grid(enc, tgt, Oracle(enc, tgt, imgs), imgs, AUG, str(tmp_path / "nn.png"),
                                    bank_size=16, generator=torch.Generator().manual_seed(0))
    png = read_image(path)
    assert png.shape == (3, 2 * 34 + 2, 7 * 34 + 2)  # 2 rows of 7 tiles of 32 px, torchvision's 2 px padding
    tile = lambda r, c: png[:, 2 + 34 * r:34 * (r + 1), 2 + 34 * c:34 * (c + 1)]
    for r in range(2):
        assert torch.equal(tile(r, 1), tile(r, 2))  # the oracle's nearest neighbour is the requested target
        assert not torch.equal(tile(r, 2), tile(r, 3))
        assert torch.equal(tile(r, 0), (imgs[r] * 255 + 0.5).clamp(0, 255).to(torch.uint8))  # clean source


def test_bank_latents_are_the_training_target(nets):
    enc, tgt, imgs = nets
    lat = E.target_latents(tgt, imgs, chunk=1)
    assert lat.shape == (2, 16, 48)
    assert torch.allclose(lat.mean(-1), torch.zeros(2, 16), atol=1e-5)  # layer norm without affine
    assert torch.allclose(lat.var(-1, unbiased=False), torch.ones(2, 16), atol=1e-3)
    assert torch.allclose(lat, F.layer_norm(tgt(augment.normalize(imgs)), (48,)), atol=1e-5)  # EMA encoder


RUN = dict(model="micro", img_size=32, patch_size=8, pred_depth=1, pred_width=32, cond="feature", method="iwm",
           augment="iwm", data="shapes", data_root="")


def save_ckpt(path, cond="feature", config=True, prefix="", _built={}):
    if cond not in _built:  # building even a micro ViT is slow on a loaded CPU: once per conditioning
        torch.manual_seed(0)
        _built[cond] = M.build_models({**RUN, "cond": cond}, len(augment.ACTION_NAMES))
    enc, pred = _built[cond]
    sd = {"encoder": enc.state_dict(), "target_encoder": enc.state_dict(), "predictor": pred.state_dict()}
    sd = {k: {prefix + n: t for n, t in v.items()} for k, v in sd.items()}
    if config:
        sd["config"] = {**RUN, "cond": cond}
    torch.save(sd, path)
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return {"ck": save_ckpt(d / "ck.pt"),
            "official": save_ckpt(d / "ijepa.pth.tar", cond="none", config=False, prefix="module.")}


def test_cli_our_checkpoint(ckpts, tmp_path, capsys):
    png = tmp_path / "nn.png"
    res = E.main(["--ckpt", ckpts["ck"], "--images", "2", "--bank", "6", "--png", str(png), "--png_images", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    # the last line is the headline figure, named: the mean over sources, then the clean source's and chance
    assert lines[-1] == (f"MRR over sources {res['mrr']:.4f} (clean source {res['mrr/clean']:.4f}, "
                         f"chance {res['chance']:.4f})")
    assert any("null action" in line for line in lines)
    assert [line.split()[1] for line in lines if line.split()[:1] == ["source"]] == list(E.sources())  # a row each
    assert read_image(str(png)).shape == (3, 36, 7 * 34 + 2)
    assert {f"mrr/{k}" for k in E.sources() + augment.JITTER} <= set(res)


def test_cli_official_checkpoint_infers_the_architecture(ckpts, capsys):
    E.main(["--ckpt", ckpts["official"], "--images", "1", "--bank", "4", "--data", "shapes"])
    out = capsys.readouterr().out
    assert "micro 32px/8, predictor 1x32 cond none" in out
    assert out.strip().splitlines()[-1].startswith("MRR over sources 0.")


def test_oracle_error_is_zero_and_the_bank_spread_is_not(nets):
    enc, tgt, imgs = nets
    res = score(enc, tgt, Oracle(enc, tgt, imgs), imgs, sources=("clean", "blur"), components=True)
    for k in ("clean", "blur", "hue"):
        assert res[f"error/{k}"] < 1e-6 < res[f"spread/{k}"]


def test_token_stats_tell_a_collapsed_representation_from_a_random_one():
    g = torch.Generator().manual_seed(0)
    B, N, D = 64, 16, 32
    random = torch.randn(B, N, D, generator=g)
    # collapse onto one image statistic ("brightness"): every token of an image is the same point on one line
    collapsed = (torch.randn(B, 1, 1, generator=g) * torch.randn(D, generator=g)
                 + 0.01 * torch.randn(B, N, D, generator=g))
    positional = torch.randn(1, N, D, generator=g).expand(B, -1, -1)
    r, c, p = E.token_stats(random), E.token_stats(collapsed), E.token_stats(positional)
    assert r["rank"] > 20 and E.collapse_warning(r) is None
    assert c["rank"] < 1.5 and c["var_image"] > 0.95 and "collapsed" in E.collapse_warning(c)
    assert p["var_position"] > 0.999 and p["var_image"] < 1e-6
    assert abs(sum(r[k] for k in ("var_image", "var_position", "var_residual")) - 1) < 1e-9


def test_pixel_spread_sees_colour_only_where_there_is_colour():
    """scripts/pixel_spread.py: a gray image has no saturation or hue to change (spread 0 up to fp32 rounding), a
    coloured one has; every jitter component of augment's table gets a figure."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("pixel_spread", os.path.join(ROOT, "scripts", "pixel_spread.py"))
    ps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ps)
    g = torch.Generator().manual_seed(0)
    gray = torch.rand(2, 1, 8, 8, generator=g).expand(-1, 3, -1, -1) * 0.5 + 0.25
    colour = torch.rand(2, 3, 8, 8, generator=g)
    aug = augment.PRESETS["strong"]
    s_gray, s_colour = (ps.pixel_spread(x, aug, 8, torch.Generator().manual_seed(1)) for x in (gray, colour))
    assert set(s_gray) == set(s_colour) == set(augment.JITTER)
    assert s_gray["saturation"] < 1e-6 and s_gray["hue"] < 1e-6 and s_gray["brightness"] > 1e-3
    assert s_colour["saturation"] > 1e-3 and s_colour["hue"] > 1e-3
