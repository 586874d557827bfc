"""The command line of train.py, finetune.py, evaluate_mrr.py and bench.py: each script's keys as one `table` (default,
description, choices) → defaults < --config JSON files < --key value flags (`parse_config`), the --help text, and the
start-up checks of the values (`check_values`). Bad input: one `prog: error:` line on stderr, exit status 2."""
import difflib
import json
import math
import os
import sys
import textwrap

import torch

import common
import data

EXIT_DONE = "exit status: 0 done; 2 bad input (one line on stderr)"
EXIT_TRAINING = (f"{EXIT_DONE}; 1 failed after start (one line: the disk, a file, the data); 3 the loss became "
                 "NaN/Inf; 130 / 143 stopped by Ctrl-C / SIGTERM after saving (continue with --resume latest)")
DATASETS = ("shapes", "imagefolder", *data.TORCHVISION)  # the names data.build_dataset knows
MAXIMUM = dict(drop_path=1, smoothing=1, reprob=1, randaug=30, ema=1)  # a probability, RandAugment's bins, a momentum
WIDTH, COLUMN = 100, 28  # --help: line width, and where the descriptions start


def table(**keys):
    """key=(default, one-line description[, choices]) → (defaults {key: default}, help {key: (description,
    choices, default)}). choices: the code's own table (a dict, read for its keys, or a tuple), so that an entry
    added there is listed by --help and accepted by check_values without an edit here; so is the default."""
    return {k: v[0] for k, v in keys.items()}, {k: (v[1], v[2] if len(v) > 2 else None, v[0]) for k, v in keys.items()}


