"""The paper's evaluation protocol: x`scale` super-resolution of benchmark HR images, scored on the Y channel.

For every HR image: mod-crop to a multiple of the scale (optionally a centre crop first), make the LR image
(antialiased bicubic with PIL, 8-bit, or a seeded Real-ESRGAN-style degradation, or read it from an LR folder),
upscale it with every method (bicubic and the given pipelines), and score against HR:

- PSNR and SSIM on the Y channel with `crop_border = scale` ([`metrics`]),
- LPIPS (AlexNet) when the `lpips` package and its backbone weights are available, otherwise reported unavailable
  with the reason (never estimated),
- LR-consistency PSNR: Y-PSNR between the SR image downscaled back (same bicubic as the LR) and the LR input, no
  crop: how faithful the SR image is to what was observed.
"""

import csv
import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image
import torch
from tqdm.auto import tqdm

from .atomic_files import write_file_atomic
from .baselines import Bicubic
from .data import list_images, lr_images_by_name, open_image
from .degradations import Degradation
from .image_utils import bicubic_resize, center_crop, image_grid, to_unit_tensor
from .metrics import psnr_cbcr, psnr_y, ssim_y
from .upscaler import as_upscaler


def mod_crop(image: torch.Tensor, scale: int, crop: int | None = None) -> torch.Tensor:
    """Optional centre crop to `crop` pixels, then crop the bottom/right to a multiple of `scale`."""
    if crop:
        image = center_crop(image, crop, crop)
    height, width = image.shape[-2:]
    return image[:, : height - height % scale, : width - width % scale]


def load_lpips(net: str = "alex"):
    """`(model, None)` with the `lpips` package's LPIPS in eval mode, or `(None, reason)` saying why it cannot load."""
    try:
        import lpips

        return lpips.LPIPS(net=net, verbose=False).eval(), None
    except ImportError:
        return None, "the `lpips` package is not installed (pip install 'diffusers-deltadiff[metrics]')"
    except Exception as err:  # noqa: BLE001 - e.g. backbone weights not in the torch hub cache, offline
        return None, f"LPIPS {net} weights unavailable ({type(err).__name__}: {str(err).splitlines()[0][:120]})"


class LPIPSMetric:
    """LPIPS (AlexNet) when available; `reason` says why not otherwise."""

    def __init__(self, net: str = "alex"):
        self.model, self.reason = load_lpips(net)

    @property
    def available(self) -> bool:
        return self.model is not None

    @torch.no_grad()
    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> float | None:
        """LPIPS of one pair; `None` for an image smaller than its network takes (AlexNet: 31 pixels on a side, which
        the protocol's smallest images are not)."""
        try:
            return float(self.model(sr[None] * 2 - 1, hr[None] * 2 - 1).item())
        except RuntimeError as err:  # torch's pooling: "Output size is too small"
            if "too small" not in str(err):
                raise
            return None


@dataclass
class Score:
    image: str
    method: str
    psnr: float
    ssim: float
    lr_psnr: float
    cbcr_psnr: float | None = None
    lpips: float | None = None
    seed: int | None = None


# the files [`EvaluationResult.write`] writes in its folder
RESULT_FILES = ("per_image.csv", "summary.md", "grid.png")


