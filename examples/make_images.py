"""Make the README's example inputs and its before/after picture (committed; rerun to remake them).

    python examples/make_images.py

- `examples/images/*.png`: small low-resolution inputs for the quick start, each a 4x PIL-bicubic downscale of a
  public-domain or CC0 photo that ships with scikit-image (a dependency of this package): see
  `examples/images/README.md` for where each comes from. None is a benchmark or training image of this project.
- `docs/images/before_after.png`: bicubic | the shipped model | the original, on crops of two of them, at 2x zoom.
"""

from pathlib import Path

import PIL.Image
import PIL.ImageDraw
from skimage import data

from diffusers_deltadiff.pretrained import load_default_pipeline


HERE = Path(__file__).resolve().parent
PHOTOS = {  # name: (skimage.data loader, licence as scikit-image states it)
    "astronaut": data.astronaut,  # NASA, public domain
    "coffee": data.coffee,  # Rachel Michetti, CC0
    "chelsea": data.chelsea,  # Stefan van der Walt, CC0
    "rocket": data.rocket,  # SpaceX, public domain
}
SCALE = 4


def originals() -> dict[str, PIL.Image.Image]:
    """The photos cropped to a multiple of the scale."""
    images = {}
    for name, load in PHOTOS.items():
        image = PIL.Image.fromarray(load()).convert("RGB")
        images[name] = image.crop((0, 0, image.width // SCALE * SCALE, image.height // SCALE * SCALE))
    return images


def before_after(pipe, hr: PIL.Image.Image, box: tuple[int, int, int, int], zoom: int = 2) -> PIL.Image.Image:
    """One row: bicubic | model | original on the HR-size `box`, zoomed with nearest neighbours."""
    lr = hr.resize((hr.width // SCALE, hr.height // SCALE), PIL.Image.BICUBIC)
    bicubic = lr.resize(hr.size, PIL.Image.BICUBIC)
    model = pipe(lr).images[0]
    size = ((box[2] - box[0]) * zoom, (box[3] - box[1]) * zoom)
    return [im.crop(box).resize(size, PIL.Image.NEAREST) for im in (bicubic, model, hr)]


def main():
    photos = originals()
    out = HERE / "images"
    out.mkdir(exist_ok=True)
    for name, hr in photos.items():
        lr = hr.resize((hr.width // SCALE, hr.height // SCALE), PIL.Image.BICUBIC)
        lr.save(out / f"{name}.png", optimize=True)
        print(f"wrote {out / name}.png ({lr.width}x{lr.height})")

    pipe = load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    rows = [
        before_after(pipe, photos["astronaut"], (150, 40, 350, 200)),  # face, insignia, flag
        before_after(pipe, photos["coffee"], (150, 40, 350, 200)),  # cup rim and crema
    ]
    gap, label_height = 6, 22
    width = sum(im.width for im in rows[0]) + gap * 2
    height = sum(row[0].height for row in rows) + gap * (len(rows) - 1) + label_height
    figure = PIL.Image.new("RGB", (width, height), "white")
    draw = PIL.ImageDraw.Draw(figure)
    x = 0
    for label, im in zip(("bicubic", "DeltaDiff (shipped model)", "original"), rows[0]):
        draw.text((x + 4, 4), label, fill="black")
        x += im.width + gap
    y = label_height
    for row in rows:
        x = 0
        for im in row:
            figure.paste(im, (x, y))
            x += im.width + gap
        y += row[0].height + gap
    docs = HERE.parent / "docs" / "images"
    docs.mkdir(parents=True, exist_ok=True)
    figure.save(docs / "before_after.png", optimize=True)
    print(f"wrote {docs / 'before_after.png'} ({figure.width}x{figure.height})")


if __name__ == "__main__":
    main()
