"""README.md is the door, so its commands must work as written (issue 26's "done when"): every command in a fenced
bash block is parsed; a `python X.py` / `torchrun ... X.py` command's script answers --help with exit status 0 and
accepts every --key the command uses; `--config FILE` exists and holds only keys the script accepts; `bash X.sh`
exists; evaluate_mrr.py and finetune.py read a checkpoint that an earlier training command in the README writes;
every finetune.py command names its own --out_dir. The one-minute smoke run is run as written (into a temporary
folder) and prints the output the README shows. README.md stays at most 250 lines."""
import contextlib
import importlib
import io
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
# the scripts whose keys are a dict in the module: (module, dict name); others are asked with --help
KEYS = {"train.py": ("train", "CONFIG"), "finetune.py": ("finetune", "CONFIG"),
        "evaluate_mrr.py": ("evaluate_mrr", "DEFAULTS"), "bench.py": ("bench", "CONFIG")}
TRAINERS = ("train.py", "scripts/frozen_encoder_wm.py")  # commands that write OUT_DIR/latest.pt
_help = {}


def blocks(text):
    """(heading, [command]) for every ```bash / ```sh block: continuations joined, comments and blank lines
    dropped."""
    out, heading = [], ""
    for m in re.finditer(r"^(#+ [^\n]*)$|^```(bash|sh|shell)\n(.*?)^```", text, re.M | re.S):
        if m.group(1):
            heading = m.group(1)
            continue
        cmds = []
        for line in m.group(3).replace("\\\n", " ").splitlines():
            line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
            if line:
                cmds.append(line)
        out.append((heading, cmds))
    return out


def commands():
    return [c for _, cmds in blocks(open(README).read()) for c in cmds]


def split(cmd):
    """(program, script or None, [(key, value)]) of one command; env assignments before it are skipped."""
    words = shlex.split(cmd)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]
    if not words:
        return None, None, []
    prog = words[0]
    script = next((w for w in words[1:] if w.endswith((".py", ".sh"))), None)
    args = words[words.index(script) + 1:] if script else []
    pairs, i = [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            key, eq, val = a[2:].partition("=")
            if not eq and i + 1 < len(args) and not args[i + 1].startswith("--"):
                val, i = args[i + 1], i + 1
            pairs.append((key, val))
        i += 1
    return prog, script, pairs


def accepted(script):
    """The keys `script` accepts; its --help must exit 0 (in process for the four main scripts)."""
    if script not in _help:
        if script in KEYS:
            mod = importlib.import_module(KEYS[script][0])
            out = io.StringIO()
            with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
                mod.main(["--help"])
            assert e.value.code in (0, None), f"{script} --help exited {e.value.code}"
            keys = set(getattr(mod, KEYS[script][1])) | {"config"}
        else:
            p = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                               timeout=60)
            assert p.returncode == 0, f"{script} --help exited {p.returncode}: {p.stderr[-300:]}"
            keys = set(re.findall(r"--(\w+)", p.stdout))
        _help[script] = keys
    return _help[script]


def test_readme_is_short():
    n = open(README).read().count("\n")
    assert n <= 250, f"README.md has {n} lines; keep it at most 250 (the record goes to docs/)"


def test_readme_names_the_test_command():
    assert "python -m pytest" in commands()


def test_every_command_works_as_written():
    sys.path.insert(0, ROOT)
    written = set()  # out_dirs that an earlier training command writes
    finetune_dirs = []
    for cmd in commands():
        prog, script, pairs = split(cmd)
        if prog is None:
            continue
        if prog == "pip":
            assert cmd == "pip install -r requirements.txt", cmd
            assert os.path.exists(os.path.join(ROOT, "requirements.txt"))
            continue
        if cmd == "python -m pytest":
            continue
        assert prog in ("python", "torchrun", "bash"), f"README command the test cannot check: {cmd}"
        assert script and os.path.exists(os.path.join(ROOT, script)), f"no script {script}: {cmd}"
        if prog == "bash":
            continue
        keys = accepted(script)
        given = dict(pairs)
        for key, val in pairs:
            assert key in keys, f"{script} has no --{key}: {cmd}"
            if key == "config":
                path = os.path.join(ROOT, val)
                assert os.path.exists(path), f"no config file {val}: {cmd}"
                unknown = set(json.load(open(path))) - keys
                assert not unknown, f"{val} holds keys {script} does not accept: {unknown}"
        if script in TRAINERS:
            out = given.get("out_dir")
            if out is None and "config" in given:
                out = json.load(open(os.path.join(ROOT, given["config"]))).get("out_dir")
            if out is None and script in KEYS:
                mod = importlib.import_module(KEYS[script][0])
                out = getattr(mod, KEYS[script][1])["out_dir"]
            written.add(os.path.normpath(out))
        if "ckpt" in given:
            d = os.path.normpath(os.path.dirname(given["ckpt"]))
            assert d in written, f"{given['ckpt']} is not written by any earlier training command: {cmd}"
        if script == "finetune.py":
            assert "out_dir" in given, f"give every finetune.py command its own --out_dir: {cmd}"
            finetune_dirs.append(given["out_dir"])
    assert len(finetune_dirs) == len(set(finetune_dirs)), f"finetune commands share an --out_dir: {finetune_dirs}"


def test_smoke_run_as_written(tmp_path, capsys):
    """The README's one-minute smoke run, its out_dir moved to a temporary folder (in process: one torch import)."""
    smoke = [cmds for heading, cmds in blocks(open(README).read()) if "smoke" in heading.lower()]
    assert smoke and len(smoke[0]) == 2, "README needs a smoke-run block: train.py, then evaluate_mrr.py"
    sys.path.insert(0, ROOT)
    out = str(tmp_path / "smoke")
    for cmd in smoke[0]:
        words = shlex.split(cmd)
        assert words[0] == "python" and words[1] in ("train.py", "evaluate_mrr.py"), cmd
        for key in ("--out_dir", "--ckpt"):
            if key in words:
                i = words.index(key) + 1
                words[i] = os.path.join(out, os.path.relpath(words[i], "runs/smoke"))
        mod = importlib.import_module(words[1][:-3])
        cwd = os.getcwd()
        os.chdir(ROOT)  # the README's paths (configs/...) are relative to the repository
        try:
            mod.main(words[2:] + (["--device", "cpu"] if "--device" not in words else []))
        except SystemExit as e:
            assert e.code in (0, None), f"{cmd} exited {e.code}"
        finally:
            os.chdir(cwd)
    printed = capsys.readouterr().out.replace(out, "runs/smoke").splitlines()
    assert printed[-1].startswith("MRR over sources"), printed[-1]
    # the README's expected output (the block after the commands) is what the evaluation prints; the training's loss
    # line is left out, as thread counts change the order of float sums
    text = open(README).read()
    expected = re.search(r"smoke run.*?```text\n(.*?)```", text, re.S | re.I).group(1).splitlines()
    missing = [line for line in expected if not line.startswith("done:") and line not in printed]
    assert not missing, f"README's smoke output is stale: {missing}"
