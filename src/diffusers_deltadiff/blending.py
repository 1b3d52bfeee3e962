"""
The denoise knob: one pipeline whose UNet weights lie between two models of one architecture and one start (the
clean x4 model and the real-world one fine-tuned from it), as Real-ESRGAN's `-dn` blends its two general models.
"""

import math

import torch


def interpolate_weights(start: dict, end: dict, strength: float) -> dict:
    """`start + strength * (end - start)` for every tensor, in float32 and back to each tensor's dtype."""
    blended = {}
    for key, value in start.items():
        mixed = torch.lerp(value.float(), end[key].float(), strength)
        blended[key] = mixed.to(value.dtype)
    return blended


def check_blendable(first, second):
    """Both pipelines' UNets have the same class, configuration and tensors (else a ValueError naming the gap)."""
    if type(first.unet) is not type(second.unet):
        raise ValueError(f"cannot blend a {type(first.unet).__name__} with a {type(second.unet).__name__}")
    one, two = dict(first.unet.config), dict(second.unet.config)
    differing = sorted(k for k in set(one) | set(two) if not k.startswith("_") and one.get(k) != two.get(k))
    if differing:
        raise ValueError(f"cannot blend UNets whose configurations differ ({', '.join(differing)})")
    if first.upscale_factor != second.upscale_factor:
        raise ValueError(f"cannot blend a x{first.upscale_factor} model with a x{second.upscale_factor} one")


def blend_pipelines(clean, real, strength: float):
    """
    The pipeline `clean` with its UNet weights moved `strength` of the way to `real`'s: 0 returns `clean` and 1
    returns `real`, untouched (so the two ends give exactly the two models' outputs); in between, `clean` with
    interpolated weights (its scheduler, autoencoder and configuration are kept).
    """
    strength = float(strength)
    if not math.isfinite(strength) or not 0 <= strength <= 1:
        raise ValueError(f"denoise strength must be between 0 and 1, got {strength:g}")
    check_blendable(clean, real)
    if strength == 0:
        return clean
    if strength == 1:
        return real
    clean.unet.load_state_dict(interpolate_weights(clean.unet.state_dict(), real.unet.state_dict(), strength))
    return clean
