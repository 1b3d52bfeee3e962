#!/usr/bin/env python
"""Checks `convert_vq_f4_to_diffusers.py` numerically against the original LDM/taming VQ autoencoder.

For each case, a small randomly initialised original model (LDM's `Encoder`, `Decoder` and `VectorQuantizer2` plus the
two quant convolutions, laid out like ResShift's `VQModelTorch`) is saved as a `.pth`, converted with the converter's
command-line entry point, loaded back with `VQModel.from_pretrained`, and both models are run on the same images:

- encode: the pre-quantisation latents `h` (after `quant_conv`), what the DeltaDiff pipeline diffuses;
- quantize: the codebook vectors `h` snaps to (and whether the chosen codebook indices agree);
- decode: quantize -> `post_quant_conv` -> decoder, and the decoder alone (`force_not_quantize`).

The original code comes from taming-transformers (whose `Encoder`/`Decoder`/`VectorQuantizer2` LDM and ResShift copy
with the same parameter names). Its PyPI package pulls in pytorch-lightning and torchvision, which this check does not
need, so install it without dependencies:

    pip install --no-deps taming-transformers-rom1504==0.0.6 einops
    python training/verify_vq_conversion.py                # float64; --dtype float32 also works

Without the package, the script says so and exits 0 (skipped).
"""

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import torch
from diffusers import VQModel

import convert_vq_f4_to_diffusers as converter  # this folder: sys.path[0] when run as a script


CASES = {
    # ResShift's f4 layout (no attention outside the mid blocks, z_channels == embed_dim), scaled down.
    "resshift-f4-small": {
        "ch": 32,
        "ch_mult": (1, 2, 2),
        "num_res_blocks": 1,
        "attn_resolutions": (),
        "resolution": 32,
        "z_channels": 3,
        "embed_dim": 3,
        "n_embed": 64,
        "wrap_checkpoint": False,
    },
    # Attention blocks inside a level, z_channels != embed_dim, and a checkpoint wrapped with training-loss keys.
    "level-attention": {
        "ch": 32,
        "ch_mult": (1, 2, 2),
        "num_res_blocks": 2,
        "attn_resolutions": (16,),
        "resolution": 32,
        "z_channels": 4,
        "embed_dim": 3,
        "n_embed": 64,
        "wrap_checkpoint": True,
    },
}
TOLERANCES = {torch.float64: 1e-9, torch.float32: 1e-4}


def import_original():
    """The original `Encoder`, `Decoder` and `VectorQuantizer2` classes, or `None` when taming is not installed."""
    try:
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import VectorQuantizer2
    except ImportError:
        return None
    return Encoder, Decoder, VectorQuantizer2


class OriginalVQModel(torch.nn.Module):
    """ResShift's `VQModelTorch`: same submodules and parameter names, built from the original classes."""

    def __init__(self, spec):
        super().__init__()
        encoder_cls, decoder_cls, quantizer_cls = import_original()
        ddconfig = {
            "double_z": False,
            "z_channels": spec["z_channels"],
            "resolution": spec["resolution"],
            "in_channels": 3,
            "out_ch": 3,
            "ch": spec["ch"],
            "ch_mult": list(spec["ch_mult"]),
            "num_res_blocks": spec["num_res_blocks"],
            "attn_resolutions": list(spec["attn_resolutions"]),
            "dropout": 0.0,
        }
        with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints the latent shape
            self.encoder = encoder_cls(**ddconfig)
            self.decoder = decoder_cls(**ddconfig)
        self.quantize = quantizer_cls(spec["n_embed"], spec["embed_dim"], beta=0.25)
        self.quant_conv = torch.nn.Conv2d(spec["z_channels"], spec["embed_dim"], 1)
        self.post_quant_conv = torch.nn.Conv2d(spec["embed_dim"], spec["z_channels"], 1)

    def encode(self, x):
        return self.quant_conv(self.encoder(x))

    def decode(self, h, force_not_quantize=False):
        quant = h if force_not_quantize else self.quantize(h)[0]
        return self.decoder(self.post_quant_conv(quant))


