"""
`deltadiff evaluate`'s inputs and labels (issue 29): nothing is scored that does not pair up, nothing is labelled as
something it is not, and the results never land among the images they score.
"""

import errno
import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import write_image
from diffusers_deltadiff import atomic_files
from diffusers_deltadiff.cli import main
from diffusers_deltadiff.evaluation import load_pairs
from diffusers_deltadiff.testing_utils import tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tiny_pipeline(seed=0).save_pretrained(path)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def benchmark(folder: Path, count: int = 2, size: int = 24) -> Path:
    for i in range(count):
        write_image(folder / f"img{i}.png", size, size, seed=i)
    return folder


def subsampled(hr_folder: Path, lr_folder: Path, scale: int) -> Path:
    """LR images made independently of the code under test: every `scale`-th pixel of the HR image."""
    lr_folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(hr_folder.glob("*.png")):
        array = np.asarray(PIL.Image.open(path))
        PIL.Image.fromarray(array[::scale, ::scale]).save(lr_folder / path.name)
    return lr_folder


def evaluate(capsys, tmp_path, model_dir, *extra):
    return run(capsys, "evaluate", "--model", model_dir, "--no-lpips", "--grid-images", 0, *extra)


def test_hr_images_given_as_lr_are_refused_naming_both_sizes(tmp_path, model_dir, capsys):
    """Before: scored anyway (the output cropped to a corner of the HR image), exit 0."""
    hr = benchmark(tmp_path / "hr")
    code, out, err = evaluate(capsys, tmp_path, model_dir, "--hr", hr, "--lr", hr, "--output", tmp_path / "res")
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert lines[0] == (
        f"error: {hr / 'img0.png'}: its LR image {hr / 'img0.png'} is 24x24, but the HR image is 24x24 (after the "
        "crop to a multiple of 4): x4 needs a 6x6 LR image"
    )
    assert lines[-1] == f"error: {hr}: no usable HR images" and not (tmp_path / "res").exists()


