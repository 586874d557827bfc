"""model.py: ViT encoder, predictor and its conditioning, I-JEPA-compatible names and loading."""
import pytest
import torch

import augment
import model as M

A = len(augment.ACTION_NAMES)  # action width: the model is told it (build_models / Predictor), not what it means

def small_encoder(**kw):
    return M.VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, **kw)


def test_vit_tiny_param_count():
    enc = M.VisionTransformer(224, 16, *M.VIT_PRESETS["tiny"])
    assert M.count_params(enc) == 5_486_400  # trainable, pos_embed is fixed
    assert enc.pos_embed.requires_grad is False and enc.grid == (14, 14)


def test_image_size_must_divide():
    with pytest.raises(ValueError, match="not divisible"):
        M.VisionTransformer(img_size=30, patch_size=8)
    with pytest.raises(ValueError, match="built for 32px"):
        small_encoder()(torch.zeros(1, 3, 64, 64))


def test_sincos_layout():
    pe = M.sincos_pos_embed(8, 2, 3)  # x in the first half of the channels, y in the second
    assert pe.shape == (6, 8)
    assert torch.equal(pe[0, :4], pe[3, :4])  # same column, different row → same x half
    assert torch.equal(pe[0, 4:], pe[1, 4:])  # same row, different column → same y half
    assert not torch.equal(pe[0, :4], pe[1, :4])
    assert torch.allclose(pe[:, 2:4][0], torch.ones(2))  # cos(0) = 1 for column 0


def test_masked_encoding_equals_gathered_inputs():
    torch.manual_seed(0)
    enc = small_encoder().eval()
    x = torch.randn(2, 3, 32, 32)
    m1, m2 = torch.tensor([[0, 3, 5], [1, 2, 15]]), torch.tensor([[4, 6, 9], [0, 7, 8]])
    out = enc(x, [m1, m2])
    assert out.shape == (4, 3, 48)
    # encoding a subset = running the blocks on the gathered tokens only
    tok = enc.patch_embed(x) + enc.pos_embed
    ref = enc.norm(M.run_blocks(enc.blocks, M.apply_masks(tok, [m1, m2]), False))
    assert torch.allclose(out, ref, atol=1e-6)
    full = enc(x)
    assert full.shape == (2, 16, 48)
    assert not torch.allclose(out[:2], M.apply_masks(full, [m1]), atol=1e-4)  # context changes the features


def test_sdpa_matches_manual_attention():
    torch.manual_seed(0)
    attn = M.Attention(48, 3)
    x = torch.randn(2, 5, 48)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 3, 16).permute(2, 0, 3, 1, 4)
    a = (q @ k.transpose(-2, -1) * 16 ** -0.5).softmax(-1)  # the official code's hand-written attention
    ref = attn.proj((a @ v).transpose(1, 2).reshape(2, 5, 48))
    assert torch.allclose(attn(x), ref, atol=1e-6)


@pytest.mark.parametrize("cond", M.CONDS)
def test_predictor_conditioning(cond):
    torch.manual_seed(0)
    enc = small_encoder()
    pred = M.Predictor(enc.grid, 48, 32, depth=2, num_heads=4, cond=cond, action_dim=A).eval()
    with torch.no_grad():  # move every weight, as training would: a zero-initialised residual (feature) is no
        for p in pred.parameters():  # longer zero
            p.add_(torch.randn_like(p), alpha=0.02)
    ctx = [torch.tensor([[0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15]])]
    tgts = [torch.tensor([[8, 9], [0, 1]]), torch.tensor([[12, 13], [2, 3]])]
    z = torch.randn(2, 6, 48)
    a = torch.randn(2, A)
    out = pred(z, ctx, tgts, a)
    assert out.shape == (4, 2, 48)
    changed = not torch.allclose(out, pred(z, ctx, tgts, a + 1.0), atol=1e-5)
    assert changed == (cond != "none")  # only conditioned predictors see the action
    # each target block is its own sequence: block 2's prediction does not depend on block 1
    out2 = pred(z, ctx, [tgts[1]], a)
    assert torch.allclose(out[2:], out2, atol=1e-5)
    # per-sample independence: changing image 1's action leaves image 0 untouched
    a2 = a.clone(); a2[1] += 3
    assert torch.allclose(pred(z, ctx, tgts, a2)[0], out[0], atol=1e-5)
    # the one-pass option returns the same layout
    assert pred(z, ctx, tgts, a, one_pass=True).shape == out.shape
    # predict every position with the null action
    full = pred(torch.randn(2, 16, 48), None, None, None)
    assert full.shape == (2, 16, 48)


