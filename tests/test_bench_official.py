"""scripts/bench_official.py --ours end to end, at toy shapes, against a TEST DOUBLE of the official I-JEPA code
(the clone is not here, and none of it may be copied in): our train.train_step and the double's step both timed,
alternating, and the ratio line. --device meta, a second device on any machine, catches an input made on the
wrong device (CPU and meta tensors cannot mix), as CPU images fed to the models on a GPU failed once (issue 27 #20)."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "bench_official.py")
OURS = "--method ijepa --loss smooth_l1 --min_keep 4"
TOY = ("--model vit_micro --img_size 16 --patch_size 4 --pred_depth 1 --pred_width 32 --batch_size 4 --steps 1 "
       "--warmup 1")

# The TEST DOUBLE, NOT the official code: the four names bench_official.py imports from a clone of
# github.com/facebookresearch/ijepa, written from their documented signatures and shapes. Small torch modules:
# a patch-embedding encoder and a per-token predictor; no attention, no official recipe.
DOUBLE = '''"""TEST DOUBLE of facebookresearch/ijepa for tests/test_bench_official.py; not the official code."""
import torch
from torch import nn

WIDTHS = {"vit_micro": 32, "vit_tiny": 192}


def apply_masks(x, masks):  # x [B, N, D], masks: [B, K] index tensors -> the kept tokens [len(masks)*B, K, D]
    return torch.cat([x.gather(1, m.unsqueeze(-1).expand(-1, -1, x.size(-1))) for m in masks])


def repeat_interleave_batch(x, B, repeat):  # each run of B rows, `repeat` times in a row
    return torch.cat([chunk for chunk in x.split(B) for _ in range(repeat)])


class Encoder(nn.Module):
    def __init__(self, img_size, patch_size, dim):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.pos = nn.Parameter(torch.randn(1, (img_size // patch_size) ** 2, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, masks=None):  # images [B, 3, H, W] -> tokens [B, N, D], or the kept ones of masks
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.norm(x if masks is None else apply_masks(x, masks))


class Predictor(nn.Module):
    def __init__(self, num_patches, dim, width, depth):
        super().__init__()
        self.embed, self.proj = nn.Linear(dim, width), nn.Linear(width, dim)
        self.pos = nn.Parameter(torch.randn(1, num_patches, width) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.Sequential(*[nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
                                      for _ in range(depth)])

    def forward(self, x, masks_x, masks):  # context [len(masks_x)*B, K, D] -> [len(masks)*len(masks_x)*B, Kt, D]
        B, pos = len(x) // len(masks_x), self.pos.expand(len(x) // len(masks_x), -1, -1)
        x = self.embed(x) + apply_masks(pos, masks_x)
        t = repeat_interleave_batch(apply_masks(pos, masks), B, len(masks_x)) + self.mask_token
        x = self.blocks(torch.cat([x.repeat(len(masks), 1, 1), t], 1))
        return self.proj(x[:, -t.size(1):])


def init_model(device, patch_size, model_name, crop_size, pred_depth, pred_emb_dim):
    encoder = Encoder(crop_size, patch_size, WIDTHS[model_name])
    predictor = Predictor((crop_size // patch_size) ** 2, WIDTHS[model_name], pred_emb_dim, pred_depth)
    return encoder.to(device), predictor.to(device)


class MaskCollator:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __call__(self, batch):
        raise AssertionError("--ours implies --masks ours: the official collator is built, not called")
'''
MODULES = {"helper": "init_model", "masks/multiblock": "MaskCollator", "masks/utils": "apply_masks",
           "utils/tensors": "repeat_interleave_batch"}


def write_double(folder):
    """A folder that bench_official.py --ijepa_dir takes: src/ with the double and the four modules it imports."""
    for pkg in ("src", "src/masks", "src/utils"):
        os.makedirs(folder / pkg, exist_ok=True)
        (folder / pkg / "__init__.py").write_text("")
    (folder / "src" / "double.py").write_text(DOUBLE)
    for module, name in MODULES.items():
        (folder / "src" / f"{module}.py").write_text(f"from src.double import {name}  # noqa: F401  (test double)\n")
    return folder


def bench(tmp_path, *flags, script=SCRIPT):
    cmd = [sys.executable, script, "--ijepa_dir", str(write_double(tmp_path / "ijepa")), *TOY.split(), *flags]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


@pytest.mark.parametrize("device", ["meta", "auto"])  # auto: the CPU here; CUDA and bf16 on a GPU machine
def test_ours_and_official_timed_side_by_side(tmp_path, device):
    p = bench(tmp_path, "--device", device, "--ours", OURS)
    assert p.returncode == 0, p.stdout + p.stderr
    head, official, ours = p.stdout.splitlines()
    want = "meta" if device == "meta" else "cuda" if "cuda" in head else "cpu"
    assert head.startswith(f"official I-JEPA vit_micro/4 16px, predictor 1x32, batch 4, {want}, "), head
    assert head.endswith("ours masks"), head
    assert re.fullmatch(r"official: median \d+ ms/step, mean \d+, of which mask collation [\d.]+ ms; all steps: \d+",
                        official), official
    assert re.fullmatch(rf"ours: median \d+ ms/step, mean \d+ \(ratio of medians \d+\.\d\d, ours {OURS}\); "
                        r"all steps: \d+", ours), ours


def test_images_made_off_the_device_fail_on_meta(tmp_path):
    """The bug's class, kept caught: bench_official.py with our step's images made on the CPU (no device=, as when
    the filer's H200 run failed) fails on --device meta."""
    src, good = open(SCRIPT).read(), "dtype=torch.uint8, device=device)"
    assert src.count(good) == 1, f"bench_official.py changed: no {good!r} to break"
    (tmp_path / "scripts").mkdir()
    broken = tmp_path / "scripts" / "bench_official.py"
    broken.write_text(src.replace(good, "dtype=torch.uint8)"))
    p = bench(tmp_path, "--device", "meta", "--ours", OURS, script=str(broken))
    assert p.returncode != 0, p.stdout + p.stderr
    assert "RuntimeError: Tensor on device meta is not on the expected device cpu!" in p.stderr, p.stderr
