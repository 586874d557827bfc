"""The networks of IWM (arXiv 2403.00504, §3): the ViT encoder f_θ (its EMA copy f_θ^EMA is the same class)
and the world model p_φ, a narrow transformer predictor conditioned on the action a_{x→y}.

The encoder and predictor follow I-JEPA (arXiv 2301.08243, §3 and App. A) with parameter names identical to the
official code (facebookresearch/ijepa), so that released I-JEPA checkpoints load with `load_checkpoint`:
`pos_embed, patch_embed.proj, blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}, norm` and
`predictor_embed, mask_token, predictor_pos_embed, predictor_blocks.{j}.*, predictor_norm, predictor_proj`.
Conditioning (IWM Table 1) adds its own modules (`action_mlp`, `action_tokens_*`); nothing else is renamed.

Masks are lists of LongTensors [B, K] of flat patch indices (masks.py); as in I-JEPA, the tokens selected by
the i-th mask of a list are stacked along the batch dimension, so an output has batch size len(masks) * B.
"""
import copy
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

VIT_PRESETS = {  # name: (width, depth, heads), I-JEPA / ViT paper sizes; "micro" is ours, for CPU quick starts
    "micro": (128, 6, 4), "tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16),
    "huge": (1280, 32, 16)}
# Predictor sizes (depth × width, configs/): IWM-Inv 12×384, IWM-Equi 18×384 (ViT-L 36×512), I-JEPA ViT-B 6×384
CONDS = ("none", "sequence", "feature")  # how the predictor sees the action (IWM Table 1; Predictor's docstring)


def sincos_pos_embed(dim, grid_h, grid_w):
    """Fixed 2-D sin-cos embedding [grid_h*grid_w, dim] (MAE/I-JEPA): x (column) uses the first half of the
    channels and y (row) the second, each as [sin, cos] of position × 1/10000^(k/(dim/4))."""
    if dim % 4:  # a ValueError, not an assert: a bad --pred_width is bad input (a one-line error)
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    ys, xs = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64),
                            indexing="ij")
    angles = [p.reshape(-1, 1) * omega[None] for p in (xs, ys)]
    return torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], dim=1).float()


