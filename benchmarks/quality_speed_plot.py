"""Quality against cost, as a PNG: held-out Y-PSNR of each candidate model against its MACs per output pixel.

    python benchmarks/quality_speed_plot.py --output outputs/quality_speed.png \
        --point "bicubic=24.78,16" --point "FSRCNN=25.69,1500" --point "DeltaDiff T=4=25.39,250000" ...

Each `--point` is `label=Y-PSNR,MACs per output pixel` (the label may hold `=`: the last one splits). The x axis is
logarithmic. Drawn with Pillow (no plotting library needed); the numbers come from `fidelity2_ablation_eval.sh`
(held-out) and `pipeline_speed.py --sections cost` (MACs).
"""

import argparse
import math

import PIL.Image
import PIL.ImageDraw


def parse_point(text: str) -> tuple[str, float, float]:
    label, _, values = text.rpartition("=")
    psnr, macs = (float(v) for v in values.split(","))
    return label, psnr, macs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--point", action="append", type=parse_point, required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--title", default="held-out Y-PSNR (dB) against MACs per output pixel (log)")
    args = parser.parse_args()

    width, height, margin = 900, 560, 70
    figure = PIL.Image.new("RGB", (width, height), "white")
    draw = PIL.ImageDraw.Draw(figure)
    xs = [math.log10(max(m, 1.0)) for _, _, m in args.point]
    ys = [p for _, p, _ in args.point]
    x0, x1 = math.floor(min(xs)), math.ceil(max(xs))
    y0, y1 = math.floor(min(ys) * 10 - 1) / 10, math.ceil(max(ys) * 10 + 1) / 10

    def to_pixel(x, y):
        px = margin + (x - x0) / max(x1 - x0, 1e-9) * (width - 2 * margin)
        py = height - margin - (y - y0) / max(y1 - y0, 1e-9) * (height - 2 * margin)
        return px, py

    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    for decade in range(x0, x1 + 1):
        px, _ = to_pixel(decade, y0)
        draw.line([px, height - margin, px, height - margin + 5], fill="black")
        draw.text((px - 12, height - margin + 8), f"1e{decade}", fill="black")
    steps = max(1, round((y1 - y0) / 0.1 / 8))
    for k in range(0, round((y1 - y0) / 0.1) + 1, steps):
        y = y0 + k * 0.1
        _, py = to_pixel(x0, y)
        draw.line([margin - 5, py, margin, py], fill="black")
        draw.text((margin - 45, py - 6), f"{y:.1f}", fill="black")
    draw.text((margin, 20), args.title, fill="black")
    for (label, psnr, _), x in zip(args.point, xs):
        px, py = to_pixel(x, psnr)
        draw.ellipse([px - 5, py - 5, px + 5, py + 5], fill=(31, 119, 180))
        text = f"{label} ({psnr:.2f})"
        left = px > width * 0.6  # labels of the points on the right go to their left
        draw.text((px - 8 - draw.textlength(text) if left else px + 8, py - 6), text, fill="black")
    figure.save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
