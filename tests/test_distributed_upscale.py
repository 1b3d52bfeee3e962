"""
`deltadiff upscale` on a real 2-process CPU group started by `torchrun`: every output written once by one process,
the same pixels as one process writes, a rerun resumes, and one bad file does not stop the others.
"""

import os
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from conftest import write_image
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.testing_utils import tiny_pipeline


NAMES = [f"frame{i:02d}.png" for i in range(10)]
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
WROTE = re.compile(r"^\[process (\d)\] wrote (.+)$")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny model and a folder of ten 16x16 images."""
    root = tmp_path_factory.mktemp("distributed")
    tiny_pipeline(seed=0).save_pretrained(root / "model")
    for seed, name in enumerate(NAMES):
        write_image(root / "frames" / name, 16, 16, seed=seed)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def upscale(data, inputs, output, *flags, processes: int = 2) -> subprocess.CompletedProcess:
    """The CLI in a subprocess: `torchrun` with `processes` CPU processes, or plain `python -m` for 1."""
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(free_port())]
    argv = [*(launcher if processes > 1 else []), "-m", "diffusers_deltadiff.cli", "upscale", str(inputs)]
    argv += ["-o", str(output), "--model", str(data / "model"), *flags]
    env = {key: value for key, value in os.environ.items() if key not in LAUNCH_VARIABLES}
    # MKL's results may differ in the last bit with the memory alignment of its buffers, which differs between a
    # process that joined a group and one that did not; its conditional numerical reproducibility mode pins them.
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MKL_CBWR="AUTO,STRICT")
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=120)


def writes(stdout: str) -> dict[int, list[str]]:
    """`--verbose`'s `[process R] wrote PATH` lines, as the file names each process wrote."""
    by_process: dict[int, list[str]] = {}
    for match in filter(None, map(WROTE.match, stdout.splitlines())):
        by_process.setdefault(int(match.group(1)), []).append(os.path.basename(match.group(2)))
    return by_process


def summary(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stdout.splitlines() if "image(s) upscaled" in line]
    assert len(lines) == 1, result.stdout  # from the main process only
    return lines[0]


def pixels(path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path))


def mtimes(folder) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}


@pytest.fixture(scope="module")
def first_run(data):
    """The 2-process run into `out/`, and the 1-process run of the same folder into `reference/`."""
    result = upscale(data, data / "frames", data / "out", "--verbose")
    reference = upscale(data, data / "frames", data / "reference", processes=1)
    assert reference.returncode == 0, reference.stderr
    return result


def test_every_output_is_written_once_by_one_process(data, first_run):
    assert first_run.returncode == 0, first_run.stderr
    by_process = writes(first_run.stdout)
    assert sorted(by_process) == [0, 1]
    assert by_process[0] == NAMES[:5] and by_process[1] == NAMES[5:]  # disjoint, each once, nothing missing
    assert sorted(os.listdir(data / "out")) == NAMES  # and no temporary file left
    assert summary(first_run) == (
        f"10 image(s) upscaled to {data / 'out'} by 2 processes (5 + 5), 0 skipped (already there), 0 error(s)"
    )


def test_outputs_equal_the_single_process_outputs(data, first_run):
    for name in NAMES:
        assert np.array_equal(pixels(data / "out" / name), pixels(data / "reference" / name)), name


def test_a_rerun_resumes(data, first_run):
    before = mtimes(data / "out")
    rerun = upscale(data, data / "frames", data / "out", "--verbose")
    assert rerun.returncode == 0, rerun.stderr
    assert writes(rerun.stdout) == {}
    assert summary(rerun) == (
        f"0 image(s) upscaled to {data / 'out'} by 2 processes (0 + 0), 10 skipped (already there), 0 error(s)"
    )
    assert mtimes(data / "out") == before
    for name in NAMES[2:5]:  # as an interrupted run leaves it: the rest is split anew between the processes
        (data / "out" / name).unlink()
    rerun = upscale(data, data / "frames", data / "out", "--verbose")
    assert rerun.returncode == 0, rerun.stderr
    assert writes(rerun.stdout) == {0: NAMES[2:4], 1: NAMES[4:5]}
    assert "3 image(s) upscaled" in summary(rerun) and "7 skipped" in summary(rerun)
    after, kept = mtimes(data / "out"), NAMES[:2] + NAMES[5:]
    assert [after[name] for name in kept] == [before[name] for name in kept]
    for name in NAMES[2:5]:
        assert np.array_equal(pixels(data / "out" / name), pixels(data / "reference" / name)), name


