"""Super-resolution training data on top of 🤗 `datasets`: DIV2K from the Hub or any local folder of images.

Each sample is a random `resolution` x `resolution` high-resolution (HR) crop, flipped / rotated at random, and its
low-resolution (LR) version: made on the fly by a [`Degradation`] or cropped from a paired LR folder.

Input handling (documented behaviour):

- Images smaller than the crop are padded by reflection (replication where reflection is impossible) up to the crop.
- Grayscale images are replicated to RGB, alpha channels are dropped, palettes expanded; 16-bit grayscale keeps its
  depth (16-bit RGB PNGs are read by Pillow as 8-bit).
- Files that cannot be decoded (truncated, empty, not an image) are skipped: the sample is replaced by the next
  readable image and the file is reported in the batch's `"skipped"` list, so batch sizes (and the processes of a
  distributed run) stay in step. The training scripts warn once per file and count them.
- Every random choice is drawn from `(seed, epoch, index)`, so a sample is the same whatever the number of workers,
  and a resumed run sees the data a straight run would.
"""

import io
import logging
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .degradations import Degradation
from .image_utils import pad_to, to_unit_tensor


logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def load_hr_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    image_column: str = "image",
    split: str = "train",
    cache_dir: str | None = None,
):
    """
    The HR images as a `datasets.Dataset` whose `image_column` holds undecoded images (paths or bytes).

    Either a Hub dataset (`dataset_name`, `dataset_config_name`; for instance DIV2K) or a local folder
    (`train_data_dir`, searched recursively, read by the `imagefolder` builder).
    """
    from datasets import Image, load_dataset

    if dataset_name is not None:
        dataset = load_dataset(dataset_name, dataset_config_name, split=split, cache_dir=cache_dir)
    elif train_data_dir is not None:
        if not Path(train_data_dir).is_dir():
            raise FileNotFoundError(f"{train_data_dir}: training data folder not found")
        # explicit file list: `data_dir` alone would let `datasets` infer splits from names like `train_*.jpg`
        files = list_images(train_data_dir)
        if not files:
            raise FileNotFoundError(f"{train_data_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        dataset = load_dataset("imagefolder", data_files={"train": files}, split="train", cache_dir=cache_dir)
        image_column = "image"
    else:
        raise ValueError("Pass a Hub dataset (`dataset_name`) or a local folder (`train_data_dir`).")

    if image_column not in dataset.column_names:
        raise ValueError(f"Column {image_column!r} not found in the dataset, which has {dataset.column_names}.")
    if isinstance(dataset.features[image_column], Image):
        dataset = dataset.cast_column(image_column, Image(decode=False))
    dataset = dataset.select_columns([image_column])
    return dataset if image_column == "image" else dataset.rename_column(image_column, "image")


def open_image(value) -> tuple[PIL.Image.Image, str]:
    """Open an undecoded `datasets` image (`{"path", "bytes"}`), a path or a PIL image; returns it with its name."""
    if isinstance(value, PIL.Image.Image):
        return value, getattr(value, "filename", "") or "<in-memory image>"
    if isinstance(value, dict):
        name = value.get("path") or "<bytes>"
        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
    else:
        name = source = str(value)
    image = PIL.Image.open(source)
    image.load()
    return image, name


def augment(images: list[torch.Tensor], rng: np.random.Generator) -> list[torch.Tensor]:
    """The same random horizontal flip, vertical flip and 90-degree rotation for every image of a pair."""
    hflip, vflip, rot = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(4))
    out = []
    for image in images:
        if hflip:
            image = image.flip(-1)
        if vflip:
            image = image.flip(-2)
        out.append(torch.rot90(image, rot, dims=(-2, -1)).contiguous())
    return out


def index_lr_folder(lr_dir: str) -> dict[str, str]:
    """
    Map the name of every HR image the images under `lr_dir` (recursive) pair with ([`lr_stem`]) to its LR image. Two
    LR images for one name (`a.png` and `ax4.png`, or `a.png` in two subfolders) are a `ValueError` naming them: which
    one is meant is not guessed (before, the last one in sorted order was used without a word).
    """
    paths = {}
    for stem, images in lr_images_by_name(lr_dir).items():
        if len(images) > 1:
            raise ValueError(
                f"{lr_dir}: {len(images)} LR images pair with the HR name {stem} ({', '.join(images)}): keep one"
            )
        paths[stem] = images[0]
    return paths


def lr_images_by_name(lr_dir: str) -> dict[str, list[str]]:
    """The images of `lr_dir` (recursive) by the HR name they pair with ([`lr_stem`]): `a.png`, `ax4.png`."""
    images = {}
    for path in list_images(lr_dir):
        images.setdefault(lr_stem(Path(path)), []).append(path)
    return images


def lr_stem(path: Path) -> str:
    """The name of the HR image an LR image pairs with: its stem, less DIV2K's `x4` (`0001x4.png` pairs with 0001)."""
    stem = path.stem
    for suffix in ("x2", "x3", "x4", "x8"):
        stem = stem.removesuffix(suffix)
    return stem