@torch.no_grad()
def randomize(model, images, seed):
    """Moves every parameter off its default (norms included) and spreads the codebook over the latents."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    latents = model.encode(images)
    codebook = model.quantize.embedding.weight
    codebook.copy_(latents.mean() + latents.std() * torch.randn(codebook.shape, generator=generator))


def save_ldm_checkpoint(model, path, wrap):
    """Saves the state dict as ResShift does; `wrap` puts it under `state_dict` next to VQ-GAN loss weights."""
    state_dict = {key: value.float() for key, value in model.state_dict().items()}
    if wrap:
        state_dict["loss.logvar"] = torch.zeros(())
        state_dict["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
        state_dict = {"state_dict": state_dict}
    torch.save(state_dict, path)


def converter_flags(spec):
    return [
        f"--ch={spec['ch']}",
        f"--ch_mult={','.join(map(str, spec['ch_mult']))}",
        f"--num_res_blocks={spec['num_res_blocks']}",
        f"--attn_resolutions={','.join(map(str, spec['attn_resolutions']))}",
        f"--resolution={spec['resolution']}",
        f"--z_channels={spec['z_channels']}",
        f"--embed_dim={spec['embed_dim']}",
        f"--n_embed={spec['n_embed']}",
    ]


def max_abs_diff(a, b):
    return (a - b).abs().max().item()


@torch.no_grad()
def compare(original, converted, images):
    h_original, h_converted = original.encode(images), converted.encode(images).latents
    quant_original, _, (_, _, indices_original) = original.quantize(h_original)
    quant_converted, _, (_, _, indices_converted) = converted.quantize(h_converted)
    return {
        "encode": max_abs_diff(h_original, h_converted),
        "quantize": max_abs_diff(quant_original, quant_converted),
        "index_mismatches": int((indices_original.flatten() != indices_converted.flatten()).sum()),
        "decode": max_abs_diff(original.decode(h_original), converted.decode(h_converted).sample),
        "decode_not_quantized": max_abs_diff(
            original.decode(h_original, force_not_quantize=True),
            converted.decode(h_original, force_not_quantize=True).sample,
        ),
    }


def verify_case(spec, workdir, dtype=torch.float64, seed=0):
    """Builds, saves, converts and compares one case; returns the max abs differences."""
    torch.manual_seed(seed)
    original = OriginalVQModel(spec).eval()
    # Not square, and not a multiple of the resolution, to exercise LDM's asymmetric downsampling padding.
    images = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(seed + 1)) * 2 - 1
    randomize(original, images, seed)

    checkpoint_path = Path(workdir) / "autoencoder_vq.pth"
    output_dir = Path(workdir) / "vqvae"
    save_ldm_checkpoint(original, checkpoint_path, spec["wrap_checkpoint"])
    flags = ["--checkpoint_path", str(checkpoint_path), "--output_dir", str(output_dir), *converter_flags(spec)]
    with contextlib.redirect_stdout(io.StringIO()):
        converter.main(converter.parse_args(flags))
    converted = VQModel.from_pretrained(output_dir, torch_dtype=dtype).eval()
    return compare(original.to(dtype), converted, images.to(dtype))


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(input_args)


def main(args):
    if import_original() is None:
        print("SKIPPED: the original taming/LDM code is not installed; run")
        print("    pip install --no-deps taming-transformers-rom1504==0.0.6 einops")
        return 0
    dtype = getattr(torch, args.dtype)
    tolerance = TOLERANCES[dtype]
    failed = False
    for name, spec in CASES.items():
        with tempfile.TemporaryDirectory() as workdir:
            diffs = verify_case(spec, workdir, dtype=dtype, seed=args.seed)
        ok = diffs["index_mismatches"] == 0 and all(
            value <= tolerance for key, value in diffs.items() if key != "index_mismatches"
        )
        failed |= not ok
        print(
            f"{name:18s} ({args.dtype}) max abs diff: encode {diffs['encode']:.3e}, quantize {diffs['quantize']:.3e}, "
            f"decode {diffs['decode']:.3e}, decode without quantizing {diffs['decode_not_quantized']:.3e}; "
            f"codebook index mismatches {diffs['index_mismatches']} -> {'OK' if ok else 'FAIL'}"
        )
    print("FAILED" if failed else f"OK: every difference <= {tolerance:g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
