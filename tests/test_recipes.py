"""Every recipe (`training/recipes/*.args`, `experiments/*/*.args`) runs: 2 steps of the trainer on tiny images, the
recipe's own flags with only the data, sizes, budget and output overridden after it, so a recipe cannot drift from
the trainer's flags; and it starts from the model it names, pinned by the SHA-256 of the UNet weights."""

import hashlib
import json
import re
from pathlib import Path

import pytest

from conftest import load_trainer, write_image


ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "training" / "recipes").glob("*.args")) + sorted((ROOT / "experiments").glob("*/*.args"))


def recipe_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture(scope="module")
def trainer():
    return load_trainer()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe_data")
    for index in range(4):
        write_image(root / "train" / f"img{index}.png", 40, 48, seed=index)
    write_image(root / "heldout" / "held.png", 40, 40, seed=9)
    return root


def test_there_are_recipes_for_the_shipped_models():
    names = {path.name for path in RECIPES}
    assert {"deltadiff-x4.args", "deltadiff-x2.args"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=recipe_id)
def test_recipe_documents_its_command(recipe):
    """The header gives the one command that runs this very file."""
    assert f"python training/train_deltadiff.py @{recipe_id(recipe)}" in recipe.read_text()


@pytest.mark.parametrize("recipe", RECIPES, ids=recipe_id)
def test_recipe_start_is_the_one_it_names(recipe, trainer, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = trainer.parse_args([f"@{recipe}"])
    start = args.pretrained_model_name_or_path or args.unet_init_from
    if not start:  # from scratch: nothing to pin
        assert not args.start_sha256
        return
    assert args.start_sha256, f"{recipe.name}: starts from {start} without --start_sha256"
    assert not Path(start).is_absolute() and Path(start).parts[0] in ("src", "training"), (
        f"{recipe.name}: the start {start} is not a committed folder of the repository"
    )
    weights = ROOT / start / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.is_file(), f"{recipe.name}: {weights} does not exist"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == args.start_sha256


@pytest.mark.parametrize("recipe", RECIPES, ids=recipe_id)
def test_recipe_trains_two_steps(recipe, trainer, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    overrides = [
        "--train_data_dir", str(tiny_data / "train"),
        "--resolution", "32",
        "--train_batch_size", "2",
        "--max_train_steps", "2",
        "--lr_warmup_steps", "1",
        "--checkpointing_steps", "2",
        "--validation_data_dir", str(tiny_data / "heldout"),
        "--num_validation_images", "1",
        "--validation_resolution", "32",
        "--validation_steps", "2",
        "--dataloader_num_workers", "0",
        "--report_to", "none",
        "--output_dir", str(out),
    ]  # fmt: skip
    args = trainer.parse_args([f"@{recipe}", *overrides])
    recipe_args = trainer.parse_args([f"@{recipe}"])
    trainer.main(args)

    assert (out / "checkpoint-2").is_dir()
    index = json.loads((out / "model_index.json").read_text())
    assert index["upscale_factor"] == recipe_args.scale
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == recipe_args.prediction_type
    assert scheduler["kappa"] == recipe_args.kappa
    if recipe_args.save_best:
        assert (out / "best" / "model_index.json").is_file()
    log = (out / "train.log").read_text()  # the console's lines, in the run's log file too
    assert "Running training" in log and re.search(r"Saved the pipeline to .* after 2 steps", log)
