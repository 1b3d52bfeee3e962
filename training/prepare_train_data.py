"""
Make the training / held-out split of `../shared/data/train` as folders of symbolic links (no image is copied):

    python training/prepare_train_data.py ../shared/data/train outputs/data

- `outputs/data/train451/`: `bsds400` without every 10th photo, plus all of `t91` (451 images);
- `outputs/data/heldout40/`: every 10th `bsds400` photo (sorted by name, whole images), for checkpoint selection.

Benchmarks (Set5, Set14, BSD68) are never used to choose anything; BSDS500's val split (which holds BSD68) is not in
`bsds400`.
"""

import argparse
import os
from pathlib import Path


EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)


def link_all(paths: list[Path], folder: Path, prefix: str):
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        link = folder / f"{prefix}_{path.name}"
        if not link.is_symlink():
            os.symlink(os.path.abspath(path), link)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_root", help="../shared/data/train (holds bsds400/ and t91/)")
    parser.add_argument("out", help="where the two link folders go")
    parser.add_argument("--every", type=int, default=10, help="hold out every N-th bsds400 photo")
    args = parser.parse_args()
    root, out = Path(args.train_root), Path(args.out)
    bsds = images(root / "bsds400")
    heldout = bsds[args.every - 1 :: args.every]
    train = [p for p in bsds if p not in set(heldout)]
    link_all(train, out / "train451", "bsds")
    link_all(images(root / "t91"), out / "train451", "t91")
    link_all(heldout, out / "heldout40", "bsds")
    print(f"{len(train)} bsds400 + {len(images(root / 't91'))} t91 training images, {len(heldout)} held out")


if __name__ == "__main__":
    main()
