"""The small pretrained x4 DeltaDiff pipeline shipped inside the package (works offline)."""

from pathlib import Path


DEFAULT_MODEL_DIR = Path(__file__).parent / "pretrained" / "deltadiff-x4"


def default_model_path() -> str | None:
    """Folder of the shipped default pipeline, or `None` when this build of the package carries none."""
    return str(DEFAULT_MODEL_DIR) if (DEFAULT_MODEL_DIR / "model_index.json").is_file() else None


def load_default_pipeline(**kwargs):
    """`DeltaDiffPipeline.from_pretrained(<the shipped default model>, **kwargs)`."""
    from .pipeline_deltadiff import DeltaDiffPipeline

    path = default_model_path()
    if path is None:
        raise FileNotFoundError(f"{DEFAULT_MODEL_DIR}: no default model in this installation; pass a model folder")
    return DeltaDiffPipeline.from_pretrained(path, **kwargs)
