"""The lossless space-to-depth latent, the local-norm UNet and the residual pipeline built on them."""

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from diffusers_deltadiff import DeltaDiffPipeline, LocalUNet2DModel, SpaceToDepthAutoencoder
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline


def space_to_depth_by_hand(x, r):
    """(B, C, H, W) -> (B, C r^2, H / r, W / r), channel c * r^2 + i * r + j holding pixel (i, j) of each block."""
    b, c, h, w = x.shape
    blocks = x.reshape(b, c, h // r, r, w // r, r)
    return blocks.permute(0, 1, 3, 5, 2, 4).reshape(b, c * r * r, h // r, w // r)


class TestSpaceToDepthAutoencoder:
    def test_config_and_shapes(self):
        ae = SpaceToDepthAutoencoder()
        assert ae.config.latent_channels == 48 and ae.config.downsampling_factor == 4
        z = ae.encode(torch.rand(2, 3, 16, 20)).latents
        assert z.shape == (2, 48, 4, 5)

    def test_encode_matches_hand_written_packing(self):
        x = torch.rand(1, 3, 8, 12, dtype=torch.float64)
        z = SpaceToDepthAutoencoder().encode(x).latents
        assert torch.equal(z, space_to_depth_by_hand(x, 4))

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
    def test_round_trip_is_exact(self, dtype):
        ae = SpaceToDepthAutoencoder().to(dtype)
        x = (torch.rand(2, 3, 12, 8) * 2 - 1).to(dtype)
        assert torch.equal(ae.decode(ae.encode(x).latents).sample, x)
        assert torch.equal(ae(x).sample, x)
        assert ae.dtype == dtype

    def test_tuple_outputs_and_vq_keywords(self):
        ae = SpaceToDepthAutoencoder(downsampling_factor=2)
        x = torch.rand(1, 3, 4, 4)
        (z,) = ae.encode(x, return_dict=False)
        (back,) = ae.decode(z, return_dict=False, force_not_quantize=True)
        assert z.shape == (1, 12, 2, 2) and torch.equal(back, x)

    def test_save_load(self, tmp_path):
        SpaceToDepthAutoencoder(downsampling_factor=2).save_pretrained(tmp_path)
        loaded = SpaceToDepthAutoencoder.from_pretrained(tmp_path)
        assert loaded.config.downsampling_factor == 2 and loaded.config.latent_channels == 12

    def test_bad_config_and_sizes(self):
        with pytest.raises(ValueError, match="latent_channels"):
            SpaceToDepthAutoencoder(latent_channels=3)
        with pytest.raises(ValueError, match="downsampling_factor"):
            SpaceToDepthAutoencoder(downsampling_factor=0)
        with pytest.raises(ValueError, match="not a multiple"):
            SpaceToDepthAutoencoder().encode(torch.rand(1, 3, 10, 8))


def local_unet_kwargs():
    return {
        "in_channels": 6,
        "out_channels": 3,
        "block_out_channels": (16, 32),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D"),
        "add_attention": False,
        "norm_num_groups": 8,
    }


class TestLocalUNet:
    def test_no_group_norm_left_and_same_keys_as_unet2d(self):
        torch.manual_seed(0)
        local = LocalUNet2DModel(**local_unet_kwargs())
        assert not any(isinstance(m, torch.nn.GroupNorm) for m in local.modules())
        reference = UNet2DModel(**local_unet_kwargs())
        assert {k: v.shape for k, v in local.state_dict().items()} == {
            k: v.shape for k, v in reference.state_dict().items()
        }

    def test_pixel_norm_against_layer_norm_by_hand(self):
        torch.manual_seed(0)
        local = LocalUNet2DModel(**local_unet_kwargs())
        norm = local.conv_norm_out
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
        x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, unbiased=False, keepdim=True)
        expected = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.double()[:, None, None]
        expected = expected + norm.bias.double()[:, None, None]
        torch.testing.assert_close(norm.double()(x), expected)

    def test_output_is_local(self):
        """A change of the input far away leaves an output pixel unchanged (it would not with GroupNorm)."""
        torch.manual_seed(0)
        local = LocalUNet2DModel(**local_unet_kwargs()).eval()
        torch.manual_seed(0)
        group = UNet2DModel(**local_unet_kwargs()).eval()
        x = torch.randn(1, 6, 64, 64)
        far = x.clone()
        far[..., 48:, 48:] += 5.0
        t = torch.tensor([1])
        with torch.no_grad():
            assert torch.equal(local(x, t).sample[..., :8, :8], local(far, t).sample[..., :8, :8])
            assert not torch.allclose(group(x, t).sample[..., :8, :8], group(far, t).sample[..., :8, :8])

    def test_refuses_attention(self):
        kwargs = local_unet_kwargs() | {"add_attention": True}
        with pytest.raises(ValueError, match="no attention"):
            LocalUNet2DModel(**kwargs)
        kwargs = local_unet_kwargs() | {"down_block_types": ("DownBlock2D", "AttnDownBlock2D")}
        with pytest.raises(ValueError, match="no attention"):
            LocalUNet2DModel(**kwargs)

    def test_save_load(self, tmp_path):
        torch.manual_seed(0)
        unet = LocalUNet2DModel(**local_unet_kwargs()).eval()
        unet.save_pretrained(tmp_path)
        loaded = LocalUNet2DModel.from_pretrained(tmp_path).eval()
        assert isinstance(loaded.conv_norm_out, type(unet.conv_norm_out))
        x, t = torch.randn(1, 6, 16, 16), torch.tensor([2])
        with torch.no_grad():
            torch.testing.assert_close(loaded(x, t).sample, unet(x, t).sample, rtol=0, atol=1e-5)


def test_trainer_and_pipeline_build_the_same_y():
    """`train_deltadiff.py` and the pipeline call one `encode_lr`: the y a model is trained on is the y it runs on."""
    import ast
    from pathlib import Path

    from diffusers_deltadiff.pipeline_deltadiff import encode_lr

    pipe = tiny_lossless_pipeline()
    lr = torch.rand(2, 3, 8, 12) * 2 - 1
    y, condition = encode_lr(pipe.vqvae, lr, 4)
    y_pipe, condition_pipe = pipe.encode_lr(lr)
    assert torch.equal(y, y_pipe) and torch.equal(condition, condition_pipe)
    expected = F.pixel_unshuffle(F.interpolate(lr, scale_factor=4, mode="bicubic").clamp(-1, 1), 4)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    script = (Path(__file__).resolve().parents[1] / "training" / "train_deltadiff.py").read_text()
    calls = {
        n.func.id for n in ast.walk(ast.parse(script)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert "encode_lr" in calls and "bicubic_upsample" not in calls


class TestLosslessPipeline:
    def test_untrained_zero_output_returns_bicubic(self):
        """Residual prediction with a zeroed output layer: the chain never leaves y, the output is bicubic."""
        pipe = tiny_lossless_pipeline(zero_output=True)
        pipe.set_progress_bar_config(disable=True)
        lr = torch.rand(2, 3, 12, 20, dtype=torch.float32)
        out = pipe(lr, output_type="pt").images
        # bicubic written independently: torch's bicubic of the [-1, 1] image, clamped, back to [0, 1]
        expected = ((F.interpolate(lr * 2 - 1, scale_factor=4, mode="bicubic").clamp(-1, 1) + 1) / 2).clamp(0, 1)
        assert out.shape == (2, 3, 48, 80)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)

    def test_slice(self):
        pipe = tiny_lossless_pipeline()
        pipe.set_progress_bar_config(disable=True)
        rng = np.random.RandomState(0)
        image = rng.rand(8, 12, 3).astype(np.float32)
        out = pipe(image, num_inference_steps=2, output_type="np").images
        assert out.shape == (1, 32, 48, 3)
        expected = np.array(EXPECTED_SLICE, dtype=np.float32)
        assert np.abs(out[0, -3:, -3:, -1].flatten() - expected).max() < 1e-3

    def test_deterministic_and_save_load(self, tmp_path):
        pipe = tiny_lossless_pipeline()
        pipe.set_progress_bar_config(disable=True)
        image = np.random.RandomState(1).rand(8, 8, 3).astype(np.float32)
        a = pipe(image, output_type="np").images
        assert np.array_equal(a, pipe(image, output_type="np").images)
        pipe.save_pretrained(tmp_path)
        loaded = DeltaDiffPipeline.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert isinstance(loaded.vqvae, SpaceToDepthAutoencoder) and isinstance(loaded.unet, LocalUNet2DModel)
        assert loaded.scheduler.config.prediction_type == "residual"
        np.testing.assert_allclose(loaded(image, output_type="np").images, a, rtol=0, atol=1e-5)


# regression values of the seeded tiny pipeline (as diffusers' pipeline tests keep them)
EXPECTED_SLICE = [
    0.53624105,
    0.33107156,
    0.5525868,
    0.644479,
    0.53349656,
    0.44481087,
    0.3485569,
    0.19068336,
    0.4379986,
]


def test_gray_in_gray_out():
    """A gray input has no colour to keep: the output is gray, with the luma of the model's RGB output."""
    from diffusers_deltadiff.image_utils import to_gray

    pipe = tiny_lossless_pipeline()
    pipe.set_progress_bar_config(disable=True)
    gray = np.random.RandomState(3).rand(10, 12).astype(np.float32)
    colour = np.random.RandomState(4).rand(10, 12, 3).astype(np.float32)
    out = pipe([gray, colour], output_type="pt").images
    assert torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[0, 1], out[0, 2])
    assert not torch.equal(out[1, 0], out[1, 1])  # colour images keep their colour
    # the gray output is the luma of what the model makes of the replicated gray image
    rgb = torch.from_numpy(np.stack([gray] * 3))
    pipe_out = pipe(rgb[None] * 0 + rgb, output_type="pt").images  # same input as a tensor
    torch.testing.assert_close(pipe_out[0], out[0])
    weights = torch.tensor([0.299, 0.587, 0.114])
    image = torch.rand(1, 3, 4, 5)
    torch.testing.assert_close(to_gray(image)[0, 0], (image[0] * weights[:, None, None]).sum(0))
    pil = pipe(PIL.Image.fromarray((gray * 255).astype(np.uint8), mode="L")).images[0]
    r, g, b = pil.split()
    assert list(r.getdata()) == list(g.getdata()) == list(b.getdata())
