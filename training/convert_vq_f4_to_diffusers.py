#!/usr/bin/env python
"""Convert ResShift's / LDM's VQ first-stage checkpoint (`autoencoder_vq_f4.pth`) to a diffusers `VQModel`.

The checkpoint is the state dict of ResShift's `VQModelTorch` (LDM's `Encoder`, `Decoder`, `VectorQuantizer2` and the
two 1x1 quant convolutions), optionally wrapped in a `state_dict` key and optionally carrying the VQ-GAN training loss
(`loss.*`, discriminator), which is dropped. The architecture flags default to ResShift's f4 autoencoder:

    python training/convert_vq_f4_to_diffusers.py --checkpoint_path autoencoder_vq_f4.pth --output_dir vqvae-f4

The renaming of the encoder, decoder and mid blocks is diffusers' own (`convert_ldm_vae_checkpoint`); this script adds
the codebook, LDM's per-resolution attention blocks (`attn_resolutions`), and a strict check: every checkpoint key must
become exactly one `VQModel` key with the right shape, otherwise the conversion stops and names the keys.
"""

import argparse
import pickle
import re
import sys
from pathlib import Path

import torch
from diffusers import VQModel
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint, update_vae_attentions_ldm_to_diffusers


# Training-only parts of an LDM/taming VQ-GAN checkpoint (perceptual loss and discriminator).
DROPPED_PREFIXES = ("loss.", "discriminator.")
# Wrappers added by `DataParallel`/`DistributedDataParallel` or `torch.compile` when the checkpoint was saved.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
CODEBOOK_KEY = "quantize.embedding.weight"
# LDM's attention blocks inside a resolution level: `encoder.down.{level}.attn.{i}.*` / `decoder.up.{level}.attn.{i}.*`.
LEVEL_ATTENTION_KEY = re.compile(r"^(?P<part>encoder\.down|decoder\.up)\.(?P<level>\d+)\.attn\.(?P<index>\d+)\.")
# LDM's `Normalize` is `GroupNorm(num_groups=32, eps=1e-6)` everywhere.
LDM_NORM_NUM_GROUPS = 32


def format_keys(keys, limit=30):
    """`N key(s): [...]`, listing at most `limit` of them."""
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} key(s): {keys[:limit]}{more}"


def parse_int_list(text):
    """`"1,2,4"` -> `(1, 2, 4)`; an empty string gives `()`."""
    text = text.strip().strip("[]()")
    return tuple(int(item) for item in text.split(",") if item.strip())


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_path", type=str, required=True, help="LDM/ResShift VQ checkpoint (.pth/.ckpt).")
    parser.add_argument("--output_dir", type=str, required=True, help="Where to save the diffusers `VQModel`.")
    parser.add_argument("--ch", type=int, default=128, help="Base channel count (`ddconfig.ch`).")
    parser.add_argument("--ch_mult", type=parse_int_list, default=(1, 2, 4), help="Channel multipliers, e.g. 1,2,4.")
    parser.add_argument("--num_res_blocks", type=int, default=2, help="Residual blocks per encoder level.")
    parser.add_argument(
        "--attn_resolutions",
        type=parse_int_list,
        default=(),
        help="Resolutions with attention blocks, e.g. 32,16 ('' for none, as in ResShift's f4 autoencoder).",
    )
    parser.add_argument(
        "--resolution", type=int, default=256, help="`ddconfig.resolution`: the reference for --attn_resolutions."
    )
    parser.add_argument("--in_channels", type=int, default=3, help="Image channels in (`ddconfig.in_channels`).")
    parser.add_argument("--out_ch", type=int, default=3, help="Image channels out (`ddconfig.out_ch`).")
    parser.add_argument("--z_channels", type=int, default=3, help="Encoder output channels (`ddconfig.z_channels`).")
    parser.add_argument("--embed_dim", type=int, default=3, help="Codebook vector size.")
    parser.add_argument("--n_embed", type=int, default=8192, help="Codebook size.")
    parser.add_argument(
        "--scaling_factor",
        type=float,
        default=1.0,
        help="Stored in the config only; ResShift uses the latents unscaled (1.0).",
    )
    return parser.parse_args(input_args)