def test_one_pass_equals_per_block_when_single_block():
    torch.manual_seed(0)
    pred = M.Predictor((4, 4), 48, 32, depth=2, num_heads=4, cond="feature", action_dim=A).eval()
    z, ctx, t = torch.randn(2, 6, 48), [torch.arange(6).expand(2, -1)], [torch.tensor([[8, 9], [12, 13]])]
    assert torch.allclose(pred(z, ctx, t), pred(z, ctx, t, one_pass=True), atol=1e-6)


def test_extra_tokens_change_output():
    torch.manual_seed(0)
    pred = M.Predictor((4, 4), 48, 32, depth=1, num_heads=4, cond="none", action_dim=A).eval()
    z = torch.randn(2, 16, 48)
    a, b = pred(z, extra_tokens=torch.randn(2, 1, 32)), pred(z, extra_tokens=torch.randn(2, 1, 32))
    assert a.shape == (2, 16, 48) and not torch.allclose(a, b)


def official_like_state(module, prefix="module."):
    return {prefix + k: v.clone() for k, v in module.state_dict().items()}


def test_load_official_checkpoint(tmp_path):
    torch.manual_seed(0)
    enc, src_pred = small_encoder(), M.Predictor((4, 4), 48, 32, depth=2, num_heads=3, cond="none",
                                               action_dim=A)
    ckpt = {"encoder": official_like_state(enc), "target_encoder": official_like_state(enc),
            "predictor": official_like_state(src_pred), "epoch": 3}
    path = tmp_path / "ijepa.pth.tar"
    torch.save(ckpt, path)
    enc2 = small_encoder()
    pred2 = M.Predictor((4, 4), 48, 32, depth=2, num_heads=3, cond="feature", action_dim=A)
    out, run = M.load_checkpoint(path, {"model": "tiny"})  # 48 wide is no preset: only a flag can name it
    assert out["epoch"] == 3
    # LEGACY fills what an official run used and its file cannot say: no action encoding was trained, one lr
    assert run == dict(M.LEGACY, model="tiny", img_size=32, patch_size=8, pred_width=32, pred_depth=2, cond="none")
    M.load_nets(out, encoder=enc2, predictor=pred2, name=str(path))
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), enc2.state_dict().values()))
    assert torch.equal(pred2.predictor_proj.weight, src_pred.predictor_proj.weight)
    assert M.conditioning_keys(pred2)  # loaded with exactly these fresh
    missing = M.load_state(pred2, ckpt["predictor"], M.conditioning_keys(pred2))
    assert set(missing) == M.conditioning_keys(pred2)