def typed(value):
    """A value as a user types it: true/false, 0.3,1.0, "" for the empty string."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value) or '""'


def refill(doc):
    """A docstring for the terminal: prose paragraphs refilled to WIDTH; indented lines (commands) and blank lines
    kept as they are."""
    out, prose = [], []
    for line in (doc or "").strip("\n").splitlines() + [""]:
        if line.strip() and not line.startswith(" "):
            prose.append(line)
        else:
            out += textwrap.wrap(" ".join(prose), WIDTH, break_on_hyphens=False) + [line.rstrip()]
            prose = []
    return out[:-1]


def help_text(prog, doc, defaults, helps, exits):
    lines = [f"usage: {prog} [--config FILE.json ...] [--key value | --key=value ...]", "", *refill(doc), "",
             "keys, with their defaults (a --config file holds {\"key\": value, ...}; flags win over files):"]
    for key, default in defaults.items():
        text, choices, _ = helps.get(key, ("", None, None))
        if choices is not None:
            text += f"; one of: {', '.join(map(str, choices))}"
        head = f"  --{key} {typed(default)}"
        if len(head) >= COLUMN:
            lines.append(head)
            head = ""
        lines += textwrap.wrap(text, WIDTH, initial_indent=head.ljust(COLUMN), subsequent_indent=" " * COLUMN,
                               break_on_hyphens=False) or [head]
    return "\n".join(lines + [""] + textwrap.wrap(exits, WIDTH, subsequent_indent="  "))


def unknown(what, key, known, quote=str):
    """'unknown option --max-steps; did you mean --max_steps?': the known key a mistyped one was meant to be ('-' for
    '_' counts as no difference), else see --help."""
    guess = difflib.get_close_matches(key.replace("-", "_"), known, n=1)
    return f"unknown {what}" + (f"; did you mean {quote(guess[0])}?" if guess else " (see --help)")


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
        try:
            return tuple(type(default[0])(p) for p in parts)
        except ValueError:
            raise ValueError(f"--{key} expects comma-separated numbers, got {text!r}") from None
    try:
        return type(default)(text)
    except ValueError:
        raise ValueError(f"--{key} expects {type(default).__name__}, got {text!r}") from None


def _check(key, value, default):
    """`value` (from a config file, or a flag parsed by _convert) has the type of the key's default, a tuple its
    length, a list any length > 0 (a grid): the same check for both, so `--ema 0.99` fails at start-up."""
    if isinstance(default, (tuple, list)):
        numbers = isinstance(value, (tuple, list)) and all(type(v) in (int, float) for v in value)  # not bool
        fixed = isinstance(default, tuple)  # a tuple: its default's length; a list (a grid): any length but 0
        if not numbers or not value or (fixed and len(value) != len(default)):
            raise ValueError(f"{key} expects {len(default) if fixed else '1 or more'} numbers, got {value!r}")
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        raise ValueError(f"{key} expects {type(default).__name__}, got {value!r}")
    return value


def parse_config(defaults, argv=None, prog="train.py", doc="", helps=None, exits=EXIT_DONE):
    """Defaults < `--config a.json [--config b.json]` < `--key value` / `--key=value`. An unknown key or a bad value
    exits with a one-line error (a near miss names the key meant); `--help` prints doc, then every key with its
    default, its description and choices from `helps` (table's), then `exits`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, cli, i = {k: tuple(v) if isinstance(v, list) else v for k, v in defaults.items()}, {}, 0
    try:
        while i < len(argv):
            arg = argv[i]
            if arg in ("-h", "--help"):
                print(help_text(prog, doc, defaults, helps or {}, exits))
                sys.exit(0)
            if not arg.startswith("--"):
                raise ValueError(f"unexpected argument {arg!r} (options look like --key value)")
            key, eq, val = arg[2:].partition("=")
            if key != "config" and key not in defaults:
                raise ValueError(unknown(f"option --{key}", key, [*defaults, "config"], "--{}".format))
            if not eq:
                if i + 1 >= len(argv):
                    raise ValueError(f"--{key} needs a value")
                val, i = argv[i + 1], i + 1
            i += 1
            if key != "config":
                cli[key] = _check(f"--{key}", _convert(key, val, defaults[key]), defaults[key])
                continue
            try:
                with open(val) as f:
                    loaded = json.load(f)
            except (OSError, ValueError) as e:  # ValueError: not JSON, or not text (UnicodeDecodeError)
                raise ValueError(f"cannot read config file {val}: {e}") from None
            if not isinstance(loaded, dict):
                raise ValueError(f"config file {val} must hold one JSON object {{\"key\": value}}, not a "
                                 f"{type(loaded).__name__}")
            for k, v in loaded.items():
                if k not in defaults:
                    raise ValueError(unknown(f"key {k!r} in {val}", k, defaults, repr))
                cfg[k] = _check(f"{k} in {val}", v, defaults[k])
    except ValueError as e:
        common.fail(prog, e)
    cfg.update(cli)  # command-line flags win over config files wherever they appear
    return cfg


def check_values(cfg, prog, minimum=None, helps=None):
    """The checks of every script in one place, so that a bad value fails at start-up, not mid-run: every number
    (each of a tuple) finite and >= minimum[key] (default 0; None: unchecked; seeds may be negative), a key with
    choices in `helps` (table's) one of them or its default, and a device that this machine has."""
    minimum = {"seed": None, **(minimum or {})}
    for key, value in cfg.items():
        nums = value if isinstance(value, tuple) else (value,)
        low = minimum.get(key, 0)
        if low is None or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in nums):
            continue
        if not all(math.isfinite(x) and low <= x <= MAXIMUM.get(key, math.inf) for x in nums):
            kind, top = "" if all(map(math.isfinite, nums)) else "a finite number ", MAXIMUM.get(key)
            common.fail(prog, f"--{key} must be {kind}>= {low}{f' and <= {top}' if top else ''}, got "
                              f"{','.join(map(str, nums))}")
    if not -2**32 < cfg.get("seed", 0) < 2**32:  # what the seeded streams (data.py, train.py) are built for
        common.fail(prog, f"--seed must be between -(2**32 - 1) and 2**32 - 1, got {cfg['seed']}")
    for key, (_, choices, default) in (helps or {}).items():
        if choices is not None and key in cfg and cfg[key] not in choices and cfg[key] != default:
            common.fail(prog, f"--{key} must be one of {', '.join(map(str, choices))}, got {cfg[key]!r}")
    name = cfg.get("device", "auto")
    try:
        device = torch.device("cpu" if name == "auto" else name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        common.fail(prog, f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        common.fail(prog, f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); use "
                          "--device cpu or auto")


def check_data_root(cfg, prog):
    """A --data_root that is not given, not a folder or empty fails here, before any network is built: on such a
    root data.build_dataset fails at once, with its own message (a real one is read once, later)."""
    if cfg["data"] not in ("", "shapes") and not (os.path.isdir(cfg["data_root"]) and os.listdir(cfg["data_root"])):
        try:
            data.build_dataset(cfg["data"], cfg["data_root"] or None)
        except (ValueError, FileNotFoundError) as e:
            common.fail(prog, e)
