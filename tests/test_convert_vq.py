"""Tests for `training/convert_vq_f4_to_diffusers.py` (LDM / ResShift VQ autoencoder -> diffusers `VQModel`)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import VQModel

import convert_vq_f4_to_diffusers as converter  # training/, on the tests' path (conftest.py)


TRAINING_DIR = Path(__file__).resolve().parents[1] / "training"


# A tiny model with attention inside the full-resolution level (LDM level 0) next to a level without: diffusers lists
# the decoder's blocks from the lowest resolution up, so the attention level is the last up block.
TINY_FLAGS = [
    "--ch=32",
    "--ch_mult=1,2",
    "--num_res_blocks=1",
    "--attn_resolutions=16",
    "--resolution=16",
    "--z_channels=4",
    "--embed_dim=3",
    "--n_embed=16",
]


def tiny_diffusers_vqmodel(seed=0):
    """Built by hand (not from the converter's config) with every parameter random, norms included."""
    torch.manual_seed(seed)
    model = VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("AttnDownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "AttnUpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        num_vq_embeddings=16,
        vq_embed_dim=3,
        norm_num_groups=32,
        sample_size=16,
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


# The LDM names written out by hand, independently of diffusers' converter: (diffusers pattern, LDM replacement).
DIFFUSERS_TO_LDM_RULES = [
    (r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2."),
    (r"^encoder\.down_blocks\.(\d+)\.attentions\.(\d+)\.", r"encoder.down.\1.attn.\2."),
    (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.mid.attn_1."),
    (r"\.conv_shortcut\.", ".nin_shortcut."),
    (r"\.group_norm\.", ".norm."),
    (r"\.to_q\.", ".q."),
    (r"\.to_k\.", ".k."),
    (r"\.to_v\.", ".v."),
    (r"\.to_out\.0\.", ".proj_out."),
]


def diffusers_to_ldm_key(key, num_levels):
    for pattern, replacement in DIFFUSERS_TO_LDM_RULES:
        key = re.sub(pattern, replacement, key)
    # decoder.up_blocks[i] is LDM's decoder.up[num_levels - 1 - i].
    key = re.sub(r"^decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up.{num_levels - 1 - int(m[1])}.", key)
    key = key.replace(".resnets.", ".block.").replace(".attentions.", ".attn.")
    return key.replace(".upsamplers.0.", ".upsample.")


def to_ldm_state_dict(model):
    """The state dict of `model` laid out like LDM's `VQModel` (attention projections as 1x1 convolutions)."""
    num_levels = len(model.config.block_out_channels)
    state_dict = {}
    for key, value in model.state_dict().items():
        if re.search(r"\.(to_q|to_k|to_v|to_out\.0)\.weight$", key):
            value = value[:, :, None, None]
        state_dict[diffusers_to_ldm_key(key, num_levels)] = value.clone()
    return state_dict


def run_converter(checkpoint_path, output_dir, flags=TINY_FLAGS):
    args = converter.parse_args(["--checkpoint_path", str(checkpoint_path), "--output_dir", str(output_dir), *flags])
    return converter.main(args)


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_diffusers_vqmodel()


@pytest.fixture(scope="module")
def ldm_state_dict(tiny_model):
    return to_ldm_state_dict(tiny_model)


def test_ldm_layout_of_the_tiny_model(ldm_state_dict):
    # The keys LDM's Encoder/Decoder/VectorQuantizer2 use, spot-checked by hand.
    for key in [
        "encoder.down.0.block.0.norm1.weight",
        "encoder.down.0.attn.0.q.weight",
        "encoder.down.0.downsample.conv.weight",
        "encoder.mid.attn_1.proj_out.weight",
        "encoder.norm_out.bias",
        "decoder.up.0.attn.1.norm.weight",
        "decoder.up.1.upsample.conv.bias",
        "encoder.down.1.block.0.nin_shortcut.weight",
        "decoder.up.0.block.0.nin_shortcut.weight",
        "decoder.mid.block_2.conv2.weight",
        "quantize.embedding.weight",
        "quant_conv.weight",
        "post_quant_conv.bias",
    ]:
        assert key in ldm_state_dict, key
    assert ldm_state_dict["encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)


def test_parse_int_list():
    assert converter.parse_int_list("1,2,4") == (1, 2, 4)
    assert converter.parse_int_list("[1, 2]") == (1, 2)
    assert converter.parse_int_list("") == ()


def test_defaults_are_resshift_f4():
    config = converter.create_vqmodel_config(converter.parse_args(["--checkpoint_path=x", "--output_dir=y"]))
    assert config["block_out_channels"] == [128, 256, 512]
    assert config["down_block_types"] == ["DownEncoderBlock2D"] * 3
    assert config["up_block_types"] == ["UpDecoderBlock2D"] * 3
    assert config["layers_per_block"] == 2
    assert (config["latent_channels"], config["vq_embed_dim"], config["num_vq_embeddings"]) == (3, 3, 8192)
    assert config["mid_block_add_attention"] is True


def test_state_dict_round_trip(tiny_model, ldm_state_dict):
    config = converter.create_vqmodel_config(
        converter.parse_args(["--checkpoint_path=x", "--output_dir=y", *TINY_FLAGS])
    )
    for key in ["down_block_types", "up_block_types", "block_out_channels"]:
        assert list(config[key]) == list(tiny_model.config[key]), key
    for key in ["layers_per_block", "latent_channels", "vq_embed_dim", "num_vq_embeddings", "norm_num_groups"]:
        assert config[key] == tiny_model.config[key], key

    converted = converter.convert_vq_checkpoint(ldm_state_dict, config)
    expected = tiny_model.state_dict()
    assert sorted(converted) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(converted[key], value), key


def test_cli_round_trip_outputs_match(tmp_path, tiny_model, ldm_state_dict, capsys):
    # Wrapped like a training checkpoint, with VQ-GAN loss weights that must be dropped.
    checkpoint = {
        "state_dict": {**ldm_state_dict, "loss.logvar": torch.zeros(()), "loss.discriminator.w": torch.ones(2)}
    }
    torch.save(checkpoint, tmp_path / "autoencoder_vq.pth")
    run_converter(tmp_path / "autoencoder_vq.pth", tmp_path / "vqvae")
    assert "parameters" in capsys.readouterr().out
    assert (tmp_path / "vqvae" / "diffusion_pytorch_model.safetensors").is_file()

    loaded = VQModel.from_pretrained(tmp_path / "vqvae").eval()
    images = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents, expected_latents = loaded.encode(images).latents, tiny_model.encode(images).latents
        decoded, expected_decoded = loaded.decode(latents).sample, tiny_model.decode(expected_latents).sample
    assert torch.equal(latents, expected_latents)
    assert torch.equal(decoded, expected_decoded)


def test_module_prefix_is_stripped(tmp_path, tiny_model, ldm_state_dict):
    torch.save({f"module.{key}": value for key, value in ldm_state_dict.items()}, tmp_path / "ddp.pth")
    model = run_converter(tmp_path / "ddp.pth", tmp_path / "vqvae")
    assert torch.equal(model.quantize.embedding.weight, tiny_model.quantize.embedding.weight)


def test_unknown_key_is_named(tmp_path, ldm_state_dict):
    torch.save({**ldm_state_dict, "encoder.extra.weight": torch.ones(2)}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"not part of an LDM VQ autoencoder.*encoder\.extra\.weight"):
        run_converter(tmp_path / "extra.pth", tmp_path / "vqvae")
    assert not (tmp_path / "vqvae").exists()


def test_leftover_key_is_named(tmp_path, ldm_state_dict):
    # Renamed like a resnet parameter, but no such parameter exists in the VQModel.
    torch.save({**ldm_state_dict, "encoder.down.0.block.0.lora_A": torch.ones(2)}, tmp_path / "lora.pth")
    with pytest.raises(ValueError, match=r"no counterpart.*encoder\.down\.0\.block\.0\.lora_A"):
        run_converter(tmp_path / "lora.pth", tmp_path / "vqvae")


def test_missing_key_is_named(tmp_path, ldm_state_dict):
    state_dict = {key: value for key, value in ldm_state_dict.items() if key != "encoder.down.0.attn.0.k.bias"}
    torch.save(state_dict, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"does not provide.*encoder\.down_blocks\.0\.attentions\.0\.to_k\.bias"):
        run_converter(tmp_path / "missing.pth", tmp_path / "vqvae")


def test_wrong_architecture_flags_are_reported(tmp_path, ldm_state_dict):
    torch.save(ldm_state_dict, tmp_path / "vq.pth")
    with pytest.raises(ValueError, match="does not match the VQModel config"):
        run_converter(tmp_path / "vq.pth", tmp_path / "vqvae", flags=[*TINY_FLAGS, "--n_embed=32"])
    with pytest.raises(ValueError, match="does not match the VQModel config"):
        run_converter(tmp_path / "vq.pth", tmp_path / "vqvae", flags=[*TINY_FLAGS, "--attn_resolutions="])


def test_missing_checkpoint_cli(tmp_path):
    missing = tmp_path / "autoencoder_vq_f4.pth"
    script = TRAINING_DIR / "convert_vq_f4_to_diffusers.py"
    cmd = [sys.executable, str(script), "--checkpoint_path", str(missing), "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip() == f"error: checkpoint not found: {missing}"


def test_matches_original_ldm_implementation(tmp_path):
    pytest.importorskip("taming.modules.diffusionmodules.model", reason="original LDM/taming code not installed")
    import verify_vq_conversion

    spec = verify_vq_conversion.CASES["level-attention"]
    diffs = verify_vq_conversion.verify_case(spec, tmp_path, dtype=torch.float64)
    assert diffs["index_mismatches"] == 0
    for key in ["encode", "quantize", "decode", "decode_not_quantized"]:
        assert diffs[key] < 1e-9, (key, diffs)