def apply_masks(x, masks):
    """Gather the tokens of x [B, N, D] at each mask [B, K] and stack the results along the batch: [len·B, K, D]."""
    return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, x.size(-1))) for m in masks], dim=0)


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample (used by encoder finetuning, MAE recipe)."""
    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        # SDPA picks flash / memory-efficient kernels on GPU; same math (scale head_dim^-0.5) as the official code
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6, MLP ratio 4, exact GELU)."""
    def __init__(self, dim, num_heads, mlp_ratio=4.0, drop_path=0.0):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), MLP(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def run_blocks(blocks, x, grad_ckpt):
    for blk in blocks:  # activation checkpointing trades ~30% compute for O(depth) less activation memory
        x = checkpoint(blk, x, use_reentrant=False) if grad_ckpt and x.requires_grad else blk(x)
    return x


def init_weights(module, num_blocks_attr):
    """Truncated normal (std 0.02, cut at ±2σ) for Linear/Conv weights, zero biases, LayerNorm (1, 0).
    The official code calls timm's trunc_normal_(std=0.02) whose default cut is ±2 in absolute value, i.e. an
    untruncated normal in practice; we cut at ±2σ (the intent). Like the official `fix_init_weight`, the output
    projections of block l (attn.proj, mlp.fc2) are divided by sqrt(2l) so the residual stream does not grow
    with depth."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            m.reset_parameters()  # weight 1, bias 0
    for layer, blk in enumerate(getattr(module, num_blocks_attr), start=1):
        blk.attn.proj.weight.data.div_(math.sqrt(2.0 * layer))
        blk.mlp.fc2.weight.data.div_(math.sqrt(2.0 * layer))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D], patches in row-major order


class VisionTransformer(nn.Module):
    """Encoder f_θ: ViT without cls token and with a fixed sin-cos position embedding (I-JEPA §3)."""
    def __init__(self, img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                 drop_path=0.0, in_chans=3):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"image size {img_size} is not divisible by patch size {patch_size}")
        self.img_size, self.patch_size, self.embed_dim, self.num_heads = img_size, patch_size, embed_dim, num_heads
        self.grid = (img_size // patch_size, img_size // patch_size)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        # a Parameter (not a buffer) because official checkpoints store it among the parameters; never trained
        self.pos_embed = nn.Parameter(sincos_pos_embed(embed_dim, *self.grid)[None], requires_grad=False)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, drop_path * i / max(depth - 1, 1))
                                    for i in range(depth))  # drop path grows linearly with depth (MAE)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.grad_ckpt = False
        init_weights(self, "blocks")

    def forward(self, x, masks=None):
        """x [B, 3, H, W] → tokens [B, N, D]; with masks (list of [B, K]) only the kept patches are encoded:
        [len(masks)·B, K, D]. The image size must be the one the model was built for."""
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"encoder built for {self.img_size}px images, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x) + self.pos_embed
        if masks is not None:
            x = apply_masks(x, masks)
        return self.norm(run_blocks(self.blocks, x, self.grad_ckpt))


class Predictor(nn.Module):
    """World model p_φ(z_x, a_{x→y}, m_a) (IWM §3): context tokens + one mask token per target position,
    conditioned on the action a_{x→y} [B, action_dim] in one of three ways (IWM Table 1):
      none     - the action is ignored (I-JEPA);
      sequence - each action scalar becomes a token through its own Linear(1→Dp) (separate projections break
                 the permutation symmetry); these tokens get no position embedding and produce no output;
      feature  - the action is concatenated to every (mask token + position embedding) and mixed back to Dp by a
                 3-layer MLP, added as a residual whose last layer starts at zero (our choice: a plain MLP output
                 shrinks the mask token and its position to ~1e-3 at init and the action is learned very slowly;
                 with the residual, a conditioned predictor starts exactly as the unconditioned one, so official
                 I-JEPA predictor weights keep their behaviour when loaded).
    """
    def __init__(self, grid, embed_dim=768, predictor_embed_dim=384, depth=6, num_heads=12, cond="feature", *,
                 action_dim, mlp_ratio=4.0):
        super().__init__()
        if cond not in CONDS:
            raise ValueError(f"cond must be one of {', '.join(CONDS)}, got {cond!r}")
        self.cond, self.grid, self.embed_dim = cond, tuple(grid), embed_dim
        self.action_names = None if isinstance(action_dim, int) else tuple(action_dim)  # checked on load (load_nets)
        self.action_dim = action_dim if self.action_names is None else len(self.action_names)
        dp = predictor_embed_dim
        self.predictor_embed = nn.Linear(embed_dim, dp)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dp))
        self.predictor_pos_embed = nn.Parameter(sincos_pos_embed(dp, *self.grid)[None], requires_grad=False)
        self.predictor_blocks = nn.ModuleList(Block(dp, num_heads, mlp_ratio) for _ in range(depth))
        self.predictor_norm = nn.LayerNorm(dp, eps=1e-6)
        self.predictor_proj = nn.Linear(dp, embed_dim)
        if cond == "feature":
            self.action_mlp = nn.Sequential(nn.Linear(dp + self.action_dim, dp), nn.GELU(), nn.Linear(dp, dp),
                                            nn.GELU(), nn.Linear(dp, dp))
        elif cond == "sequence":  # action_dim independent Linear(1→Dp), stored as one weight/bias pair
            self.action_tokens_weight = nn.Parameter(torch.zeros(self.action_dim, dp))
            self.action_tokens_bias = nn.Parameter(torch.zeros(self.action_dim, dp))
        self.grad_ckpt = False
        init_weights(self, "predictor_blocks")
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.04, b=0.04)
        if cond == "feature":  # (its bias is zero already: init_weights)
            nn.init.zeros_(self.action_mlp[-1].weight)
        if cond == "sequence":  # at |a| = 1 a token's elements are ~0.7, the sincos positions' scale of the other
            for w in (self.action_tokens_weight, self.action_tokens_bias):  # tokens: at 0.02 the action fades from
                nn.init.trunc_normal_(w, std=0.5, a=-1.0, b=1.0)  # the residual stream (README "our choices")

    def forward(self, z, masks_x=None, masks=None, action=None, extra_tokens=None, one_pass=False):
        """z: context tokens [B, Kc, D] selected by masks_x (list of one [B, Kc]; None: z holds all N positions).
        masks: target masks (list of [B, Kt]; None: predict every position).
        action: [B, action_dim] (None: null action).
        extra_tokens: [B, T, Dp] tokens appended to every sequence (task tokens for multitask finetuning).
        one_pass: predict the union of target blocks in one sequence instead of one sequence per block (I-JEPA
        default, blocks never attend to each other); about twice as fast, a speed option.
        Returns predictions [len(masks)·B, Kt, D] in the encoder's width."""
        B, n_pos = z.shape[0], self.grid[0] * self.grid[1]
        if masks_x is not None and len(masks_x) != 1:
            raise ValueError("the predictor takes exactly one context mask per image")
        if masks is None:
            masks = [torch.arange(n_pos, device=z.device).expand(B, -1)]
        pos = self.predictor_pos_embed.expand(B, -1, -1)
        x = self.predictor_embed(z) + (pos if masks_x is None else apply_masks(pos, masks_x))
        n_ctx, n_tgt = x.shape[1], masks[0].shape[1]
        if one_pass:  # all blocks as one sequence of n_blocks·Kt mask tokens, split back after the blocks
            masks = [torch.cat(masks, dim=1)]
        tgt = self.mask_token + apply_masks(pos, masks)  # [m·B, K, Dp]
        m = len(masks)
        action = (z.new_zeros(B, self.action_dim) if action is None else action).to(x.dtype).repeat(m, 1)
        if self.cond == "feature":
            tgt = tgt + self.action_mlp(torch.cat([tgt, action[:, None].expand(-1, tgt.shape[1], -1)], dim=-1))
        extra = [] if extra_tokens is None else [extra_tokens.to(x.dtype).repeat(m, 1, 1)]
        if self.cond == "sequence":
            extra.append(action[:, :, None] * self.action_tokens_weight + self.action_tokens_bias)
        x = torch.cat([x.repeat(m, 1, 1), tgt] + extra, dim=1)
        x = run_blocks(self.predictor_blocks, x, self.grad_ckpt)
        x = self.predictor_proj(self.predictor_norm(x[:, n_ctx:n_ctx + tgt.shape[1]]))
        if one_pass:
            x = torch.cat(x.split(n_tgt, dim=1), dim=0)  # [B, n·Kt, D] → [n·B, Kt, D], the per-block layout
        return x


def build_models(cfg, action_dim):
    """Encoder and predictor from a run config (train.py's keys, stored in every checkpoint): model, img_size,
    patch_size, pred_depth, pred_width, cond, drop_path (optional). action_dim: a_{x→y}'s names from the caller
    (augment.ACTION_NAMES; or just their number), required so that it is never a second, stale copy here."""
    if cfg["model"] not in VIT_PRESETS:
        raise ValueError(f"unknown model {cfg['model']!r}; choose from {sorted(VIT_PRESETS)}")
    encoder = VisionTransformer(cfg["img_size"], cfg["patch_size"], *VIT_PRESETS[cfg["model"]],
                                drop_path=cfg.get("drop_path", 0.0))
    if cfg["pred_width"] % encoder.num_heads:  # found at start-up, not as a reshape error in the first step
        raise ValueError(f"--pred_width {cfg['pred_width']} does not split into the {encoder.num_heads} heads of "
                         f"--model {cfg['model']}")
    predictor = Predictor(encoder.grid, encoder.embed_dim, cfg["pred_width"], cfg["pred_depth"], encoder.num_heads,
                          cfg["cond"], action_dim=action_dim)
    return encoder, predictor


def count_params(module):  # trainable ones
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def param_groups(modules, weight_decay=0.0, lr_scale=None):
    """AdamW groups of {name prefix: module}: no weight decay on 1-D parameters (biases, norms) and, by the names
    above, on tokens (`mask_token`, heads' `query_token` / `task_token`), `action_tokens_bias` and `pos_embed`.
    `lr_scale(prefixed name)` (optional) gives a per-parameter lr factor (layer-wise decay in finetuning)."""
    groups = {}
    for prefix, module in modules.items():
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            no_decay = p.ndim <= 1 or name.endswith(("token", "_bias")) or "pos_embed" in name
            scale = lr_scale(f"{prefix}{name}") if lr_scale else 1.0
            groups.setdefault((no_decay, scale), {"params": [], "weight_decay": 0.0 if no_decay else weight_decay,
                                                  "no_decay": no_decay, "lr_scale": scale})["params"].append(p)
    return list(groups.values())


def clean_state_dict(sd):
    """Strip the `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes that official and wrapped checkpoints
    carry, so that any of them loads into a plain module."""
    return {re.sub(r"^((module|_orig_mod)\.)+", "", k).replace("._orig_mod.", "."): v for k, v in sd.items()}


def conditioning_keys(module):
    return {k for k in module.state_dict() if k.startswith(("action_mlp.", "action_tokens_"))}


def load_state(module, sd, allow_missing=(), name="module"):
    """Load sd into module strictly, except for the keys in allow_missing, which keep their fresh init.
    Anything else missing or unexpected, or a shape difference, is a ValueError naming the keys (never a
    silent partial load). Returns the sorted list of keys that were missing and allowed."""
    sd, own = clean_state_dict(sd), module.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    bad_missing = [k for k in missing if k not in set(allow_missing)]
    shape = lambda k: tuple(getattr(sd[k], "shape", ()))  # a foreign file may hold non-tensors: a mismatch too
    shapes = [f"{k}: checkpoint {shape(k)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and (not torch.is_tensor(sd[k]) or sd[k].shape != own[k].shape)]
    if bad_missing or unexpected or shapes:
        raise ValueError(f"{name}: checkpoint does not match this config: missing {bad_missing[:6]}, "
                         f"unexpected {unexpected[:6]}, shape mismatch {shapes[:4]}")
    module.load_state_dict(sd, strict=False)
    return missing


# ---------------------------------------------------------------------------------------------- checkpoints
NETS = ("encoder", "target_encoder", "predictor")  # what train.py and official I-JEPA checkpoints hold
SHAPE_KEYS = ("model", "img_size", "patch_size", "pred_depth", "pred_width")  # fixed by the weights' shapes
ARCH_KEYS = SHAPE_KEYS + ("cond",)  # all that build_models reads from a run config
LEGACY = {"action": "raw", "pred_lr_scale": 1.0}  # what a file without the key meant (older runs, official I-JEPA)


def _infer_arch(ckpt):
    """An official I-JEPA checkpoint stores no config: its architecture from the tensor shapes, and cond from the
    predictor's conditioning modules (official ones have none). What cannot be told is left out."""
    enc = clean_state_dict(ckpt["encoder"] if isinstance(ckpt.get("encoder"), dict) else ckpt["target_encoder"])
    width, patch = enc["pos_embed"].shape[-1], enc["patch_embed.proj.weight"].shape[-1]
    depth = len({k.split(".")[1] for k in enc if k.startswith("blocks.")})
    run = dict(model=next((n for n, (w, d, _) in VIT_PRESETS.items() if (w, d) == (width, depth)), ""),
               img_size=round(math.sqrt(enc["pos_embed"].shape[1])) * patch, patch_size=patch)
    if isinstance(ckpt.get("predictor"), dict):
        pred = clean_state_dict(ckpt["predictor"])
        has = lambda prefix: any(k.startswith(prefix) for k in pred)
        run.update(pred_width=pred["predictor_embed.weight"].shape[0],
                   pred_depth=len({k.split(".")[1] for k in pred if k.startswith("predictor_blocks.")}),
                   cond="feature" if has("action_mlp.") else "sequence" if has("action_tokens_") else "none")
    return run


def load_checkpoint(path, flags=None, need=NETS):
    """(checkpoint dict, run config) of a train.py / finetune.py checkpoint or an official I-JEPA one, read with
    weights_only (loading runs no code). The run config is the stored one, else what the tensor shapes imply, over
    LEGACY. `flags` {key: value}: the user's choices; any that differs from the checkpoint's config is refused, all
    named (replacing it silently would run another model than the one asked for); they fill in what the shapes
    cannot tell. `need`: the entries that must be state dicts. Errors: FileNotFoundError / ValueError, one line."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except Exception as e:  # truncated, text or a pickle of other classes; torch's message can span many lines
        first = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:160]  # torch's first sentence says it
        why = "it holds more than weights, and loading it could run code" if first.startswith("Weights only") \
            else "truncated, or not a torch.save file"
        raise ValueError(f"cannot read checkpoint {path} ({why}): {type(e).__name__}: {first}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not a checkpoint: it holds a {type(ckpt).__name__}, not a dict")
    absent = [repr(k) for k in need if not isinstance(ckpt.get(k), dict)]
    if absent:
        raise ValueError(f"{path} has no {' / '.join(absent)} weights; it holds {sorted(map(str, ckpt))[:8]}")
    stored, flags = isinstance(ckpt.get("config"), dict), dict(flags or {})
    try:
        run = {**LEGACY, **(ckpt["config"] if stored else _infer_arch(ckpt))}
        if any(type(run.get(k, 0)) is not int for k in SHAPE_KEYS[1:]):  # a config edited by hand, or damaged
            raise TypeError(f"sizes {', '.join(f'{k} {run.get(k)!r}' for k in SHAPE_KEYS[1:])}: not all whole numbers")
    except (KeyError, IndexError, AttributeError, TypeError) as e:
        raise ValueError(f"cannot tell the architecture of {path} ({type(e).__name__}: {e})") from None
    plain = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # JSON and torch.save keep tuples apart
    bad = [f"--{k} {v} vs checkpoint {run.get(k)}" for k, v in flags.items()
           if (stored or run.get(k)) and plain(v) != plain(run.get(k))]  # inferred: only what the shapes tell
    if bad:
        raise ValueError(f"{path}: flags contradict the checkpoint: {', '.join(bad)}")
    run.update(flags)
    unknown = [f"--{k}" for k in ARCH_KEYS if not run.get(k)]
    if unknown:
        raise ValueError(f"cannot tell {', '.join(unknown)} of {path} from its weights: pass {' '.join(unknown)}")
    return ckpt, run


def check_actions(ckpt, sd, module, name):
    """Refuse a predictor whose a_{x→y} differs from the file's: by names (train.py stores them), else by width."""
    w = sd.get("action_mlp.0.weight", sd.get("action_tokens_weight"))  # Linear(Dp + A → Dp) or A tokens
    if not torch.is_tensor(w) or module.cond == "none":  # no conditioning weights (encoders too): no action
        return
    trained, ours = ckpt.get("action_names"), module.action_names
    width = len(trained) if trained else w.shape[1] - w.shape[0] if "action_mlp.0.weight" in sd else w.shape[0]
    if (tuple(trained) != ours) if trained and ours else width != module.action_dim:
        say = lambda names, n: f"actions ({', '.join(map(str, names))})" if names else f"{n}-wide actions"
        raise ValueError(f"{name} was trained with {say(trained, width)} but this code has "
                         f"{say(ours, module.action_dim)}: a_{{x→y}} changed; retrain, or load the encoder only")


def load_nets(ckpt, encoder=None, target_encoder=None, predictor=None, name="checkpoint"):
    """Load the given networks strictly (load_state) from a checkpoint's state dicts. The predictor's conditioning
    modules may be missing only where the checkpoint has none (official I-JEPA, or cond none): they keep their
    fresh init, with which a feature-conditioned predictor starts as the unconditioned one."""
    for key, module in zip(NETS, (encoder, target_encoder, predictor)):
        if module is not None:
            if not isinstance(ckpt.get(key), dict):
                raise ValueError(f"{name} has no {key!r} weights")
            sd = clean_state_dict(ckpt[key])
            fresh = key == "predictor" and not any(k.startswith(("action_mlp.", "action_tokens_")) for k in sd)
            check_actions(ckpt, sd, module, name)  # before load_state: its shape mismatch would not say why
            load_state(module, sd, conditioning_keys(module) if fresh else (), f"{name}:{key}")


def build_from_checkpoint(ckpt, run, action_dim, load=NETS, name="checkpoint"):
    """(encoder, target encoder, predictor) of a run config (load_checkpoint's) with build_models; the target
    encoder is a copy of the encoder. Those named in `load` are loaded (load_nets), the others stay fresh."""
    encoder, predictor = build_models(run, action_dim)
    nets = dict(zip(NETS, (encoder, copy.deepcopy(encoder), predictor)))
    load_nets(ckpt, name=name, **{k: nets[k] for k in load})
    return tuple(nets.values())