class SRTrainDataset(torch.utils.data.Dataset):
    """
    Random HR crops and their LR versions, as `{"hr": (3, R, R), "lr": (3, R/s, R/s), "skipped": [names]}`, both in
    `[-1, 1]`.

    Args:
        images: a sequence of undecoded images (a `datasets.Dataset` from [`load_hr_dataset`], or paths).
        resolution: the HR crop size (a multiple of `scale`).
        scale: the super-resolution factor.
        degradation: `"bicubic"` or `"realesrgan"` (ignored with `lr_dir`).
        seed: the base seed of every random choice.
        random_flip: flip and rotate crops at random.
        lr_dir: optional folder of LR images paired with the HR images by file name.
        hr_downscale: shrink every HR image by this factor (antialiased bicubic) before cropping, so that
            compression artefacts of the source photos (JPEG blocking) shrink below the pixel; 1 keeps them as they
            are. Not with `lr_dir`.
    """

    def __init__(
        self,
        images,
        resolution: int = 256,
        scale: int = 4,
        degradation: str = "bicubic",
        *,
        seed: int = 0,
        random_flip: bool = True,
        lr_dir: str | None = None,
        hr_downscale: float = 1.0,
    ):
        if resolution % scale:
            raise ValueError(f"The crop resolution ({resolution}) must be a multiple of the scale ({scale}).")
        if hr_downscale < 1:
            raise ValueError(f"`hr_downscale` must be at least 1, got {hr_downscale}.")
        if hr_downscale != 1 and lr_dir:
            raise ValueError("`hr_downscale` would break the pairing with the LR folder: use one or the other.")
        self.hr_downscale = hr_downscale
        self.images = images
        self.resolution = resolution
        self.scale = scale
        self.degradation = Degradation(degradation, scale)
        self.seed = seed
        self.random_flip = random_flip
        self.lr_paths = index_lr_folder(lr_dir) if lr_dir else None
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return len(self.images)

    def _image(self, index):
        item = self.images[index]
        return item["image"] if isinstance(item, dict) and "image" in item else item

    def _load(self, index) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        image, name = open_image(self._image(index))
        hr = to_unit_tensor(image)
        if self.hr_downscale != 1:
            size = [max(round(n / self.hr_downscale), 1) for n in hr.shape[-2:]]
            hr = F.interpolate(hr[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0]
            hr = hr.clamp(0.0, 1.0)
        lr = None
        if self.lr_paths is not None:
            stem = Path(name).stem
            if stem not in self.lr_paths:
                raise FileNotFoundError(f"no LR image named {stem}.* in the LR folder")
            lr = to_unit_tensor(open_image(self.lr_paths[stem])[0])
            hr = hr[:, : lr.shape[1] * self.scale, : lr.shape[2] * self.scale]
            if tuple(hr.shape[1:]) != (lr.shape[1] * self.scale, lr.shape[2] * self.scale):
                raise ValueError(f"HR is not {self.scale}x the size of its LR image {self.lr_paths[stem]}")
        return hr, lr, name

    def _crop(self, hr, lr, rng):
        size, scale = self.resolution, self.scale
        if lr is None:
            hr = pad_to(hr[None], size, size)[0]
        elif min(hr.shape[1:]) < size:
            raise ValueError(f"paired images smaller than the crop size {size}")
        top = int(rng.integers(0, (hr.shape[1] - size) // scale + 1)) * scale
        left = int(rng.integers(0, (hr.shape[2] - size) // scale + 1)) * scale
        hr = hr[:, top : top + size, left : left + size]
        if lr is not None:
            lr = lr[:, top // scale : (top + size) // scale, left // scale : (left + size) // scale]
        return hr, lr

    def __getitem__(self, index):
        skipped = []
        for attempt in range(len(self)):
            current = (index + attempt) % len(self)
            try:
                hr, lr, _ = self._load(current)
                break
            except Exception as err:  # noqa: BLE001 - any undecodable file is skipped and reported
                image = self._image(current)
                name = image.get("path") if isinstance(image, dict) else str(image)
                skipped.append(f"{name or current}: {type(err).__name__}: {err}".splitlines()[0])
        else:
            raise RuntimeError(f"None of the {len(self)} training images could be read: {skipped[:3]}")

        rng = np.random.default_rng([self.seed, self.epoch, index])
        hr, lr = self._crop(hr, lr, rng)
        if self.random_flip:
            hr, lr = augment([hr, lr], rng) if lr is not None else (augment([hr], rng)[0], None)
        if lr is None:
            lr = self.degradation(hr, seed=int(rng.integers(2**32)))
        return {"hr": hr * 2 - 1, "lr": lr * 2 - 1, "skipped": skipped}


def collate_sr(samples: list[dict]) -> dict:
    return {
        "hr": torch.stack([s["hr"] for s in samples]),
        "lr": torch.stack([s["lr"] for s in samples]),
        "skipped": [name for s in samples for name in s["skipped"]],
    }


def make_dataloader(dataset, batch_size: int, num_workers: int = 2, shuffle: bool = True, seed: int = 0):
    """A `DataLoader` over [`SRTrainDataset`] with a seeded shuffle and `collate_sr`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_sr,
        drop_last=True,
        generator=generator,
        persistent_workers=False,
        pin_memory=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )


def list_images(folder: str) -> list[str]:
    """Every image file under `folder`, recursively, sorted."""
    return sorted(str(p) for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