def test_load_refuses_partial_or_mismatched(tmp_path):
    enc = small_encoder()
    sd = official_like_state(enc, "_orig_mod.")
    del sd["_orig_mod.blocks.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match="blocks.1.mlp.fc2.bias"):
        M.load_state(small_encoder(), sd)
    wider = M.VisionTransformer(img_size=32, patch_size=8, embed_dim=96, depth=2, num_heads=3)
    with pytest.raises(ValueError, match="shape mismatch"):
        M.load_state(wider, enc.state_dict())
    torch.save({"encoder": enc.state_dict()}, tmp_path / "enc_only.pt")
    with pytest.raises(ValueError, match="no 'target_encoder' / 'predictor' weights"):
        M.load_checkpoint(tmp_path / "enc_only.pt")
    with pytest.raises(ValueError, match="no 'predictor' weights"):
        M.load_nets({"encoder": enc.state_dict()}, predictor=M.Predictor((4, 4), 48, 32, 1, 3, action_dim=A))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        M.load_checkpoint(tmp_path / "nope.pt")


MICRO = dict(model="micro", img_size=32, patch_size=8, pred_depth=1, pred_width=32, cond="feature")


def test_one_loader_for_ours_and_official(tmp_path):
    """An official file's architecture comes from its shapes, ours from its config; flags that contradict either
    are refused, all named; build_from_checkpoint gives the three networks with the file's weights."""
    torch.manual_seed(0)
    enc, pred = M.build_models(MICRO, A)
    nets = {"encoder": enc, "target_encoder": enc, "predictor": pred}
    torch.save({k: official_like_state(m) for k, m in nets.items()}, tmp_path / "official.pt")
    torch.save({**{k: m.state_dict() for k, m in nets.items()}, "config": {**MICRO, "method": "iwm"}},
               tmp_path / "ours.pt")
    for name in ("official.pt", "ours.pt"):
        ck, run = M.load_checkpoint(tmp_path / name, {"patch_size": 8})  # agreeing flags are fine
        assert {k: run[k] for k in M.ARCH_KEYS} == MICRO
        built = M.build_from_checkpoint(ck, run, A)
        assert torch.equal(built[1].blocks[0].attn.qkv.weight, enc.blocks[0].attn.qkv.weight)
        assert torch.equal(built[2].action_mlp[0].weight, pred.action_mlp[0].weight)
        with pytest.raises(ValueError, match="--img_size 64 vs checkpoint 32, --pred_depth 2 vs checkpoint 1"):
            M.load_checkpoint(tmp_path / name, {"img_size": 64, "pred_depth": 2, "model": "micro"})
    with pytest.raises(ValueError, match="--method ijepa vs checkpoint iwm"):  # a stored config: any key it holds
        M.load_checkpoint(tmp_path / "ours.pt", {"method": "ijepa"})


@pytest.mark.parametrize("content, message", [
    (None, "checkpoint not found: "), (b"not a checkpoint\n", "cannot read checkpoint "),
    ("truncated", "cannot read checkpoint "), ({"x": 1}, " has no 'encoder' / 'target_encoder' / 'predictor'"),
    ([1, 2], " is not a checkpoint: it holds a list"),
    ({"encoder": {"pos_embed": 1}, "target_encoder": {}, "predictor": {}}, "cannot tell the architecture of "),
])
def test_bad_checkpoint_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncated":
        torch.save({"encoder": small_encoder().state_dict()}, path)
        path.write_bytes(path.read_bytes()[:1000])
    elif content is not None:
        torch.save(content, path)
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        M.load_checkpoint(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_init_and_grad_checkpointing_same_result():
    torch.manual_seed(0)
    enc = small_encoder()
    w = enc.blocks[0].mlp.fc1.weight
    assert w.abs().max() <= 0.04 + 1e-7 and 0.01 < w.std() < 0.03
    assert torch.all(enc.blocks[0].norm1.weight == 1)
    x = torch.randn(2, 3, 32, 32)
    g = []
    for ck in (False, True):
        enc.zero_grad(); enc.grad_ckpt = ck
        enc(x).square().mean().backward()
        g.append(enc.patch_embed.proj.weight.grad.clone())
    assert torch.allclose(g[0], g[1], atol=1e-6)


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    enc = small_encoder(drop_path=0.5)
    x = torch.randn(4, 3, 32, 32)
    enc.eval()
    assert torch.equal(enc(x), enc(x))
    enc.train()
    assert not torch.equal(enc(x), enc(x))


def test_feature_conditioning_starts_as_unconditioned():
    torch.manual_seed(0)
    plain = M.Predictor((4, 4), 48, 32, depth=2, num_heads=4, cond="none", action_dim=A).eval()
    cond = M.Predictor((4, 4), 48, 32, depth=2, num_heads=4, cond="feature", action_dim=A).eval()
    M.load_state(cond, plain.state_dict(), M.conditioning_keys(cond))
    z, ctx, t = torch.randn(2, 6, 48), [torch.arange(6).expand(2, -1)], [torch.tensor([[8, 9], [12, 13]])]
    assert torch.allclose(cond(z, ctx, t, torch.randn(2, A)), plain(z, ctx, t), atol=1e-6)


@pytest.mark.parametrize("width", [32, 128, 384])
def test_action_tokens_start_at_the_scale_of_the_context_tokens(width):
    """Sequence conditioning: an action token at |a| = 1 starts as large as the sincos position embeddings of the
    other tokens, at any width (at the generic std 0.02 it was ~30x smaller, and the quick start's MRR over sources
    averaged 0.133 instead of 0.171 over 3 seeds: README "our choices")."""
    torch.manual_seed(0)
    pred = M.Predictor((8, 8), 48, width, depth=1, num_heads=4, cond="sequence", action_dim=A)
    pos = pred.predictor_pos_embed.norm(dim=-1).mean()  # ≈ sqrt(width / 2): sines and cosines
    ratio = (pred.action_tokens_weight + pred.action_tokens_bias).norm(dim=1) / pos
    lo, hi = ratio.min().item(), ratio.max().item()
    assert 0.5 < lo and hi < 2, f"action token / position norm from {lo:.2f} to {hi:.2f}"


@pytest.mark.parametrize("cond", M.CONDS)
def test_action_width_comes_from_the_caller(cond):
    # augment.ACTION_NAMES is the one definition of a_{x→y}: model.py keeps no copy of its width (and no import of
    # augment), build_models takes it from the caller, so an action with one more column needs no edit here
    arch = dict(model="micro", img_size=32, patch_size=8, pred_depth=1, pred_width=32, cond=cond)
    with pytest.raises(TypeError):
        M.build_models(arch)
    _, pred = M.build_models(arch, A + 1)
    assert pred.action_dim == A + 1 and not hasattr(M, "ACTION_DIM") and not hasattr(M, "augment")
    z = torch.randn(2, 16, 128)
    assert pred.eval()(z, action=torch.randn(2, A + 1)).shape == (2, 16, 128)


def test_conds_are_what_the_predictor_accepts_and_the_loader_infers(tmp_path):
    """model.CONDS is the one table of conditioning modes (train.py's --cond, tests): each builds, and an official
    style file (no config) of each is read back as that mode; anything else is refused, naming the modes."""
    with pytest.raises(ValueError, match=", ".join(M.CONDS)):
        M.Predictor((4, 4), 48, 32, depth=1, num_heads=4, cond="film", action_dim=A)
    enc = small_encoder()
    for cond in M.CONDS:
        pred = M.Predictor((4, 4), 48, 32, depth=1, num_heads=4, cond=cond, action_dim=A)
        torch.save({"encoder": enc.state_dict(), "target_encoder": enc.state_dict(), "predictor": pred.state_dict()},
                   tmp_path / "ck.pt")
        assert M.load_checkpoint(tmp_path / "ck.pt", {"model": "tiny"})[1]["cond"] == cond


@pytest.mark.parametrize("cond", M.CONDS)
def test_a_changed_action_is_refused_in_one_line(tmp_path, cond):
    """A checkpoint stores its action names (train.py). A predictor built for other names, or for another width
    where the file (older ones) or the caller (a width alone) gives no names, is refused with one line naming both,
    not a tensor shape mismatch; the encoder alone still loads, and so does a predictor that ignores the action."""
    old = ("bright", "gray", "blur")
    predictor = lambda actions: M.Predictor((4, 4), 48, 32, depth=1, num_heads=4, cond=cond, action_dim=actions)
    torch.manual_seed(0)
    enc, pred = small_encoder(), predictor(old)
    named = {"encoder": enc.state_dict(), "predictor": pred.state_dict(), "action_names": list(old)}
    older = {k: v for k, v in named.items() if k != "action_names"}
    cases = [(named, old + ("invert",), "actions (bright, gray, blur) but this code has actions (bright, gray, blur, "
                                        "invert)"),
             (named, ("bright", "gray", "solarize"), "actions (bright, gray, blur) but this code has actions (bright, "
                                                     "gray, solarize)"),  # the same width, other names
             (named, 4, "actions (bright, gray, blur) but this code has 4-wide actions"),
             (older, old + ("invert",), "3-wide actions but this code has actions (bright, gray, blur, invert)")]
    for ck, actions, message in cases:
        if cond == "none":  # no conditioning weights: nothing in the file depends on the action
            M.load_nets(ck, predictor=predictor(actions))
            continue
        with pytest.raises(ValueError) as e:
            M.load_nets(ck, small_encoder(), predictor=predictor(actions), name=str(tmp_path / "ck.pt"))
        assert str(e.value) == (f"{tmp_path / 'ck.pt'} was trained with {message}: a_{{x→y}} changed; retrain, or "
                                f"load the encoder only")
        M.load_nets(ck, small_encoder())  # the encoder alone loads whatever the action
    for ck, actions in ((named, old), (named, 3), (older, old), (older, 3)):  # the same action loads
        loaded = predictor(actions)
        M.load_nets(ck, predictor=loaded)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), pred.state_dict().values()))


def test_build_from_checkpoint_checks_the_action(tmp_path):
    # the path train.py --resume / --init, evaluate_mrr.py and finetune.py take: the file's name, one line
    torch.manual_seed(0)
    enc, pred = M.build_models(MICRO, ("bright", "gray"))
    torch.save({"encoder": enc.state_dict(), "target_encoder": enc.state_dict(), "predictor": pred.state_dict(),
                "config": MICRO, "action_names": ["bright", "gray"]}, tmp_path / "ck.pt")
    ck, run = M.load_checkpoint(tmp_path / "ck.pt")
    with pytest.raises(ValueError, match=r"ck.pt was trained with actions \(bright, gray\) but this code has 3-wide"):
        M.build_from_checkpoint(ck, run, 3, name=str(tmp_path / "ck.pt"))
    assert M.build_from_checkpoint(ck, run, 3, load=("target_encoder",))[2].action_dim == 3
