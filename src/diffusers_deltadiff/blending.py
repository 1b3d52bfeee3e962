"""
The denoise knob: one pipeline whose UNet weights lie between two models of one architecture and one start (the
clean x4 model and the real-world one fine-tuned from it), as Real-ESRGAN's `-dn` blends its two general models.
"""

import copy
import math

import torch


def interpolate_weights(start: dict, end: dict, strength: float) -> dict:
    """`start + strength * (end - start)` for every tensor, in float32 and back to each tensor's dtype."""
    blended = {}
    for key, value in start.items():
        mixed = torch.lerp(value.float(), end[key].float(), strength)
        blended[key] = mixed.to(value.dtype)
    return blended


def check_strength(strength) -> float:
    """`strength` as a float in `[0, 1]`, else a `TypeError` (not a number: `True`, `"0.5"`) or a `ValueError`."""
    if isinstance(strength, (bool, str, bytes)):
        raise TypeError(f"denoise strength must be a number from 0 to 1, got {strength!r}")
    try:
        value = float(strength)
    except (TypeError, ValueError) as err:
        raise TypeError(f"denoise strength must be a number from 0 to 1, got {strength!r}") from err
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"denoise strength must be between 0 and 1, got {value!r}")
    return value


def differing_keys(one, two) -> list[str]:
    """The public configuration keys on which two configurations disagree."""
    one, two = dict(one), dict(two)
    return sorted(k for k in set(one) | set(two) if not k.startswith("_") and one.get(k) != two.get(k))


def check_blendable(first, second):
    """
    Both pipelines' UNets have the same class, configuration and tensors, their schedulers and autoencoders the same
    configuration (one method: blending a UNet that predicts the residual with one that predicts the sample means
    nothing), and one factor; else a ValueError naming the gap.
    """
    if type(first.unet) is not type(second.unet):
        raise ValueError(f"cannot blend a {type(first.unet).__name__} with a {type(second.unet).__name__}")
    differing = differing_keys(first.unet.config, second.unet.config)
    if differing:
        raise ValueError(f"cannot blend UNets whose configurations differ ({', '.join(differing)})")
    if first.upscale_factor != second.upscale_factor:
        raise ValueError(f"cannot blend a x{first.upscale_factor} model with a x{second.upscale_factor} one")
    for name in ("scheduler", "vqvae"):
        one, two = getattr(first, name), getattr(second, name)
        differing = [] if type(one) is type(two) else ["class"]
        differing += differing_keys(one.config, two.config)
        if differing:
            raise ValueError(f"cannot blend pipelines whose {name}s differ ({', '.join(differing)})")


def blend_pipelines(clean, real, strength: float):
    """
    A pipeline whose UNet weights lie `strength` of the way from `clean`'s to `real`'s: 0 returns `clean` and 1
    returns `real` themselves (so the two ends give exactly the two models' outputs); in between, a copy of `clean`
    (its scheduler, autoencoder and pipeline settings; the larger `tile_context`, `default_tile_size` and
    `border_padding` of the two) with interpolated UNet weights. Neither input is modified: `clean` can still be used, or blended again, afterwards.
    """
    strength = check_strength(strength)
    check_blendable(clean, real)
    if strength == 0:
        return clean
    if strength == 1:
        return real
    blended = copy.deepcopy(clean)
    weights = interpolate_weights(clean.unet.state_dict(), real.unet.state_dict(), strength)
    blended.unet.load_state_dict(weights)
    # a tile sees the larger of the two models' contexts: what either needs for tiles to equal the whole image; the
    # larger padding keeps the real-world model's (8 LR pixels: JPEG's 8x8 grid where training put it), the larger
    # tiles keep that context's share of the work as the model that needs it has it
    blended.register_to_config(
        tile_context=max(clean.config.tile_context, real.config.tile_context),
        default_tile_size=max(clean.config.default_tile_size, real.config.default_tile_size),
        border_padding=max(clean.config.border_padding, real.config.border_padding),
    )
    return blended