def attention_levels(args):
    """The LDM levels (0 = full resolution) that hold attention blocks, as LDM's `Encoder`/`Decoder` decide."""
    return {level for level in range(len(args.ch_mult)) if args.resolution // 2**level in args.attn_resolutions}


def create_vqmodel_config(args):
    levels = range(len(args.ch_mult))
    with_attention = attention_levels(args)
    down_block_types = [
        "AttnDownEncoderBlock2D" if level in with_attention else "DownEncoderBlock2D" for level in levels
    ]
    # diffusers' decoder lists its blocks from the lowest resolution up: up_blocks[i] is LDM's `up[n - 1 - i]`.
    up_block_types = [
        "AttnUpDecoderBlock2D" if level in with_attention else "UpDecoderBlock2D" for level in reversed(levels)
    ]
    return {
        "in_channels": args.in_channels,
        "out_channels": args.out_ch,
        "down_block_types": down_block_types,
        "up_block_types": up_block_types,
        "block_out_channels": [args.ch * mult for mult in args.ch_mult],
        "layers_per_block": args.num_res_blocks,
        "act_fn": "silu",
        "latent_channels": args.z_channels,
        "sample_size": args.resolution,
        "num_vq_embeddings": args.n_embed,
        "norm_num_groups": LDM_NORM_NUM_GROUPS,
        "vq_embed_dim": args.embed_dim,
        "scaling_factor": args.scaling_factor,
        "norm_type": "group",
        # LDM's encoder and decoder always have `mid.attn_1`, whatever `attn_resolutions` says.
        "mid_block_add_attention": True,
    }


def strip_prefix(state_dict, prefix):
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def load_ldm_state_dict(checkpoint_path):
    """Reads the checkpoint, unwraps `state_dict` and `module.`, and drops the training loss/discriminator."""
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{checkpoint_path} holds more than tensors and plain containers: {error}") from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(torch.is_tensor(value) for value in checkpoint.values()):
        raise ValueError(f"{checkpoint_path} is not a state dict of tensors (nor a dict with a `state_dict` one).")
    state_dict = dict(checkpoint)
    for prefix in WRAPPER_PREFIXES:
        state_dict = strip_prefix(state_dict, prefix)
    return {key: value for key, value in state_dict.items() if not key.startswith(DROPPED_PREFIXES)}


def convert_level_attention_key(ldm_key, tensor, num_levels):
    """Renames one key of LDM's per-level `AttnBlock` (which diffusers' VAE converter does not cover)."""
    match = LEVEL_ATTENTION_KEY.match(ldm_key)
    part, level, index = match["part"], int(match["level"]), match["index"]
    if part == "encoder.down":
        mapping = {"old": f"down.{level}.attn.{index}", "new": f"down_blocks.{level}.attentions.{index}"}
    else:
        up_block = num_levels - 1 - level
        mapping = {"old": f"up.{level}.attn.{index}", "new": f"up_blocks.{up_block}.attentions.{index}"}
    converted = {}
    update_vae_attentions_ldm_to_diffusers([ldm_key], converted, {ldm_key: tensor}, mapping)
    return converted


def convert_module(ldm_keys, tensors, config):
    """Converts the parameters of one LDM module; returns `{diffusers_key: tensor}`, empty when not recognised."""
    state_dict = dict(zip(ldm_keys, tensors))
    if ldm_keys == [CODEBOOK_KEY]:
        return state_dict
    if all(LEVEL_ATTENTION_KEY.match(key) for key in ldm_keys):
        converted = {}
        for key, tensor in state_dict.items():
            converted.update(convert_level_attention_key(key, tensor, len(config["down_block_types"])))
        return converted
    try:
        return convert_ldm_vae_checkpoint(state_dict, config)
    except KeyError:  # e.g. an up-sampling conv without its bias
        return {}


def build_key_map(ldm_state_dict, config):
    """Maps every LDM key to its diffusers key and shape, or raises naming the keys that have no counterpart.

    diffusers' `convert_ldm_vae_checkpoint` silently skips keys it does not know, so the checkpoint is converted one
    module (weight and bias) at a time, on shape-only "meta" tensors, to see which key becomes which `VQModel` key.
    """
    modules = {}
    for ldm_key in ldm_state_dict:
        modules.setdefault(ldm_key.rsplit(".", 1)[0], []).append(ldm_key)

    key_map, unknown = {}, []
    for ldm_keys in modules.values():
        metas = [torch.empty(ldm_state_dict[key].shape, device="meta") for key in ldm_keys]
        converted = convert_module(ldm_keys, metas, config)
        # Renaming keeps the parameter name (`weight`, `bias`), which pairs each input with its output.
        by_name = {key.rsplit(".", 1)[-1]: (key, meta.shape) for key, meta in converted.items()}
        names = [key.rsplit(".", 1)[-1] for key in ldm_keys]
        if len(converted) != len(ldm_keys) or sorted(by_name) != sorted(names):
            unknown.extend(ldm_keys)
            continue
        key_map.update({key: by_name[name] for key, name in zip(ldm_keys, names)})
    if unknown:
        raise ValueError(f"checkpoint keys that are not part of an LDM VQ autoencoder: {format_keys(unknown)}")
    return key_map


def check_key_map(key_map, expected_shapes):
    """Checks that the converted keys are exactly the `VQModel`'s, with the same shapes."""
    converted = {}
    for ldm_key, (diffusers_key, shape) in key_map.items():
        converted.setdefault(diffusers_key, []).append((ldm_key, shape))
    problems = []
    duplicated = {key: [ldm for ldm, _ in sources] for key, sources in converted.items() if len(sources) > 1}
    if duplicated:
        problems.append(f"several checkpoint keys map to one diffusers key: {duplicated}")
    unexpected = [ldm for key, sources in converted.items() if key not in expected_shapes for ldm, _ in sources]
    if unexpected:
        problems.append(f"checkpoint keys with no counterpart in this VQModel config: {format_keys(unexpected)}")
    missing = set(expected_shapes) - set(converted)
    if missing:
        problems.append(f"VQModel keys the checkpoint does not provide: {format_keys(missing)}")
    mismatched = [
        f"{ldm} -> {key}: {tuple(shape)} vs {tuple(expected_shapes[key])}"
        for key, sources in converted.items()
        if key in expected_shapes
        for ldm, shape in sources
        if tuple(shape) != tuple(expected_shapes[key])
    ]
    if mismatched:
        problems.append(f"shape mismatches (check the architecture flags): {format_keys(mismatched)}")
    if problems:
        raise ValueError("the checkpoint does not match the VQModel config; " + "; ".join(problems))


def convert_vq_checkpoint(ldm_state_dict, config):
    """Returns the diffusers state dict for `VQModel(**config)`, or raises naming every key that does not fit."""
    with torch.device("meta"):  # shapes only, without allocating or initialising the weights
        expected_shapes = {key: value.shape for key, value in VQModel(**config).state_dict().items()}
    key_map = build_key_map(ldm_state_dict, config)
    check_key_map(key_map, expected_shapes)
    return {
        diffusers_key: ldm_state_dict[ldm_key].reshape(shape).contiguous()
        for ldm_key, (diffusers_key, shape) in key_map.items()
    }


def main(args):
    checkpoint_path = Path(args.checkpoint_path)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint_path}")

    config = create_vqmodel_config(args)
    state_dict = convert_vq_checkpoint(load_ldm_state_dict(checkpoint_path), config)
    model = VQModel(**config)
    model.load_state_dict(state_dict, strict=True)
    model.save_pretrained(args.output_dir, safe_serialization=True)

    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    print(f"Converted {checkpoint_path} ({len(state_dict)} tensors, {num_parameters:,} parameters)")
    print(f"  blocks: {config['down_block_types']}, channels {config['block_out_channels']}")
    print(f"  codebook: {config['num_vq_embeddings']} x {config['vq_embed_dim']}")
    print(f"Saved VQModel to {args.output_dir}")
    return model


if __name__ == "__main__":
    try:
        main(parse_args())
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
