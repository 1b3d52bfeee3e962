"""
Hub model cards for DeltaDiff pipelines: metadata the Hub renders (licence, library, task, datasets, measured metrics
as `model-index`), usage that works with diffusers alone, and a comparison image against bicubic.

Used by `training/export_default_model.py` and `training/train_deltadiff.py`; inference never imports it.
"""

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .degradations import bicubic_downsample
from .image_utils import bicubic_resize, image_grid, to_pil
from .metrics import psnr_y


TAGS = ["super-resolution", "image-to-image", "deltadiff", "diffusers-deltadiff", "residual-shifting"]
# the columns of a quality benchmark's `per_image.csv` that go into the card, with their Hub metric type and name
METRICS = {"psnr_y": ("psnr", "PSNR (Y channel, dB)"), "ssim_y": ("ssim", "SSIM (Y channel)")}


def benchmark_means(per_image_csv: str | Path, method: str) -> dict[str, float]:
    """
    Mean of each card metric over the images of one benchmark for `method`, as `deltadiff evaluate` and
    `benchmarks/quality.py` write them (one row per image and seed; seeds are averaged per image first).
    """
    per_image = defaultdict(lambda: defaultdict(list))
    with open(per_image_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["method"] == method:
                for column in METRICS:
                    if row.get(column):
                        per_image[column][row["image"]].append(float(row[column]))
    if not per_image:
        raise ValueError(f"{per_image_csv}: no rows for method {method!r}")
    return {column: float(np.mean([np.mean(v) for v in images.values()])) for column, images in per_image.items()}


def eval_results(results_dir: str | Path, method: str, scale: int = 4) -> list[EvalResult]:
    """
    One `EvalResult` per benchmark and metric, from `<results_dir>/<benchmark>/per_image.csv` (the output folder of
    `benchmarks/quality.py`), values rounded as the card's tables show them.
    """
    results = []
    for csv_path in sorted(Path(results_dir).glob("*/per_image.csv")):
        benchmark = csv_path.parent.name
        for column, value in benchmark_means(csv_path, method).items():
            metric_type, metric_name = METRICS[column]
            results.append(
                EvalResult(
                    task_type="image-to-image",
                    task_name=f"Image super-resolution x{scale} (bicubic degradation)",
                    dataset_type=benchmark.lower(),
                    dataset_name=benchmark,
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=round(value, 2 if metric_type == "psnr" else 4),
                )
            )
    if not results:
        raise ValueError(f"{results_dir}: no <benchmark>/per_image.csv found")
    return results


def card_data(model_name: str, results: list[EvalResult] | None = None, datasets: list[str] | None = None):
    """The card's YAML metadata."""
    return ModelCardData(
        model_name=model_name,
        license="apache-2.0",
        library_name="diffusers",
        pipeline_tag="image-to-image",
        tags=TAGS,
        datasets=datasets,
        metrics=sorted({metric_type for metric_type, _ in METRICS.values()}) if results else None,
        eval_results=results or None,
    )


def usage_section(repo_id: str, scale: int = 4) -> str:
    """How to load the pipeline (of factor `scale`): with diffusers alone (the folder carries its code), or with this
    package."""
    return f"""## Usage

With diffusers alone (the repository carries the pipeline's code; read it before trusting it):

```python
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import load_image

pipe = DiffusionPipeline.from_pretrained(
    "{repo_id}", custom_pipeline="{repo_id}", trust_remote_code=True, torch_dtype=torch.float32
)
upscaled = pipe(load_image("low_res.png")).images[0]  # {scale}x, deterministic
```

With the package (`pip install diffusers-deltadiff`: the same outputs, bit for bit, from the package's own classes):

```python
from diffusers_deltadiff import DeltaDiffPipeline

pipe = DeltaDiffPipeline.from_pretrained("{repo_id}")
```

Or from the command line: `deltadiff upscale photos/ -o upscaled/ --model {repo_id}`.
"""


def resolution_chart(size: int = 192, label: str = "x4 SR") -> PIL.Image.Image:
    """
    A synthetic chart (rings, bars, a colour gradient, letters), drawn here so that the card's figure carries no
    image licence: what a x4 upscaler must restore is edges, lines and letters. Its strokes are 3 to 6 pixels wide,
    so that the x4 LR image still holds them (1 to 1.5 LR pixels).
    """
    image = PIL.Image.new("RGB", (size, size), (236, 232, 220))
    draw = PIL.ImageDraw.Draw(image)
    half = size // 2
    c = size // 4
    for radius in range(c - 4, 4, -10):
        draw.ellipse((c - radius, c - radius, c + radius, c + radius), outline=(30, 40, 90), width=4)
    for i in range(6):
        x = half + 8 + i * (half - 16) // 6
        draw.line((x, 8, x + 2 * i, half - 8), fill=(150, 30, 30), width=3 + i % 2 * 2)
    for x in range(8, half - 8):
        shade = int(255 * (x - 8) / (half - 16))
        draw.line((x, half + 8, x, half + 24), fill=(shade, 255 - shade, 128))
    font = PIL.ImageFont.load_default(size=size // 8)
    draw.text((8, half + 32), "Delta", fill=(0, 0, 0), font=font)
    draw.text((8, half + 32 + size // 7), label, fill=(20, 90, 20), font=font)
    cx, cy, r = 3 * size // 4, 3 * size // 4, size // 5
    for k in range(7):
        angle = k * math.pi / 6
        draw.line((cx, cy, cx + r * math.cos(angle), cy - r * math.sin(angle)), fill=(40, 40, 40), width=3)
    return image


def comparison_image(pipe, hr: PIL.Image.Image | None = None, zoom: int = 2):
    """
    Bicubic upscaling, the pipeline's and the original, side by side, each magnified `zoom` times by nearest neighbour
    (the card's figure), with the Y-PSNR of bicubic and of the pipeline against the original. The LR input is `hr`
    downscaled by the evaluation protocol (PIL bicubic) at the pipeline's factor.
    """
    scale = pipe.upscale_factor
    hr = hr if hr is not None else resolution_chart(label=f"x{scale} SR")
    hr_tensor = torch.from_numpy(np.array(hr.convert("RGB"))).permute(2, 0, 1).float() / 255
    lr = bicubic_downsample(hr_tensor, scale)
    bicubic = bicubic_resize(lr, tuple(hr_tensor.shape[-2:]))
    upscaled = pipe(to_pil(lr), output_type="pt").images[0].float().cpu()
    grid = image_grid([[bicubic, upscaled, hr_tensor]])
    scores = {
        name: float(psnr_y(im[None], hr_tensor[None], scale))
        for name, im in (("bicubic", bicubic), ("model", upscaled))
    }
    return grid.resize((grid.width * zoom, grid.height * zoom), PIL.Image.NEAREST), scores


def card_body(template: str, usage: str, figure: str) -> str:
    """The hand-written card text with its `<!-- usage -->` and `<!-- comparison -->` markers filled in."""
    for marker, text in (("<!-- usage -->", usage), ("<!-- comparison -->", figure)):
        if marker not in template:
            raise ValueError(f"the card template has no {marker} marker")
        template = template.replace(marker, text.strip())
    return template


def write_model_card(
    pipe,
    folder: str | Path,
    template: str,
    results_dir: str | Path,
    *,
    method: str,
    repo_id: str,
    datasets: list[str] | None = None,
) -> ModelCard:
    """
    Write `README.md` (metadata with the metrics measured in `results_dir` for `method`, usage for `repo_id`, the
    hand-written `template`) and `comparison.png` (bicubic vs the pipeline on the synthetic chart) into `folder`.
    """
    folder = Path(folder)
    scale = pipe.upscale_factor
    figure, scores = comparison_image(pipe)
    figure.save(folder / "comparison.png")
    caption = (
        f"![bicubic, {folder.name}, original](comparison.png)\n\n*Left to right: bicubic upscaling "
        f"({scores['bicubic']:.2f} dB Y-PSNR), this model ({scores['model']:.2f} dB), the original: a synthetic "
        f"chart downscaled x{scale} with PIL bicubic, shown at 2x zoom (`diffusers_deltadiff.model_card.resolution_chart`).*"
    )
    data = card_data(folder.name, eval_results(results_dir, method, scale), datasets)
    card = render_card(data, card_body(template, usage_section(repo_id, scale), caption))
    card.save(folder / "README.md")
    return card


def render_card(data: ModelCardData, body: str) -> ModelCard:
    """The card: `data` as YAML front matter, then `body` (markdown)."""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")