@dataclass
class EvaluationResult:
    scores: list[Score] = field(default_factory=list)
    lpips_reason: str | None = None
    grid_rows: list = field(default_factory=list)

    def methods(self) -> list[str]:
        return list(dict.fromkeys(s.method for s in self.scores))

    def summary(self) -> list[dict]:
        """Mean metrics per method, and the std over inference seeds of the per-seed mean PSNR."""
        rows = []
        for method in self.methods():
            scores = [s for s in self.scores if s.method == method]
            seeds = sorted({s.seed for s in scores}, key=lambda v: -1 if v is None else v)
            per_seed = [statistics.fmean(s.psnr for s in scores if s.seed == seed) for seed in seeds]
            lpips_values = [s.lpips for s in scores if s.lpips is not None]
            rows.append(
                {
                    "method": method,
                    "images": len({s.image for s in scores}),
                    "psnr": statistics.fmean(s.psnr for s in scores),
                    "ssim": statistics.fmean(s.ssim for s in scores),
                    "lr_psnr": statistics.fmean(s.lr_psnr for s in scores),
                    "cbcr_psnr": statistics.fmean(s.cbcr_psnr for s in scores if s.cbcr_psnr is not None)
                    if all(s.cbcr_psnr is not None for s in scores)
                    else None,
                    "lpips": statistics.fmean(lpips_values) if lpips_values else None,
                    "lpips_images": len({s.image for s in scores if s.lpips is not None}),
                    "seeds": len(seeds),
                    "psnr_seed_std": statistics.pstdev(per_seed) if len(per_seed) > 1 else 0.0,
                }
            )
        return rows

    def markdown(self, title: str = "", extra_rows: list[str] | None = None) -> str:
        lines = [f"### {title}", ""] if title else []
        lines += [
            "| method | images | Y-PSNR (dB) | SSIM | Cb/Cr PSNR (dB) | LPIPS | LR-consistency PSNR (dB) | seeds | "
            "PSNR std over seeds |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        rows = self.summary()
        for row in rows:
            lpips_text = f"{row['lpips']:.4f}" if row["lpips"] is not None else "n/a"
            cbcr_text = f"{row['cbcr_psnr']:.2f}" if row["cbcr_psnr"] is not None else "n/a"
            lines.append(
                f"| {row['method']} | {row['images']} | {row['psnr']:.2f} | {row['ssim']:.4f} | {cbcr_text} | "
                f"{lpips_text} | {row['lr_psnr']:.2f} | {row['seeds']} | {row['psnr_seed_std']:.4f} |"
            )
        lines += extra_rows or []
        if self.lpips_reason:
            lines += ["", f"LPIPS not computed: {self.lpips_reason}."]
        partial = {(row["lpips_images"], row["images"]) for row in rows if row["lpips"] is not None}
        for scored, images in sorted(partial):
            if scored < images:
                lines += [
                    "",
                    f"LPIPS over {scored} of {images} images: the others are smaller than its network takes.",
                ]
        return "\n".join(lines) + "\n"

    def write(self, output_dir: str, title: str = ""):
        """`per_image.csv`, `summary.md` and `grid.png` in `output_dir`, each written whole or not at all."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        csv_name, summary_name, grid_name = RESULT_FILES
        write_file_atomic(out / csv_name, self.csv().encode(), replace=True)
        write_file_atomic(out / summary_name, self.markdown(title).encode(), replace=True)
        if self.grid_rows:
            grid = io.BytesIO()
            comparison_grid(self.grid_rows).save(grid, format="PNG")
            write_file_atomic(out / grid_name, grid.getbuffer(), replace=True)

    def csv(self) -> str:
        """The per-image scores as CSV text."""
        with io.StringIO(newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "method", "seed", "psnr_y", "ssim_y", "psnr_cbcr", "lpips", "lr_psnr_y"])
            for s in self.scores:
                lpips_text = "" if s.lpips is None else f"{s.lpips:.6f}"
                seed = "" if s.seed is None else s.seed
                writer.writerow(
                    [
                        s.image,
                        s.method,
                        seed,
                        f"{s.psnr:.4f}",
                        f"{s.ssim:.6f}",
                        "" if s.cbcr_psnr is None else f"{s.cbcr_psnr:.4f}",
                        lpips_text,
                        f"{s.lr_psnr:.4f}",
                    ]
                )
            return handle.getvalue()


def zoom(image: torch.Tensor, fraction: float = 0.25) -> torch.Tensor:
    """The centre `fraction` of an image (the grid enlarges it to full size)."""
    height, width = image.shape[-2:]
    return center_crop(image, max(int(height * fraction), 1), max(int(width * fraction), 1))


def comparison_grid(rows: list[list[torch.Tensor]]) -> PIL.Image.Image:
    """Each image: `bicubic | method(s) | HR`, then the same with the centre zoomed in (nearest neighbour)."""
    grid_rows = []
    for images in rows:
        grid_rows.append(images)
        height, width = images[-1].shape[-2:]
        zoomed = [
            torch.nn.functional.interpolate(zoom(im)[None], size=(height, width), mode="nearest")[0] for im in images
        ]
        grid_rows.append(zoomed)
    return image_grid(grid_rows)


# scikit-image's SSIM window with Wang et al.'s Gaussian (sigma 1.5, truncated at 3.5 sigma): 2 * int(5.75) + 1
SSIM_WINDOW = 11


def min_hr_size(scale: int) -> int:
    """The smallest HR side the protocol can score: SSIM's window inside the `scale`-pixel border, mod-cropped."""
    return -(-(2 * scale + SSIM_WINDOW) // scale) * scale


def load_pairs(hr_dir: str, scale: int, crop: int | None, lr_dir: str | None, degradation: str, seed: int):
    """
    `(name, hr, lr)` for every HR image (mod-cropped), LR from `lr_dir` (by name) or degraded from HR; and the
    one-line errors of the files that could not be used (unreadable, an LR whose size is not the HR's divided by
    `scale`, or too small to score: see [`min_hr_size`]). An `lr_dir` inside `hr_dir` is not read as HR images.
    """
    if scale < 1:
        raise ValueError(f"`scale` must be a positive integer, got {scale}.")
    lr_paths = lr_images_by_name(lr_dir) if lr_dir else None
    degrade = Degradation(degradation, scale)
    pairs, errors = [], []
    for index, path in enumerate(hr_images(hr_dir, lr_dir)):
        try:
            name = Path(path).relative_to(hr_dir).as_posix()  # `x/1.png` and `y/1.png` are two images
            if lr_paths is None:
                hr = mod_crop(to_unit_tensor(open_image(path)[0]), scale, crop)
            else:
                hr, lr = read_pair(path, lr_paths, lr_dir, scale, crop)
            if min(hr.shape[-2:]) < min_hr_size(scale):
                raise ValueError(
                    f"too small to score: {hr.shape[2]}x{hr.shape[1]} after the crop to a multiple of {scale}, the "
                    f"protocol needs {min_hr_size(scale)}x{min_hr_size(scale)} (SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} "
                    f"window inside a {scale}-pixel border)"
                )
            if lr_paths is None:  # the LR made from the HR, once it is known to be large enough
                lr = degrade(hr, seed=seed * 100_003 + index)
        except (OSError, ValueError, PIL.Image.DecompressionBombError) as err:
            errors.append(f"{path}: {str(err).splitlines()[0]}")
            continue
        pairs.append((name, hr, lr))
    return pairs, errors


def hr_images(hr_dir: str, lr_dir: str | None) -> list[str]:
    """The images of `hr_dir` (recursive), without those of `lr_dir` when it lies inside (`Set5/` and `Set5/LR/`)."""
    files = list_images(hr_dir)
    lr_root = Path(lr_dir).resolve() if lr_dir else None
    if lr_root is None or lr_root == Path(hr_dir).resolve():
        return files
    return [f for f in files if lr_root not in Path(f).resolve().parents]


def read_pair(path: str, lr_paths: dict[str, list[str]], lr_dir: str, scale: int, crop: int | None):
    """
    The HR image at `path` (mod-cropped) and its LR image from `lr_dir`, which must be exactly HR / `scale` in size
    (else a `ValueError` naming the LR file and both sizes: another factor's LR, or HR images given as LR, would be
    scored against a corner of the HR image), and the only one of its name (`a.png` and `ax4.png`: which one is
    meant is not guessed). `crop` takes the same centre window of both.
    """
    stem = Path(path).stem
    if stem not in lr_paths:
        raise FileNotFoundError(f"no LR image named {stem}.* in {lr_dir}")
    if len(lr_paths[stem]) > 1:
        raise ValueError(
            f"{len(lr_paths[stem])} LR images are named for it in {lr_dir} ({', '.join(lr_paths[stem])}): keep one"
        )
    lr_path = lr_paths[stem][0]
    hr = mod_crop(to_unit_tensor(open_image(path)[0]), scale)
    lr = to_unit_tensor(open_image(lr_path)[0])
    (lr_height, lr_width), (height, width) = lr.shape[-2:], hr.shape[-2:]
    if (lr_height * scale, lr_width * scale) != (height, width):
        raise ValueError(
            f"its LR image {lr_path} is {lr_width}x{lr_height}, but the HR image is {width}x{height} (after "
            f"the crop to a multiple of {scale}): x{scale} needs a {width // scale}x{height // scale} LR image"
        )
    if crop:
        side_h, side_w = min(crop // scale, lr_height), min(crop // scale, lr_width)
        top, left = (lr_height - side_h) // 2, (lr_width - side_w) // 2
        lr = lr[:, top : top + side_h, left : left + side_w]
        hr = hr[:, top * scale : (top + side_h) * scale, left * scale : (left + side_w) * scale]
    return hr, lr


def score(name, method, sr, hr, lr, *, scale: int, lpips_metric=None, seed=None) -> Score:
    sr = sr[:, : hr.shape[1], : hr.shape[2]]
    lr_back = bicubic_resize(sr, tuple(lr.shape[-2:]))
    return Score(
        image=name,
        method=method,
        psnr=psnr_y(sr, hr, scale).item(),
        ssim=ssim_y(sr, hr, scale).item(),
        lr_psnr=psnr_y(lr_back, lr, 0).item(),
        cbcr_psnr=psnr_cbcr(sr, hr, scale).item(),
        lpips=lpips_metric(sr, hr) if lpips_metric is not None and lpips_metric.available else None,
        seed=seed,
    )


def evaluate(
    pairs,
    pipelines: dict,
    *,
    scale: int = 4,
    baseline: bool = True,
    seeds: tuple[int, ...] = (0,),
    lpips_metric: LPIPSMetric | None = None,
    grid_images: int = 4,
    pipeline_kwargs: dict | None = None,
) -> EvaluationResult:
    """
    Score bicubic (if `baseline`) and every method of `pipelines` (`{label: method}`) on `(name, hr, lr)` pairs. A
    method is an [`~diffusers_deltadiff.upscaler.Upscaler`] (a baseline of `diffusers_deltadiff.baselines`) or a
    pipeline, called with `pipeline_kwargs`. Stochastic methods (a ResShift scheduler) run once per seed;
    deterministic ones once.
    """
    result = EvaluationResult(
        lpips_reason=None if lpips_metric is None or lpips_metric.available else lpips_metric.reason
    )
    upscalers = {"bicubic": Bicubic(scale)} if baseline else {}
    upscalers.update({label: as_upscaler(method, **(pipeline_kwargs or {})) for label, method in pipelines.items()})
    total = len(pairs) * sum(len(seeds) if upscaler.stochastic else 1 for upscaler in upscalers.values())
    with tqdm(total=total, desc="evaluate", unit="image", disable=None) as progress:
        for index, (name, hr, lr) in enumerate(pairs):
            row = []
            for label, upscaler in upscalers.items():
                for seed in seeds if upscaler.stochastic else (None,):
                    generator = torch.Generator().manual_seed(seed) if seed is not None else None
                    sr = upscaler(lr, generator=generator)
                    result.scores.append(
                        score(name, label, sr, hr, lr, scale=scale, lpips_metric=lpips_metric, seed=seed)
                    )
                    progress.update()
                row.append(sr[:, : hr.shape[1], : hr.shape[2]])
            if index < grid_images:
                result.grid_rows.append(row + [hr])
    return result


def ablate(
    pairs, pipe, eta_starts, eta_ends, steps_list, *, scale: int = 4, pipeline_kwargs: dict | None = None
) -> str:
    """
    Sweep the sampling schedule of one trained pipeline (`eta_1`, `eta_T`, number of steps) and return a markdown
    table shaped like the paper's Table II (mean Y-PSNR / SSIM / LR-consistency PSNR per setting). The model is not
    retrained: this measures how sensitive it is to the schedule it is sampled with.
    """
    from .scheduling_delta_shift import DeltaShiftScheduler

    base_scheduler = pipe.scheduler
    lines = [
        "| eta_1 | eta_T | steps | Y-PSNR (dB) | SSIM | LR-consistency PSNR (dB) |",
        "|---|---|---|---|---|---|",
    ]
    settings = [(a, b, n) for a in eta_starts for b in eta_ends for n in steps_list]
    try:
        with tqdm(total=len(settings) * len(pairs), desc="ablate", unit="image", disable=None) as progress:
            for eta_start, eta_end, steps in settings:
                pipe.scheduler = DeltaShiftScheduler.from_config(
                    base_scheduler.config, eta_start=eta_start, eta_end=eta_end
                )
                scores = []
                for name, hr, lr in pairs:
                    generator = torch.Generator().manual_seed(0)
                    out = pipe(
                        lr, output_type="pt", num_inference_steps=steps, generator=generator, **(pipeline_kwargs or {})
                    )
                    scores.append(score(name, "", out.images[0], hr, lr, scale=scale))
                    progress.update()
                lines.append(
                    f"| {eta_start:g} | {eta_end:g} | {steps} | {statistics.fmean(s.psnr for s in scores):.2f} | "
                    f"{statistics.fmean(s.ssim for s in scores):.4f} | {statistics.fmean(s.lr_psnr for s in scores):.2f} |"
                )
    finally:
        pipe.scheduler = base_scheduler
    return "\n".join(lines) + "\n"