def test_an_lr_of_another_factor_is_refused_and_the_rest_scored(tmp_path, model_dir, capsys):
    hr = benchmark(tmp_path / "hr")
    lr = subsampled(hr, tmp_path / "lr", 4)
    PIL.Image.open(hr / "img1.png").resize((12, 12)).save(lr / "img1.png")  # a x2 LR among x4 ones
    code, out, err = evaluate(capsys, tmp_path, model_dir, "--hr", hr, "--lr", lr, "--output", tmp_path / "res")
    assert code == 1, (out, err)
    assert err.strip().splitlines() == [
        f"error: {hr / 'img1.png'}: its LR image {lr / 'img1.png'} is 12x12, but the HR image is 24x24 (after the "
        "crop to a multiple of 4): x4 needs a 6x6 LR image"
    ]
    rows = (tmp_path / "res" / "per_image.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in rows} == {"img0.png"}


def test_an_lr_that_fits_after_the_mod_crop_is_scored(tmp_path):
    """A 26x25 HR image is scored as 24x24 (the protocol's crop to a multiple of 4): its 6x6 LR fits."""
    write_image(tmp_path / "hr" / "a.png", 25, 26)
    write_image(tmp_path / "lr" / "a.png", 6, 6)
    pairs, errors = load_pairs(str(tmp_path / "hr"), 4, None, str(tmp_path / "lr"), "bicubic", 0)
    assert errors == [] and pairs[0][1].shape == (3, 24, 24) and pairs[0][2].shape == (3, 6, 6)


def test_a_centre_crop_takes_the_same_window_of_hr_and_lr(tmp_path):
    """Before: HR was centre-cropped, LR not: the pair no longer showed the same place."""
    hr_folder = benchmark(tmp_path / "hr", count=1, size=64)
    lr_folder = subsampled(hr_folder, tmp_path / "lr", 4)
    pairs, errors = load_pairs(str(hr_folder), 4, 32, str(lr_folder), "bicubic", 0)
    assert errors == []
    _, hr, lr = pairs[0]
    assert hr.shape == (3, 32, 32) and lr.shape == (3, 8, 8)
    assert torch.equal(hr[:, ::4, ::4], lr)  # every 4th HR pixel is the LR pixel, as the LR was made
    full = torch.from_numpy(np.array(PIL.Image.open(hr_folder / "img0.png"))).permute(2, 0, 1).float() / 255
    assert torch.allclose(hr, full[:, 16:48, 16:48])  # the centre of the HR image


@pytest.mark.parametrize("where", ["hr", "lr"])
def test_output_inside_the_benchmark_is_refused(tmp_path, model_dir, capsys, where):
    """Before: `grid.png` was written into the HR folder, and the next run scored one more image."""
    hr = benchmark(tmp_path / "hr")
    lr = subsampled(hr, tmp_path / "lr", 4)
    output = (hr if where == "hr" else lr) / "results"
    code, out, err = evaluate(capsys, tmp_path, model_dir, "--hr", hr, "--lr", lr, "--output", output)
    assert code == 2, (out, err)
    folder = hr if where == "hr" else lr
    assert err.strip() == (
        f"error: --output {output}: inside the --{where} folder {folder}, whose images are scored: write the "
        "results elsewhere"
    )
    assert not output.exists()


def test_output_as_the_hr_folder_itself_is_refused(tmp_path, model_dir, capsys):
    hr = benchmark(tmp_path / "hr")
    code, _, err = evaluate(capsys, tmp_path, model_dir, "--hr", hr, "--output", hr)
    assert code == 2 and "inside the --hr folder" in err
    assert sorted(p.name for p in hr.iterdir()) == ["img0.png", "img1.png"]


def test_ablate_output_inside_the_benchmark_is_refused(tmp_path, model_dir, capsys):
    """`ablate --output` is a file: over a benchmark image it would have replaced it with a markdown table."""
    hr = benchmark(tmp_path / "hr")
    before = (hr / "img0.png").read_bytes()
    code, _, err = run(capsys, "ablate", "--hr", hr, "--model", model_dir, "--output", hr / "img0.png")
    assert code == 2 and "inside the --hr folder" in err
    assert (hr / "img0.png").read_bytes() == before


def test_an_lr_folder_inside_the_hr_folder_is_not_read_as_hr(tmp_path):
    """`--hr Set5 --lr Set5/LR`: the LR images are not HR images too."""
    hr = benchmark(tmp_path / "Set5")
    subsampled(hr, hr / "LR", 4)
    pairs, errors = load_pairs(str(hr), 4, None, str(hr / "LR"), "bicubic", 0)
    assert errors == [] and [name for name, _, _ in pairs] == ["img0.png", "img1.png"]


def test_two_models_with_one_label_are_refused(tmp_path, model_dir, capsys):
    """Before: `runA/best` and `runB/best` both labelled `best`: one was dropped, the other's numbers shown, exit 0."""
    hr = benchmark(tmp_path / "hr")
    for run_name in ("runA", "runB"):
        (tmp_path / run_name).mkdir()
        os.symlink(model_dir, tmp_path / run_name / "best")
    a, b = tmp_path / "runA" / "best", tmp_path / "runB" / "best"
    code, out, err = run(
        capsys, "evaluate", "--hr", hr, "--model", a, "--model", b, "--no-lpips", "--output", tmp_path / "res"
    )
    assert code == 2, (out, err)
    assert err.strip() == (
        f"error: --model {b}: its label 'best' is also {a}'s: name them apart with --model LABEL={b}"
    )
    assert not (tmp_path / "res").exists()
    code, out, err = run(
        capsys, "evaluate", "--hr", hr, "--model", f"A={a}", "--model", f"B={b}", "--no-lpips", "--grid-images", 0,
        "--output", tmp_path / "res",
    )  # fmt: skip
    assert code == 0, err
    assert "| A | 2 |" in out and "| B | 2 |" in out


def test_a_model_labelled_bicubic_is_refused(tmp_path, model_dir, capsys):
    """Before: its scores were averaged into the bicubic baseline's row."""
    hr = benchmark(tmp_path / "hr")
    code, _, err = run(capsys, "evaluate", "--hr", hr, "--model", f"bicubic={model_dir}", "--output", tmp_path / "res")
    assert code == 2 and "its label 'bicubic' is also the bicubic baseline's" in err
    code, out, err = evaluate(
        capsys, tmp_path, model_dir, "--hr", hr, "--baseline", "none", "--output", tmp_path / "res"
    )
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")]
    assert code == 0 and rows == ["method", model_dir.name]


def test_the_title_says_where_the_lr_images_came_from(tmp_path, model_dir, capsys):
    """Before: LR read from `--lr` was labelled `bicubic LR` (the unused `--degradation` default)."""
    hr = benchmark(tmp_path / "hr")
    lr = subsampled(hr, tmp_path / "lr", 4)
    code, out, _ = evaluate(capsys, tmp_path, model_dir, "--hr", hr, "--lr", lr, "--output", tmp_path / "res")
    assert code == 0
    title = out.splitlines()[0]
    assert title == f"### hr, x4, LR images from {lr}, Y channel, crop border 4"
    assert (tmp_path / "res" / "summary.md").read_text().splitlines()[0] == title
    code, out, _ = evaluate(capsys, tmp_path, model_dir, "--hr", hr, "--crop", 20, "--output", tmp_path / "res")
    assert code == 0 and out.splitlines()[0] == "### hr, centre 20x20, x4, bicubic LR, Y channel, crop border 4"


def test_a_degradation_with_an_lr_folder_is_refused(tmp_path, model_dir, capsys):
    hr = benchmark(tmp_path / "hr")
    lr = subsampled(hr, tmp_path / "lr", 4)
    code, _, err = evaluate(
        capsys, tmp_path, model_dir, "--hr", hr, "--lr", lr, "--degradation", "realesrgan", "--output", tmp_path / "r"
    )
    assert code == 2 and "--degradation realesrgan makes LR images from HR, --lr reads them" in err


def test_an_output_that_cannot_be_a_folder_is_refused_before_any_model_runs(tmp_path, model_dir, capsys, monkeypatch):
    from diffusers_deltadiff.cli import evaluate as evaluate_command

    hr = benchmark(tmp_path / "hr")
    (tmp_path / "taken").write_text("a file")
    monkeypatch.setattr(evaluate_command, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    code, _, err = evaluate(capsys, tmp_path, model_dir, "--hr", hr, "--output", tmp_path / "taken")
    assert code == 2 and "cannot create the output folder" in err
    assert (tmp_path / "taken").read_text() == "a file"


def test_results_are_written_whole_or_not_at_all(tmp_path, model_dir, capsys, monkeypatch):
    hr = benchmark(tmp_path / "hr")
    out_dir = tmp_path / "res"
    assert evaluate(capsys, tmp_path, model_dir, "--hr", hr, "--output", out_dir)[0] == 0
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic_files.os, "write", full)
    code, _, err = evaluate(capsys, tmp_path, model_dir, "--hr", hr, "--output", out_dir)
    assert code == 2 and f"error: {out_dir}: cannot write the results (No space left on device)" in err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before  # the last complete results, no temp files


def test_images_of_one_name_in_two_subfolders_are_told_apart(tmp_path, model_dir, capsys):
    """Before: both scored as `1.png`: the summary said 1 image for 2, and the CSV rows could not be told apart."""
    write_image(tmp_path / "hr" / "x" / "1.png", 24, 24, seed=0)
    write_image(tmp_path / "hr" / "y" / "1.png", 24, 24, seed=1)
    code, out, err = evaluate(capsys, tmp_path, model_dir, "--hr", tmp_path / "hr", "--output", tmp_path / "res")
    assert code == 0, err
    assert "| bicubic | 2 |" in out
    rows = (tmp_path / "res" / "per_image.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows if ",bicubic," in row] == ["x/1.png", "y/1.png"]


def test_two_lr_images_for_one_hr_image_are_refused_naming_both(tmp_path):
    """Before: `a.png` and DIV2K-style `ax4.png` both paired with `a`; the last one was scored, silently."""
    hr_folder = benchmark(tmp_path / "hr")
    lr_folder = subsampled(hr_folder, tmp_path / "lr", 4)
    write_image(lr_folder / "img0x4.png", 6, 6, seed=9)
    pairs, errors = load_pairs(str(hr_folder), 4, None, str(lr_folder), "bicubic", 0)
    assert errors == [
        f"{hr_folder / 'img0.png'}: 2 LR images are named for it in {lr_folder} ({lr_folder / 'img0.png'}, "
        f"{lr_folder / 'img0x4.png'}): keep one"
    ]
    assert [name for name, _, _ in pairs] == ["img1.png"]


def test_a_repeated_seed_is_refused(tmp_path, model_dir, capsys):
    """Before: `--seeds 0,1,1` ran seed 1 twice and counted it twice in the mean PSNR (which said 2 seeds)."""
    hr = benchmark(tmp_path / "hr")
    code, _, err = evaluate(capsys, tmp_path, model_dir, "--hr", hr, "--seeds", "0,1,1", "--output", tmp_path / "r")
    assert code == 2 and "argument --seeds: 1 is given twice" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("label", ["a|b", "two\nlines"])
def test_a_label_that_would_break_the_table_is_refused(tmp_path, model_dir, capsys, label):
    """Before: `| a|b |` (a column too many) or a row cut in two in summary.md."""
    hr = benchmark(tmp_path / "hr")
    spec = f"{label}={model_dir}"
    code, _, err = evaluate(capsys, tmp_path, model_dir, "--hr", hr, "--model", spec, "--output", tmp_path / "r")
    assert code == 2 and err.strip() == (
        f"error: --model {spec!r}: its label {label!r} holds '|' or a control character, which would break the "
        "results table: name it with --model LABEL=FOLDER"
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("spec", ["", "best="])
def test_a_model_with_no_path_is_refused(tmp_path, model_dir, capsys, spec):
    """Before: `error: : not a pipeline folder (no model_index.json)`: the current folder, unnamed, was tried."""
    hr = benchmark(tmp_path / "hr")
    code, _, err = run(capsys, "evaluate", "--hr", hr, "--model", spec, "--output", tmp_path / "r")
    assert (
        code == 2 and err.strip() == f"error: --model {spec!r}: no model folder given (--model FOLDER or LABEL=FOLDER)"
    )


def test_a_results_file_name_taken_by_a_folder_is_refused_before_any_model_runs(
    tmp_path, model_dir, capsys, monkeypatch
):
    """Before: found after the whole evaluation, as `res: cannot write the results (Is a directory)`."""
    from diffusers_deltadiff.cli import evaluate as evaluate_command

    hr = benchmark(tmp_path / "hr")
    (tmp_path / "res" / "per_image.csv").mkdir(parents=True)
    monkeypatch.setattr(evaluate_command, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    code, _, err = evaluate(capsys, tmp_path, model_dir, "--hr", hr, "--output", tmp_path / "res")
    assert code == 2 and err.strip() == (
        f"error: {tmp_path / 'res' / 'per_image.csv'}: a folder where the results file goes: move it, or choose "
        "another --output"
    )


@pytest.mark.parametrize("flag", ["--hr", "--lr"])
def test_a_folder_name_too_long_to_exist_is_one_line(tmp_path, model_dir, capsys, flag):
    """Before: a traceback (pathlib's is_dir raises ENAMETOOLONG where os.path's answers False)."""
    hr = benchmark(tmp_path / "hr")
    long_name = str(tmp_path / ("a" * 300))
    folders = {"--hr": hr, "--lr": None, flag: long_name}
    argv = [arg for flag_, folder in folders.items() if folder for arg in (flag_, folder)]
    code, _, err = evaluate(capsys, tmp_path, model_dir, *argv, "--output", tmp_path / "r")
    assert code == 2 and err.strip() == f"error: {long_name}: {flag[2:].upper()} folder not found"


class AlexNetShapedLPIPS(torch.nn.Module):
    """
    The `lpips` package's AlexNet LPIPS in shape only (its feature layers' kernels, strides, padding and pooling, with
    few random channels): its numbers mean nothing, the image sizes it takes are the real network's. The package
    itself cannot run here (its backbone weights are downloaded).
    """

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        layers = [torch.nn.Conv2d(3, 4, 11, 4, 2), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2)]
        layers += [torch.nn.Conv2d(4, 4, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2)]
        self.features = torch.nn.Sequential(*layers, torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU())

    def forward(self, a, b):
        return (self.features(a) - self.features(b)).pow(2).mean()


def alexnet_smallest_side() -> int:
    """The smallest side AlexNet's features take, by their arithmetic: 11x11 stride 4 padding 2, then two 3x3
    stride-2 poolings (each needs 3 pixels) around a size-keeping 5x5."""
    side = 1
    while not (side + 4 - 11) // 4 + 1 >= 3 + 2 * (3 - 1):  # the first pooling must leave 3 for the second
        side += 1
    return side


def test_lpips_skips_images_smaller_than_its_network_takes(tmp_path):
    """
    Before: with `lpips` installed, an image under 31 pixels (the protocol takes 20 at x4) stopped the evaluation with
    a traceback after every other score was computed. Now it has no LPIPS, the others keep theirs, and the summary
    says over how many images the mean is.
    """
    from diffusers_deltadiff.evaluation import LPIPSMetric, evaluate

    metric = LPIPSMetric.__new__(LPIPSMetric)
    metric.model, metric.reason = AlexNetShapedLPIPS().eval(), None
    side = alexnet_smallest_side()
    assert side == 31
    image = torch.rand(3, 40, 40)
    assert metric(image[:, : side - 1, :side], image[:, : side - 1, :side]) is None
    assert metric(image[:, :side, :side], image[:, :side, :side]) == 0.0  # runs, and equal images are 0
    pairs = [
        (name, torch.rand(3, size, size), torch.rand(3, size // 4, size // 4)) for name, size in (("s", 24), ("b", 40))
    ]
    result = evaluate(pairs, {}, lpips_metric=metric, grid_images=0)
    assert [(s.image, s.lpips is None) for s in result.scores] == [("s", True), ("b", False)]
    assert "LPIPS over 1 of 2 images: the others are smaller than its network takes." in result.markdown()
    metric.model = lambda a, b: (_ for _ in ()).throw(RuntimeError("CUDA error: an illegal memory access"))
    with pytest.raises(RuntimeError, match="illegal memory access"):  # only the size error means "no LPIPS"
        metric(image, image)
