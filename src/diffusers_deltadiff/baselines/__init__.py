"""
Methods to compare the DeltaDiff models against, by name: the registry that `benchmarks/quality.py`
(`--baseline NAME[:FOLDER]`), `benchmarks/main_job_speed.py` and the evaluation read.

Every entry is a loader `(folder, scale) -> upscaler`: `folder` holds the trained weights (`None` for a method that
has none, like bicubic) and the result is an [`~diffusers_deltadiff.upscaler.Upscaler`]: called on one `(3, h, w)`
LR image in `[0, 1]`, it returns `(3, h * scale, w * scale)` in `[0, 1]`, and says whether it is `stochastic`.

To add a baseline, write it in a file of its own in this folder and add one line to `BASELINES`.
"""

from collections.abc import Callable

from ..upscaler import Upscaler
from .bicubic import Bicubic
from .fsrcnn import load_fsrcnn_upscaler


BaselineLoader = Callable[[str | None, int], Upscaler]

BASELINES: dict[str, BaselineLoader] = {
    "bicubic": lambda folder, scale: Bicubic(scale),  # PIL's bicubic through 8 bits, the protocol's own
    "fsrcnn": load_fsrcnn_upscaler,  # FSRCNN (Dong et al., 2016) trained by training/train_fsrcnn.py
}


def load_baseline(name: str, folder: str | None = None, scale: int = 4) -> Upscaler:
    """The registered baseline `name` at `scale`, its weights (if it has any) read from `folder`."""
    if name not in BASELINES:
        raise ValueError(f"Unknown baseline {name!r}: choose one of {', '.join(BASELINES)}.")
    return BASELINES[name](folder, scale)


__all__ = ["BASELINES", "Bicubic", "load_baseline"]
