"""
No file is unpickled into arbitrary objects anywhere in the repository (issue 29): a crafted checkpoint must not run
code. Every `torch.load` passes `weights_only=True` (tensors, numbers and containers only), nothing calls
`pickle.load`, `pickle.Unpickler`, `numpy.load(allow_pickle=True)` or another unpickler on a file, and no text says
`weights_only=False`. (`pickle.loads(pickle.dumps(obj))` of the tests' own objects is not reading a file.)
"""

import ast
import subprocess
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
SKIPPED = {".venv", ".git", "outputs", "node_modules", "__pycache__"}


def repository_files() -> list[Path]:
    """Tracked and untracked (not ignored) files of the repository, or every file outside `SKIPPED`."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        files = [ROOT / name for name in listed]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*") if p.is_file()]
    return [p for p in files if p.is_file() and not SKIPPED & set(p.relative_to(ROOT).parts)]


def call_name(node: ast.Call) -> str:
    parts, target = [], node.func
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    if isinstance(target, ast.Name):
        parts.append(target.id)
    return ".".join(reversed(parts))


def keyword(node: ast.Call, name: str):
    return next((k.value for k in node.keywords if k.arg == name), None)


def unpickling_calls(source: str) -> list[tuple[int, str]]:
    """`(line, why)` for every call in `source` that may unpickle a file into arbitrary objects."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = call_name(node)
        if name.endswith("torch.load"):
            value = keyword(node, "weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                found.append((node.lineno, f"{name} without weights_only=True"))
        elif name in ("pickle.load", "pickle.Unpickler", "cPickle.load", "dill.load", "joblib.load", "pd.read_pickle"):
            found.append((node.lineno, name))
        elif name.endswith(("np.load", "numpy.load")):
            value = keyword(node, "allow_pickle")
            if isinstance(value, ast.Constant) and value.value is True:
                found.append((node.lineno, f"{name} with allow_pickle=True"))
    return found


def test_the_checker_finds_what_it_looks_for():
    source = (
        "import pickle, torch, numpy as np\n"
        "torch.load('a')\n"
        "torch.load('a', weights_only=False)\n"
        "torch.load('a', weights_only=True)\n"
        "pickle.load(open('a', 'rb'))\n"
        "np.load('a', allow_pickle=True)\n"
        "np.load('a')\n"
        "pickle.loads(pickle.dumps(1))\n"
    )
    assert [line for line, _ in unpickling_calls(source)] == [2, 3, 5, 6]


def test_no_python_file_unpickles_a_file():
    offenders = []
    for path in repository_files():
        if path.suffix != ".py":
            continue
        try:
            source = path.read_text(encoding="utf-8")
            calls = unpickling_calls(source)
        except (UnicodeDecodeError, SyntaxError):
            continue
        offenders += [f"{path.relative_to(ROOT)}:{line}: {why}" for line, why in calls]
    assert offenders == []


@pytest.mark.parametrize("text", ["weights_only=False", "weights_only = False", "pickle.load("])
def test_no_file_says_it(text):
    """Scripts, docs and recipes too (a shell script's `python -c`, a snippet in the docs)."""
    this = Path(__file__).resolve()
    offenders = []
    for path in repository_files():
        if path.resolve() == this:
            continue
        try:
            content = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files
        offenders += [
            f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(content.splitlines(), 1) if text in line
        ]
    assert offenders == []