def test_one_bad_file_does_not_stop_the_others(data, tmp_path):
    shutil.copytree(data / "frames", tmp_path / "frames")
    bad = tmp_path / "frames" / "frame04b.png"  # in the middle: process 0's last input
    bad.write_text("not an image")
    result = upscale(data, tmp_path / "frames", tmp_path / "out")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad}: not an image"]
    assert sorted(os.listdir(tmp_path / "out")) == NAMES
    assert summary(result).endswith("0 skipped (already there), 1 error(s)")
    assert summary(result).startswith("10 image(s) upscaled")


def test_skip_existing_in_one_process(data, tmp_path, capsys):
    shutil.copytree(data / "frames", tmp_path / "frames")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / NAMES[0]).write_bytes(b"kept")
    argv = ["upscale", str(tmp_path / "frames"), "-o", str(tmp_path / "out"), "--model", str(data / "model")]
    assert main(argv + ["--skip-existing", "--overwrite"]) == 2  # one or the other
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(argv + ["--skip-existing"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.strip() == f"9 image(s) upscaled to {tmp_path / 'out'}, 1 skipped (already there)"
    assert (tmp_path / "out" / NAMES[0]).read_bytes() == b"kept"
    assert sorted(os.listdir(tmp_path / "out")) == NAMES


def test_a_process_with_no_work_waits_for_the_others(data, tmp_path):
    """One image for two processes; process 1 has nothing to do and waits in the reports' gather."""
    (tmp_path / "frames").mkdir()
    shutil.copy(data / "frames" / NAMES[0], tmp_path / "frames")
    result = upscale(data, tmp_path / "frames", tmp_path / "out", "--verbose", "--process-timeout", "2")
    assert result.returncode == 0, result.stderr
    assert writes(result.stdout) == {0: [NAMES[0]]}
    assert summary(result) == (
        f"1 image(s) upscaled to {tmp_path / 'out'} by 2 processes (1 + 0), 0 skipped (already there), 0 error(s)"
    )


def test_a_process_timeout_too_long_for_the_group_is_a_flag_error(data, tmp_path):
    """Minutes beyond what c10d's clock holds overflowed `timedelta` (a traceback) or made the group hang."""
    result = upscale(data, data / "frames", tmp_path / "out", "--process-timeout", "1e308")
    assert result.returncode != 0
    assert "OverflowError" not in result.stderr, result.stderr  # torchrun's own traceback follows any failure
    assert "error: argument --process-timeout: must be a finite number between 0.1 and 1e+06, got 1e308" in (
        result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_world_size_set_by_hand_without_a_launcher_is_one_error_line(data, tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in LAUNCH_VARIABLES}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WORLD_SIZE="2", RANK="0", LOCAL_RANK="0")
    argv = ["-m", "diffusers_deltadiff.cli", "upscale", str(data / "frames"), "-o", str(tmp_path / "out")]
    argv += ["--model", str(data / "model")]
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: WORLD_SIZE is 2 but this process cannot join"), lines
    assert not (tmp_path / "out").exists()


def test_the_inputs_of_a_process_stopped_by_an_error_are_counted_as_errors(data, tmp_path):
    """`--steps` beyond the model's chain stops every process at the model's load: its inputs were not upscaled."""
    result = upscale(data, data / "frames", tmp_path / "out", "--steps", "99")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --steps 99: {data / 'model'} runs at most 4 steps (pass 1 to 4)"]
    assert summary(result) == (
        f"0 image(s) upscaled to {tmp_path / 'out'} by 2 processes (0 + 0), 0 skipped (already there), 10 error(s)"
    )
    assert not (tmp_path / "out").exists()


def test_a_flag_error_is_printed_once_per_machine(data, tmp_path):
    """Every process parses the same flags; the local main process alone prints the error, all exit with 2."""
    result = upscale(data, data / "frames", tmp_path / "out", "--quality", "500")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: argument --quality: must be between 0 and 100, got 500 (see `deltadiff upscale --help`)"]
    assert "exitcode  : 2" in result.stderr  # torchrun's report of each process
    assert not (tmp_path / "out").exists()


def test_a_process_timeout_shorter_than_the_work_is_one_error_line(data, tmp_path):
    """Process 1 has no input and gives up waiting for process 0 after 6 s: an error line, not a gloo traceback."""
    PIL.Image.new("RGB", (1024, 1024), (90, 120, 30)).save(tmp_path / "large.png")
    result = upscale(data, tmp_path / "large.png", tmp_path / "out", "--process-timeout", "0.1")
    assert result.returncode != 0
    assert "[rank1]: Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors[0].startswith("error: [process 1] the other processes did not finish within --process-timeout 0.1")
    assert not os.path.exists(tmp_path / "out" / "large.png")
