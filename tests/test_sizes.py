"""Size is part of the design (DEVELOPERS.md): the method's core files hold at most 3,000 lines together, every Python
file at most 400, every function at most 80, every line of code at most 120 characters."""
import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = ("model.py", "augment.py", "masks.py", "train.py", "finetune.py", "evaluate_mrr.py", "data.py", "heads.py",
        "common.py", "cli.py")


def files(*patterns):
    return sorted(p for pat in patterns for p in glob.glob(os.path.join(ROOT, pat)))


def lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def test_core_files_fit_3000_lines():
    sizes = {name: len(lines(os.path.join(ROOT, name))) for name in CORE}
    assert sum(sizes.values()) <= 3000, sizes


def test_every_python_file_and_function_fits():
    paths = files("*.py", "scripts/*.py", "tests/*.py")
    assert len(paths) > len(CORE)
    big = {os.path.relpath(p, ROOT): n for p in paths if (n := len(lines(p))) > 400}
    assert not big, f"files over 400 lines: {big}"
    long_fns = []
    for p in paths:
        for node in ast.walk(ast.parse("\n".join(lines(p)))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long_fns.append(f"{os.path.relpath(p, ROOT)}:{node.lineno} {node.name}")
    assert not long_fns, f"functions over 80 lines: {long_fns}"


def test_no_line_over_120_characters():
    wide = [f"{os.path.relpath(p, ROOT)}:{i}" for p in files("*.py", "scripts/*", "tests/*.py", ".ci/*")
            for i, line in enumerate(lines(p), 1) if len(line) > 120]
    assert not wide, f"lines over 120 characters: {wide}"
