"""The README's quick start works from the repository alone: its main-job command and its Python example."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import PIL.Image


ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def run_in_repo(*args: str) -> subprocess.CompletedProcess:
    """`python ARGS` in the repository root, offline, as a user who just cloned it would run it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


def test_the_main_job_upscales_images_that_ship_with_the_repository(tmp_path):
    setup = code_blocks("bash")[0]
    command = shlex.split(setup.split("&&")[-1])
    assert command[:2] == ["deltadiff", "upscale"]
    output = command.index("-o")
    inputs = [ROOT / arg for arg in command[2:output]]
    assert all(path.is_dir() and not str(path).startswith("..") for path in inputs)  # nothing from outside the repo
    command[output + 1] = str(tmp_path / "upscaled")
    result = run_in_repo("-m", "diffusers_deltadiff.cli", *command[1:])
    assert result.returncode == 0, result.stderr
    sources = sorted(p for folder in inputs for p in folder.glob("*.png"))
    assert len(sources) >= 3
    for source in sources:
        with PIL.Image.open(source) as lr, PIL.Image.open(tmp_path / "upscaled" / source.name) as sr:
            assert sr.size == (lr.width * 4, lr.height * 4)
    assert (ROOT / "docs" / "images" / "before_after.png").is_file()


def test_the_python_example_runs(tmp_path):
    example = code_blocks("python")[0]
    saved = re.search(r'\.save\("([^"]+)"\)', example).group(1)
    script = example.replace(f'"{saved}"', repr(str(tmp_path / saved)))
    result = run_in_repo("-c", script)
    assert result.returncode == 0, result.stderr
    with PIL.Image.open(ROOT / "examples" / "images" / "coffee.png") as lr, PIL.Image.open(tmp_path / saved) as sr:
        assert sr.size == (lr.width * 4, lr.height * 4)


def test_the_documentation_links_resolve():
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
