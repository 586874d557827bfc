"""Plumbing shared by train.py, finetune.py, evaluate_mrr.py and bench.py: configuration from defaults + JSON
files + `--key value` flags, torchrun/DDP set-up, precision and autocast, the generic warm-up and cosine curves,
AdamW, atomic checkpoints, the JSONL log, graceful stops, peak memory and a plain DataLoader. No method content
lives here: what follows which curve (I-JEPA App. A.1: lr, weight decay, EMA) is train.py's `schedules`, and which
parameters get weight decay is model.py's `param_groups`, next to the parameter names it reads."""
import contextlib
import json
import math
import os
import resource
import signal
import sys

import torch
import torch.distributed as dist


def _convert(key, text, default):
    """Parse a command-line string into the type of the key's default value."""
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--{key} expects true/false, got {text!r}")
    if isinstance(default, (tuple, list)):
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        return tuple(type(default[0])(p) if default else float(p) for p in parts)
    try:
        return type(default)(text)
    except ValueError:
        raise ValueError(f"--{key} expects {type(default).__name__}, got {text!r}") from None


def _check(key, value, default):
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)) or (default and len(value) != len(default)):
            raise ValueError(f"{key} expects {len(default)} numbers, got {value!r}")
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        raise ValueError(f"{key} expects {type(default).__name__}, got {value!r}")
    return value


def parse_config(defaults, argv=None, prog="train.py", doc=""):
    """Defaults < `--config a.json [--config b.json]` < `--key value` / `--key=value`. An unknown key or a bad value
    exits with a one-line error; `--help` lists every key with its default."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, cli, i = dict(defaults), {}, 0
    try:
        while i < len(argv):
            arg = argv[i]
            if arg in ("-h", "--help"):
                print(f"usage: {prog} [--config FILE.json] [--key value ...]\n{doc}\nkeys (default):")
                for k, v in defaults.items():
                    print(f"  --{k} {','.join(map(str, v)) if isinstance(v, tuple) else v}")
                sys.exit(0)
            if not arg.startswith("--"):
                raise ValueError(f"unexpected argument {arg!r} (options look like --key value)")
            key, eq, val = arg[2:].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise ValueError(f"--{key} needs a value")
                val, i = argv[i + 1], i + 1
            i += 1
            if key == "config":
                try:
                    with open(val) as f:
                        loaded = json.load(f)
                except (OSError, json.JSONDecodeError) as e:
                    raise ValueError(f"cannot read config file {val}: {e}") from None
                for k, v in loaded.items():
                    if k not in defaults:
                        raise ValueError(f"unknown key {k!r} in {val} (see --help)")
                    cfg[k] = _check(k, v, defaults[k])
            elif key in defaults:
                cli[key] = _convert(key, val, defaults[key])
            else:
                raise ValueError(f"unknown option --{key} (see --help)")
    except ValueError as e:
        sys.exit(f"{prog}: error: {e}")
    cfg.update(cli)  # command-line flags win over config files wherever they appear
    return cfg


def setup_distributed():
    """torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; NCCL on GPU, gloo on CPU. Returns (rank, world, device)."""
    rank, world, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def no_sync(modules, quiet):
    """Gradient accumulation under DDP: when `quiet`, the DDP modules skip their gradient all-reduce inside."""
    stack = contextlib.ExitStack()
    for m in modules if quiet else ():
        stack.enter_context(m.no_sync())
    return stack


def pick_device(name, device):
    return device if name == "auto" else torch.device(name)


def autocast_dtype(device, name="auto"):
    """bf16 where the GPU supports it, else fp16 (with a GradScaler); fp32 on CPU (autocast there is slow)."""
    if name == "float32" or device.type != "cuda":
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def autocast(device, dtype):
    """The one autocast context of every script: `dtype` from autocast_dtype (None: fp32, autocast off)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def cosine(step, total, start, end):
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))


def warmup_cosine(step, warmup, total, start_lr, lr, final_lr):
    """Linear warm-up start_lr → lr over `warmup` steps, then cosine lr → final_lr (I-JEPA App. A.1)."""
    if step < warmup:
        return start_lr + (lr - start_lr) * step / warmup
    return cosine(step - warmup, total - warmup, lr, final_lr)


def make_adamw(groups, lr, betas=(0.9, 0.999), device=torch.device("cpu")):
    # the fused CUDA kernel updates all parameters in one launch; CPU uses the foreach path
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda")


def set_schedule(optimizer, lr, wd=None):
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
        if wd is not None and not g.get("no_decay", False):
            g["weight_decay"] = wd


def save_atomic(obj, path):
    """Write to a temp file in the same folder, fsync, then rename: a crash or kill mid-save leaves the previous
    file intact (rename is atomic on POSIX)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class JsonlLog:
    """One JSON object per line, appended and flushed at once (a crashed run keeps its log)."""
    def __init__(self, path, enabled=True):
        self.path, self.enabled = path, enabled
        if enabled:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    def write(self, **row):
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}) + "\n")


class GracefulStop:
    """While it lives, Ctrl-C and SIGTERM (a cluster's pre-emption) set `.requested` instead of interrupting a step
    or a checkpoint write; restore() puts the previous handlers back."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.old = [signal.signal(s, self._request) for s in self.SIGNALS]

    def _request(self, *_):
        self.requested = True

    def restore(self):
        for s, handler in zip(self.SIGNALS, self.old):
            signal.signal(s, handler)


def peak_mem_gb(device):
    """Peak memory of this process: the CUDA allocator's on GPU, else the resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def fail(prog, msg):
    """One-line error for bad input: no traceback, exit code 2 (argparse's)."""
    print(f"{prog}: error: {msg}", file=sys.stderr)
    sys.exit(2)


def make_loader(dataset, batch_size, *, train, workers=0, seed=0, drop_last=None):
    """A DataLoader for one process or for DDP (DistributedSampler when torch.distributed is initialised).
    The caller must call `loader.sampler.set_epoch(epoch)` each epoch when the sampler has it (DDP), otherwise
    every epoch repeats the same order; the single-process RandomSampler advances its own seeded generator."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    drop_last = train if drop_last is None else drop_last
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=drop_last)
    elif train:
        sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = torch.utils.data.SequentialSampler(dataset)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed + 1))  # seeds the workers' RNGs (random transforms)
