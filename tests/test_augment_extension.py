"""The documented extension (augment.py's header, issue 26): a copy of augment.py with a destructive transform added
by exactly its 3 edits, imported in a fresh interpreter ahead of the repository's, passes the augment tests, the MRR
tests and a training smoke test (they import augment once, so the copy is what they all see)."""
import difflib
import os
import re
import subprocess
import sys

import augment as A

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW = "invert"  # a plausible next transform: 1 − x
SUITE = ["tests/test_augment.py", "tests/test_evaluate_mrr.py", "tests/test_train.py::test_resume_refuses_other_config"]
BOOT = """import sys
sys.path.insert(0, sys.argv.pop(1))  # the modified copy first
import augment, pytest
assert augment.ACTION_NAMES[-1] == {new!r} and augment.__file__.startswith(sys.path[0])
code = pytest.main(sys.argv[1:])
assert code or sys.modules["evaluate_mrr"].sources()[-1] == {new!r}, "the tests did not run on the copy"
sys.exit(code)
"""


def three_edits(src, name):
    """augment.py's source with a destructive transform `name` (1 − x, probability 0.2) added as its header says:
    the name appended to ACTION_NAMES, a `<name>_p` field last in AugmentConfig, an entry in DESTRUCTIVE_OPS."""
    src = re.sub(r"^ACTION_NAMES = \(([^)]*)\)", lambda m: f'ACTION_NAMES = ({m[1]}, "{name}")', src, count=1,
                 flags=re.M)
    lines = src.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("class AugmentConfig"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i][0].isspace())
    while not lines[end - 1].strip():
        end -= 1
    lines.insert(end, f"    {name}_p: float = 0.2\n")
    ops = next(i for i, line in enumerate(lines) if line.startswith("DESTRUCTIVE_OPS = {"))
    lines.insert(ops + 1, f'    "{name}": lambda x, p, cfg: 1.0 - x,\n')
    return "".join(lines)


def test_documented_three_edit_extension_passes_the_tests(tmp_path):
    with open(A.__file__) as f:
        src = f.read()
    new = three_edits(src, NEW)
    diff = [line for line in difflib.ndiff(src.splitlines(), new.splitlines()) if line[:1] in "+-"]
    assert len(diff) == 4, diff  # the names line, old and new, and two added lines
    (tmp_path / "augment.py").write_text(new)
    (tmp_path / "boot.py").write_text(BOOT.format(new=NEW))
    args = ["-x", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'pytest'}"]
    res = subprocess.run([sys.executable, str(tmp_path / "boot.py"), str(tmp_path), *args, *SUITE], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    code, out = res.returncode, (res.stdout + res.stderr)[-4000:]  # locals: a failure shows these, not the process
    assert code == 0, f"the tests fail with {NEW!r} added (exit {code}):\n{out}"
