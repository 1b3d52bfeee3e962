import numpy as np
import PIL.Image
import pytest
import torch

from conftest import random_image, write_image
from diffusers_deltadiff.data import SRTrainDataset, collate_sr, load_hr_dataset, make_dataloader
from diffusers_deltadiff.degradations import Degradation, bicubic_downsample


def write_images(folder, sizes, modes=None):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        image = random_image(h, w, seed=i, mode=(modes or {}).get(i, "RGB"))
        path = folder / (f"sub/img{i}.png" if i % 2 else f"train_img{i}.png")
        path.parent.mkdir(exist_ok=True)
        image.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_home" / "datasets"))


def test_folder_is_read_recursively_whatever_the_names(tmp_path, hf_home):
    # names like `train_*.png` must not make `datasets` infer a split and drop the others
    write_images(tmp_path / "hr", [(40, 40)] * 5)
    dataset = load_hr_dataset(train_data_dir=str(tmp_path / "hr"), cache_dir=str(tmp_path / "cache"))
    assert len(dataset) == 5


def test_missing_or_empty_folder(tmp_path, hf_home):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_hr_dataset(train_data_dir=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        load_hr_dataset(train_data_dir=str(tmp_path / "empty"))


def test_samples_shapes_ranges_and_input_kinds(tmp_path, hf_home):
    modes = {1: "L", 2: "RGBA", 3: "I;16"}
    write_images(tmp_path / "hr", [(40, 48), (33, 20), (64, 64), (50, 50), (12, 9)], modes)
    dataset = SRTrainDataset(load_hr_dataset(train_data_dir=str(tmp_path / "hr")), resolution=32, scale=4)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample["hr"].shape == (3, 32, 32)
        assert sample["lr"].shape == (3, 8, 8)
        assert sample["hr"].min() >= -1 and sample["hr"].max() <= 1
        assert sample["skipped"] == []


def test_corrupt_files_are_skipped_and_reported(tmp_path, hf_home):
    write_images(tmp_path / "hr", [(40, 40)] * 3)
    (tmp_path / "hr" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (tmp_path / "hr" / "empty.jpg").write_bytes(b"")
    dataset = SRTrainDataset(load_hr_dataset(train_data_dir=str(tmp_path / "hr")), resolution=32, scale=4)
    assert len(dataset) == 5
    skipped = [name for i in range(len(dataset)) for name in dataset[i]["skipped"]]
    assert sorted({name.split(":")[0].rsplit("/", 1)[-1] for name in skipped}) == ["empty.jpg", "truncated.png"]
    batch = collate_sr([dataset[i] for i in range(len(dataset))])
    assert batch["hr"].shape == (5, 3, 32, 32)  # every sample replaced, batch size kept
    loader = make_dataloader(dataset, batch_size=5, num_workers=0)
    assert len(set(next(iter(loader))["skipped"])) == 2  # a sample may pass over several bad files


def test_samples_depend_on_seed_epoch_index_only(tmp_path, hf_home):
    write_images(tmp_path / "hr", [(64, 80)] * 3)
    images = load_hr_dataset(train_data_dir=str(tmp_path / "hr"))
    a, b = SRTrainDataset(images, 32, 4, seed=1), SRTrainDataset(images, 32, 4, seed=1)
    assert torch.equal(a[2]["hr"], b[2]["hr"])
    a.set_epoch(1)
    assert not torch.equal(a[2]["hr"], b[2]["hr"])
    # workers do not change what a sample is
    loader = make_dataloader(b, batch_size=3, num_workers=2, shuffle=False)
    batch = next(iter(loader))
    assert torch.equal(batch["hr"][2], b[2]["hr"])


def test_an_lr_folder_with_two_images_for_one_name_is_refused(tmp_path, hf_home):
    """
    `a.png` and `ax4.png` (or `a.png` in two subfolders) both pair with the HR image `a`. Before: training silently
    used the last one in sorted order, while `deltadiff evaluate` refused the same folder. Now both refuse it, naming
    the files.
    """
    write_images(tmp_path / "hr", [(64, 48)])  # train_img0.png
    for name in ("train_img0.png", "train_img0x4.png", "other.png"):
        write_image(tmp_path / "lr" / name, 12, 16)
    with pytest.raises(ValueError) as raised:
        SRTrainDataset(load_hr_dataset(train_data_dir=str(tmp_path / "hr")), 32, 4, lr_dir=str(tmp_path / "lr"))
    lr = tmp_path / "lr"
    assert str(raised.value) == (
        f"{lr}: 2 LR images pair with the HR name train_img0 ({lr / 'train_img0.png'}, {lr / 'train_img0x4.png'}): "
        "keep one"
    )
    (lr / "train_img0.png").unlink()
    (lr / "sub").mkdir()
    write_image(lr / "sub" / "train_img0.png", 12, 16)  # the same name one folder down
    with pytest.raises(ValueError, match="2 LR images pair with the HR name train_img0"):
        SRTrainDataset(load_hr_dataset(train_data_dir=str(tmp_path / "hr")), 32, 4, lr_dir=str(lr))


def test_paired_lr_folder(tmp_path, hf_home):
    hr_paths = write_images(tmp_path / "hr", [(64, 48), (48, 64)])
    (tmp_path / "lr").mkdir()
    for path in hr_paths:
        image = PIL.Image.open(path)
        image.resize((image.width // 4, image.height // 4), PIL.Image.BICUBIC).save(
            tmp_path / "lr" / f"{path.stem}x4.png"
        )
    dataset = SRTrainDataset(
        load_hr_dataset(train_data_dir=str(tmp_path / "hr")), 32, 4, lr_dir=str(tmp_path / "lr"), random_flip=False
    )
    sample = dataset[1]  # sorted paths: sub/img1.png, train_img0.png
    assert sample["lr"].shape == (3, 8, 8) and sample["skipped"] == []
    # the LR crop is the LR file's pixels at the HR crop's position / 4
    lr_file = torch.from_numpy(np.asarray(PIL.Image.open(tmp_path / "lr" / "train_img0x4.png"))).permute(2, 0, 1)
    lr_crop = ((sample["lr"] + 1) / 2 * 255).round()
    found = any(
        torch.equal(lr_crop, lr_file[:, i : i + 8, j : j + 8].float())
        for i in range(lr_file.shape[1] - 7)
        for j in range(lr_file.shape[2] - 7)
    )
    assert found


def test_one_lr_protocol_for_training_validation_and_evaluation(tmp_path):
    """Training samples, the trainer's validation and `deltadiff evaluate` make LR images with one function: PIL."""
    from diffusers_deltadiff.evaluation import load_pairs

    rng = np.random.RandomState(0)
    hr = PIL.Image.fromarray((rng.rand(64, 72, 3) * 255).astype(np.uint8)).filter(PIL.ImageFilter.SMOOTH)
    hr_t = torch.from_numpy(np.asarray(hr).astype(np.float32) / 255).permute(2, 0, 1)
    ours = bicubic_downsample(hr_t, 4)
    # PIL called directly, here in the test
    pil = torch.from_numpy(np.asarray(hr.resize((18, 16), PIL.Image.BICUBIC)).astype(np.float32) / 255)
    assert torch.equal(ours, pil.permute(2, 0, 1))
    assert torch.equal(bicubic_downsample(hr_t[None], 4)[0], ours)  # batched, as in the trainer's validation
    assert torch.equal(Degradation("bicubic", 4)(hr_t, seed=0), ours)  # the training data
    hr.save(tmp_path / "a.png")
    (_, _, lr), *_ = load_pairs(str(tmp_path), 4, None, None, "bicubic", 0)[0]
    assert torch.equal(lr, ours)  # deltadiff evaluate


def test_realesrgan_degradation_is_seeded():
    pytest.importorskip("albumentations")
    hr = torch.rand(3, 64, 64)
    degrade = Degradation("realesrgan", 4)
    a, b, c = degrade(hr, seed=5), degrade(hr, seed=5), degrade(hr, seed=6)
    assert a.shape == (3, 16, 16)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_unknown_degradation():
    with pytest.raises(ValueError, match="Unknown degradation"):
        Degradation("gaussian")
