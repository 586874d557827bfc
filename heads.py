"""The heads of the finetuning protocols and probes (IWM arXiv 2403.00504, §5 and Table 8) that finetune.py trains
on the encoder f_θ and the world model p_φ, and `evaluate`, which scores their outputs. They need only torch and
model.py's MLP block, and live apart from model.py only to keep each file under the project's 400-line limit."""
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from model import MLP


class AttentiveHead(nn.Module):
    """V-JEPA attentive probe: one learned query token cross-attends to the tokens (pre-norm on the keys/values),
    an MLP with residuals and LayerNorm refines it, a Linear classifies it."""
    def __init__(self, dim, num_heads, num_classes):
        super().__init__()
        self.num_heads = num_heads
        self.query_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm1, self.q, self.kv = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.proj, self.norm2, self.mlp = nn.Linear(dim, dim), nn.LayerNorm(dim, eps=1e-6), MLP(dim, 4 * dim)
        self.linear = nn.Linear(dim, num_classes)
        for m in self.modules():  # the encoder's init: truncated normal std 0.02, zero bias (LayerNorm: 1, 0)
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.query_token, std=0.02, a=-0.04, b=0.04)

    def forward(self, x):
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(self.query_token).reshape(1, h, 1, C // h).expand(B, -1, -1, -1)
        k, v = self.kv(self.norm1(x)).reshape(B, N, 2, h, C // h).permute(2, 0, 3, 1, 4)
        y = self.query_token + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, 1, C))
        y = y + self.mlp(self.norm2(y))
        return self.linear(y[:, 0])


def pooled_head(dim, num_classes):
    """MAE finetuning head on mean-pooled tokens: LayerNorm → Linear, weights init std 2e-5, zero bias."""
    head = nn.Sequential(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, num_classes))
    nn.init.trunc_normal_(head[1].weight, std=2e-5)
    nn.init.zeros_(head[1].bias)
    return head


class Classifier(nn.Module):
    """The trained part of every protocol: [encoder] → [predictor: all positions, null action, task token] →
    [mean pool] → heads. Its input is images when the encoder is trained, else the frozen target encoder's tokens
    or its cached pooled features. `task`: None (every head on every row, each with its own task's token), an int
    (that task's token and head on every row) or a LongTensor [B] (row-wise tasks; head t sees only task t's rows)."""
    def __init__(self, heads, encoder=None, predictor=None, num_tasks=1, pool=False):
        super().__init__()
        self.encoder, self.predictor, self.heads, self.pool = encoder, predictor, nn.ModuleList(heads), pool
        self.task_token = None
        if num_tasks > 1:
            self.task_token = nn.Parameter(torch.zeros(num_tasks, 1, predictor.predictor_embed.out_features))
            nn.init.trunc_normal_(self.task_token, std=0.02, a=-0.04, b=0.04)

    def forward(self, x, task=None):
        if task is None and self.task_token is not None:  # one predictor pass per task token
            return [self(x, t)[0] for t in range(len(self.heads))]
        z = self.encoder(x) if self.encoder is not None else x
        if self.predictor is not None:  # masks None: every position is context and every position is predicted
            tok = None if self.task_token is None else self.task_token[task]
            if isinstance(task, int) and tok is not None:
                tok = tok.expand(len(z), -1, -1)
            z = self.predictor(z, extra_tokens=tok)
        if self.pool:
            z = z.mean(1)
        if task is None:
            return [h(z) for h in self.heads]
        if isinstance(task, int):
            return [self.heads[task](z)]
        return [h(z[task == t]) for t, h in enumerate(self.heads)]


@torch.no_grad()
def evaluate(clf, batches, outputs, device, world):
    """Top-1 (and top-5 where there are more than 5 classes) of every output over the val split, summed over
    ranks. outputs(x, y) → {suffix: (logits, targets)}."""
    clf.eval()
    stats, classes = {}, {}
    for x, y in batches:
        for key, (logits, target) in outputs(x, y).items():
            top = logits.float().topk(min(5, logits.shape[1]), dim=1).indices == target[:, None]
            s = torch.stack([top[:, 0].sum(), top.any(1).sum(), torch.tensor(len(target), device=device)]).double()
            stats[key], classes[key] = stats.get(key, 0) + s, logits.shape[1]
    clf.train()
    res = {}
    for key, s in stats.items():
        if world > 1:
            dist.all_reduce(s)
        c1, c5, n = s.tolist()
        res[f"top1{key}"] = 100 * c1 / n
        if classes[key] > 5:
            res[f"top5{key}"] = 100 * c5 / n
    return res
