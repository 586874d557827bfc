"""Plumbing shared by train.py, finetune.py, evaluate_mrr.py and bench.py: torchrun/DDP set-up, precision and
autocast, the generic warm-up and cosine curves, AdamW, atomic checkpoints, the JSONL log, graceful stops, peak
memory, one-line errors, and the checks of output folders and data before any work starts (the command line and
its values: cli.py). No method content lives here: what follows which curve (I-JEPA App. A.1: lr, weight decay,
EMA) is train.py's `schedules`, and which parameters get weight decay is model.py's `param_groups`, next to the
parameter names it reads."""
import contextlib
import fcntl
import json
import math
import multiprocessing
import os
import re
import resource
import signal
import socket
import sys
import warnings

import torch
import torch.distributed as dist
from tqdm import tqdm


# Exit status of every script: 0 done; 1 the run failed after start (one line: a file, the disk, the data); 2 bad
# input (one `prog: error:` line on stderr); 3 the loss became NaN/Inf; 128 + N when stopped by signal N after
# saving (cli.py's EXIT_* say so at the end of --help)
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NONFINITE = 1, 2, 3
DTYPES = ("auto", "float32", "bfloat16", "float16")  # --dtype (autocast_dtype)


class NonFiniteLoss(ValueError):
    """A loss that became NaN/Inf: fail() exits with EXIT_NONFINITE, not as bad input."""
    exit_code = EXIT_NONFINITE


def setup_distributed(name="auto"):
    """torchrun sets RANK / LOCAL_RANK / WORLD_SIZE. `name` is --device: auto = this rank's GPU (cuda:LOCAL_RANK)
    where there is one, else the CPU; cuda (no index) = cuda:LOCAL_RANK. NCCL on GPU, gloo on CPU, so that
    `--device cpu` under torchrun runs on gloo on a GPU machine too. Returns (rank, world, device)."""
    rank, world, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda":
        device = torch.device("cuda", local if device.index is None else device.index)
        n = torch.cuda.device_count()
        if device.index >= n:  # e.g. torchrun --nproc_per_node=2 on a one-GPU machine
            fail(os.path.basename(sys.argv[0]), f"{device} does not exist: this machine has {n} CUDA device(s); start "
                                                "at most that many processes per node, or use --device cpu")
        torch.cuda.set_device(device)
        # the host only launches kernels and draws small index tensors: one CPU thread. torch's default of one per
        # core makes every small op's thread team wait for cores that the loader workers hold (an H200 run at batch
        # 256 took 135 ms per step against 26 ms without workers, and 4 runs at once shared that rate)
        torch.set_num_threads(1)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def no_sync(modules, quiet):
    """Gradient accumulation under DDP: when `quiet`, the DDP modules skip their gradient all-reduce inside."""
    stack = contextlib.ExitStack()
    for m in modules if quiet else ():
        stack.enter_context(m.no_sync())
    return stack


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
    # fused: on CUDA one launch for all parameters; on CPU 2x faster than the per-tensor loop torch picks there
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type in ("cuda", "cpu"))


def set_schedule(optimizer, lr, wd=None):
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
        if wd is not None and not g.get("no_decay", False):
            g["weight_decay"] = wd


