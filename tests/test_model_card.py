"""Model cards the Hub renders: YAML metadata parsed back with `huggingface_hub.ModelCard`, metrics from the results."""

import csv
from pathlib import Path

import PIL.Image
import pytest
from huggingface_hub import ModelCard

from diffusers_deltadiff.model_card import benchmark_means, eval_results, write_model_card
from diffusers_deltadiff.pretrained import model_path
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline


ROWS = {
    # benchmark: rows of (image, method, seed, psnr_y, ssim_y)
    "Set5": [
        ("a.png", "bicubic", "", 28.0, 0.80),
        ("a.png", "ours", "", 29.0, 0.81),
        ("b.png", "ours", "", 30.5, 0.83),
        ("b.png", "bicubic", "", 27.0, 0.70),
    ],
    "Set14": [
        ("c.png", "ours", "0", 25.0, 0.70),
        ("c.png", "ours", "1", 27.0, 0.72),  # seeds averaged per image first: c = 26.0 / 0.71
        ("d.png", "ours", "0", 24.0, 0.60),
    ],
}
# the means by hand: Set5 (29.0 + 30.5) / 2, (0.81 + 0.83) / 2; Set14 (26.0 + 24.0) / 2, (0.71 + 0.60) / 2
EXPECTED = {("Set5", "psnr"): 29.75, ("Set5", "ssim"): 0.82, ("Set14", "psnr"): 25.0, ("Set14", "ssim"): 0.655}
TEMPLATE = "# tiny\n\nIntro.\n\n<!-- comparison -->\n\n<!-- usage -->\n\n## Limits\n\nA test model.\n"


@pytest.fixture
def results(tmp_path) -> Path:
    folder = tmp_path / "quality"
    for benchmark, rows in ROWS.items():
        (folder / benchmark).mkdir(parents=True)
        with open(folder / benchmark / "per_image.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "method", "seed", "psnr_y", "ssim_y", "psnr_cbcr", "lpips", "lr_psnr_y"])
            for image, method, seed, psnr, ssim in rows:
                writer.writerow([image, method, seed, psnr, ssim, 40.0, "", 50.0])
    return folder


def card_metrics(card: ModelCard) -> dict:
    return {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}


def test_benchmark_means_average_seeds_per_image(results):
    means = benchmark_means(results / "Set14" / "per_image.csv", "ours")
    assert means == pytest.approx({"psnr_y": 25.0, "ssim_y": 0.655})
    with pytest.raises(ValueError, match="no rows for method 'nobody'"):
        benchmark_means(results / "Set14" / "per_image.csv", "nobody")
    with pytest.raises(ValueError, match="no <benchmark>/per_image.csv"):
        eval_results(results / "Set5", "ours")


def test_written_card_parses_with_its_metrics(results, tmp_path):
    folder = tmp_path / "tiny-x4"
    pipe = tiny_lossless_pipeline(zero_output=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(folder)
    write_model_card(
        pipe, folder, TEMPLATE, results, method="ours", repo_id="someone/tiny-x4", datasets=["sun_hays80"]
    )

    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license) == ("diffusers", "image-to-image", "apache-2.0")
    assert "super-resolution" in data.tags and data.datasets == ["sun_hays80"]
    assert set(data.metrics) == {"psnr", "ssim"}
    assert card_metrics(card) == pytest.approx(EXPECTED)
    assert data.to_dict()["model-index"][0]["name"] == "tiny-x4"
    # the text: markers filled, usage with diffusers alone, the figure next to the card
    text = card.text
    assert "<!--" not in text and "## Limits" in text
    assert 'custom_pipeline="someone/tiny-x4", trust_remote_code=True' in text
    assert "](comparison.png)" in text
    figure = PIL.Image.open(folder / "comparison.png")
    assert figure.size == (3 * 192 * 2, 192 * 2)  # bicubic | model | original, 2x zoom


def test_a_x2_card_says_x2(results, tmp_path):
    """The card of a x2 pipeline: its figure is made at x2 (same size as the original), its metadata, usage and
    caption name x2."""
    folder = tmp_path / "tiny-x2"
    pipe = tiny_lossless_pipeline(zero_output=True, scale=2)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(folder)
    write_model_card(pipe, folder, TEMPLATE, results, method="ours", repo_id="someone/tiny-x2")
    card = ModelCard.load(folder / "README.md")
    tasks = {result["task"]["name"] for result in card.data.to_dict()["model-index"][0]["results"]}
    assert tasks == {"Image super-resolution x2 (bicubic degradation)"}
    assert "# 2x, deterministic" in card.text and "downscaled x2 with PIL bicubic" in card.text
    assert "x4" not in card.text
    assert PIL.Image.open(folder / "comparison.png").size == (3 * 192 * 2, 192 * 2)


def test_template_without_markers_is_refused(results, tmp_path):
    pipe = tiny_lossless_pipeline(zero_output=True)
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match="<!-- usage -->"):
        write_model_card(pipe, tmp_path, "# no markers\n<!-- comparison -->", results, method="ours", repo_id="x/y")


@pytest.mark.parametrize("name", ["x4", "x2", "x4-real"])
def test_shipped_card(name):
    folder = Path(model_path(name) or pytest.skip(f"no shipped {name} model"))
    card = ModelCard.load(folder / "README.md")
    assert (card.data.library_name, card.data.pipeline_tag) == ("diffusers", "image-to-image")
    metrics = card_metrics(card)
    assert {name for name, _ in metrics} == {"Set5", "Set14", "BSD68"}
    assert {kind for _, kind in metrics} == {"psnr", "ssim"}
    # the metadata and the card's own table tell the same numbers
    for (benchmark, kind), value in metrics.items():
        assert (f"{value:.2f}" if kind == "psnr" else f"{value:.4f}") in card.text, (benchmark, kind)
    assert "trust_remote_code=True" in card.text and (folder / "comparison.png").is_file()