def save_atomic(obj, path):
    """Write to a temp file in the same folder, fsync, then rename: a crash or kill mid-save leaves the previous
    file intact (rename is atomic on POSIX). A failed write (the disk full, a file-size limit, the folder gone)
    removes the temp file and raises one OSError saying what is left."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch's writer reports a failed write as a RuntimeError without a cause
        with contextlib.suppress(OSError):
            os.remove(tmp)
        why = getattr(e, "strerror", None) or "the write failed: is the disk full, or a file-size limit set?"
        left = "the previous one stays" if os.path.isfile(path) else "there is no previous one"
        raise OSError(f"cannot save {path} ({why}); {left}") from None


def load_states(ck, path, **objs):
    """A resume: each object's state from checkpoint `ck` (objs: {key: optimizer, scaler, model}), and its step,
    returned. A file edited by hand or damaged is a ValueError naming what does not fit."""
    for key, obj in objs.items():
        try:
            obj.load_state_dict(ck[key])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise ValueError(f"{path}: its {key!r} state does not fit this run ({type(e).__name__}: {e})") from None
    if not (type(ck.get("step")) is int and ck["step"] >= 0):
        raise ValueError(f"{path}: its step {ck.get('step')!r} is not a step count")
    return ck["step"]


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
    """While it lives, Ctrl-C and SIGTERM (a cluster's pre-emption) set `.requested` and `.signum` instead of
    interrupting a step or a checkpoint write; a second one exits at once, unsaved (whatever the first one waits on,
    a blocked read say, cannot hold the run). restore() puts the previous handlers back."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested, self.signum = False, None
        self.old = [signal.signal(s, self._request) for s in self.SIGNALS]

    def _request(self, signum, _frame):
        if self.requested:
            print(f"{os.path.basename(sys.argv[0])}: stopped by a second {signal.Signals(signum).name}, without saving",
                  file=sys.stderr, flush=True)
            kill_workers()
            os._exit(128 + signum)
        self.requested, self.signum = True, signum

    def restore(self):
        for s, handler in zip(self.SIGNALS, self.old):
            signal.signal(s, handler)


def kill_workers():
    """Kill this process's loader workers. They ignore SIGINT and SIGTERM (ignore_stop_signals), so Python's exit
    handler, which stops children with SIGTERM and then waits for them, would wait forever."""
    for child in multiprocessing.active_children():
        child.kill()
        child.join()


@contextlib.contextmanager
def running(prog):
    """Around a run, start-up included: any error ends the process within seconds, the loader workers killed first
    (they ignore SIGINT and SIGTERM: Python's exit handler would wait for them forever). An error of the run's
    surroundings (the disk, a file: OSError; the data: ValueError; a loader worker's) is one line, EXIT_FAILED (NaN:
    EXIT_NONFINITE); a bug keeps its traceback. The out_dir locks taken inside are released however it ends."""
    held = len(HELD)
    try:
        yield
    except Exception as e:
        kill_workers()
        end_bars()
        if "in DataLoader worker process" in str(e):
            fail(prog, f"{str(e).strip().splitlines()[-1]} (in a loader worker: --workers 0 shows where)", EXIT_FAILED)
        if isinstance(e, (OSError, ValueError)):
            fail(prog, e, EXIT_FAILED)
        raise
    except BaseException:
        kill_workers()
        raise
    finally:
        while len(HELD) > held:
            os.close(HELD.pop())


def end_bars():
    """Close the live progress bars, so that a message after them starts a line of its own."""
    for bar in list(tqdm._instances):  # tqdm's own registry of open bars
        bar.close()


def peak_mem_gb(device):
    """Peak memory of this process: the CUDA allocator's on GPU, else the resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def ignore_stop_signals(_worker_id=None):
    """DataLoader worker_init_fn: Ctrl-C and SIGTERM reach the workers too (one process group), and one killed by
    them makes the next batch raise; the main process stops them itself after its graceful stop, so they ignore both."""
    for s in GracefulStop.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def exit_stopped(prog, stop, step, path, main_rank=True):
    """After a graceful stop by a signal: one line saying what was saved, exit status 128 + the signal number."""
    if main_rank:
        print(f"{prog}: stopped by {signal.Signals(stop.signum).name} at step {step}; saved {path}, continue with "
              "--resume latest", file=sys.stderr, flush=True)
    sys.exit(128 + stop.signum)


def exit_nonfinite(prog, step, path, lr_flag, main_rank=True):
    """A NaN/Inf loss: nothing is saved from that state; one line, exit status EXIT_NONFINITE."""
    kept = f"the last good checkpoint stays at {path}" if os.path.isfile(path) else "no checkpoint was saved before"
    end_bars()
    if main_rank:
        print(f"{prog}: error: loss became NaN/Inf before step {step}; nothing was saved from this state, {kept}. "
              f"Lower {lr_flag} or use --dtype float32.", file=sys.stderr, flush=True)
    sys.exit(EXIT_NONFINITE)


def end_distributed(module, world, main_rank):
    """The end of a DDP run: a cheap check that the replicas of `module` stayed identical, then the process group
    goes. Nothing to do in one process."""
    if world > 1:
        sums = torch.stack([p.detach().double().sum() for p in module.parameters()])
        gathered = [torch.zeros_like(sums) for _ in range(world)]
        dist.all_gather(gathered, sums)
        if main_rank:
            print(f"replicas identical: {all(torch.equal(g, sums) for g in gathered)}", flush=True)
        dist.barrier()
        dist.destroy_process_group()


def fail(prog, msg, code=EXIT_BAD_INPUT):
    """One-line error: no traceback, exit status `code` (bad input: 2, argparse's) or the exception's `exit_code`
    (NonFiniteLoss: 3). An error with a traceback in its text (a loader worker's) is told by its last line."""
    text = str(msg).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [""]
    print(f"{prog}: error: {lines[-1] if 'Traceback' in text else ' '.join(lines)}", file=sys.stderr, flush=True)
    sys.exit(getattr(msg, "exit_code", code))


# ---------------------------------------------------------------------------------------------- output folders
RUN_FILE = re.compile(r"latest\.pt|log\.jsonl|ep\d+\.pt")  # the files of a run (train.py, finetune.py): one makes a run
LOCK, HELD = ".lock", []  # lock_out_dir's file; the descriptors of the locks this process holds


def check_writable(folder, flag):
    """A folder that exists or can be created, and written to: checked at start-up, not at the first save."""
    path = os.path.abspath(folder or ".")
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path) or not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {folder}: {path} is {'not writable' if os.path.isdir(path) else 'a file'}; "
                         f"pick another {flag}")


def claim_out_dir(cfg):
    """Refuse to start a run over another one: a folder that holds a run needs --resume latest (continue it) or
    --overwrite true (start over). Raises ValueError; nothing is touched here (prepare_out_dir does that later,
    and checks again under its lock)."""
    out = cfg["out_dir"]
    if not out.strip():  # "" would be this folder: a run's files among whatever else is here
        raise ValueError("--out_dir must name a folder, got ''")
    check_writable(out, "--out_dir")
    if cfg["resume"] and cfg["overwrite"]:
        raise ValueError("--resume and --overwrite true contradict each other: continue the run or start over")
    found = [f for f in sorted(os.listdir(out)) if RUN_FILE.fullmatch(f)] \
        if os.path.isdir(out) else []  # snapshots alone are a run too: a fresh run would write over them
    odd = [f for f in found if not os.path.isfile(os.path.join(out, f))]
    if odd:
        raise ValueError(f"--out_dir {out}: {', '.join(odd)} should be a file; move it away or pick another --out_dir")
    if found and not cfg["resume"] and not cfg["overwrite"]:
        raise ValueError(f"--out_dir {out} already holds a run ({', '.join(found)}): continue it with --resume "
                         "latest, or start over with --overwrite true (deletes it), or pick another --out_dir")
    here = os.path.realpath(out)
    if found and cfg["resume"] not in ("", "latest") and os.path.dirname(os.path.realpath(cfg["resume"])) != here:
        raise ValueError(f"--out_dir {out} holds another run ({', '.join(found)}): --resume {cfg['resume']} would "
                         "write over it; pick an empty --out_dir, or resume in the checkpoint's own folder")


def lock_out_dir(out):
    """This process's hold on a run folder: an exclusive flock on out/.lock, dropped by the kernel when the process
    ends (kill -9 too), so a crashed run's lock is stale by construction. Held by a live run: ValueError naming it."""
    fd = os.open(os.path.join(out, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace") or "?"
        os.close(fd)
        raise ValueError(f"--out_dir {out} is in use by a live run ({holder}): wait for it or stop it, or pick "
                         "another --out_dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.path.basename(sys.argv[0])}, pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
    HELD.append(fd)
    return fd


def prepare_out_dir(cfg, prog, step=None):
    """Create and lock out_dir (main rank, once every check has passed: a live run's folder, --overwrite true
    included, is refused here before anything is touched; `running` releases the lock). --overwrite
    true deletes the old run's latest.pt, epNNNN.pt and log.jsonl, so the new run starts a fresh log. A resume
    from `step` drops the log rows past it (a crash after the checkpoint left them). Under the lock no save of this
    tool can be running: the temp files of killed saves (latest.pt.tmp.PID, epNNNN.pt.tmp.PID) are deleted, and
    reported; files it does not name so stay."""
    out = cfg["out_dir"]
    try:
        os.makedirs(out, exist_ok=True)
        lock_out_dir(out)
        claim_out_dir(cfg)  # again: a run may have started and saved here since the first check
    except ValueError as e:
        fail(prog, e)
    except OSError as e:  # a folder that cannot be made (/proc, /sys), a filesystem without locks
        fail(prog, f"--out_dir {out} cannot hold a run: {e.strerror} ({e.filename or out})")
    log = os.path.join(out, "log.jsonl")
    if cfg["resume"] and step is not None and os.path.isfile(log):
        rows = [line for line in open(log) if line.strip() and json.loads(line).get("step", 0) <= step]
        with open(log + ".tmp", "w") as f:
            f.writelines(rows)
        os.replace(log + ".tmp", log)
    for name in sorted(os.listdir(out)):
        if cfg["overwrite"] and RUN_FILE.fullmatch(name):
            os.remove(os.path.join(out, name))
        elif re.fullmatch(r"(?:latest|ep\d+)\.pt\.tmp\.\d+", name):
            os.remove(os.path.join(out, name))
            print(f"{prog}: note: removed {os.path.join(out, name)}, left by a save that was killed", file=sys.stderr)


def probe_dataset(ds, n=8):
    """Read n items spread over ds at start-up, so that data that cannot be read fails here in one line rather
    than as a loader worker's traceback in the first step. The unreadable files it meets are warned about only
    when the data passes (data.Labeled warns once per file); when it fails, its error says enough."""
    with warnings.catch_warnings(record=True) as caught, torch.random.fork_rng(devices=[]):  # random crops: no trace
        warnings.simplefilter("always")
        try:
            for i in torch.linspace(0, len(ds) - 1, min(n, len(ds))).long().tolist():
                ds[i]
        except ValueError as e:
            raise ValueError(f"cannot read {getattr(getattr(ds, 'ds', ds), 'root', 'the data')}: {e}") from None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

