# Copyright 2026 The diffusers-deltadiff authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Residual-shifting scheduler of DeltaDiff (kappa = 0) and ResShift (kappa > 0).

Saved pipelines name this module in `model_index.json`: never rename it.

Equation numbers refer to Yang et al., "A Residual-Guided Diffusion Model for Enhanced Image Super-Resolution"
(DeltaDiff). ResShift is Yue et al., "ResShift: Efficient Diffusion Model for Image Super-resolution by Residual
Shifting" (NeurIPS 2023).

Symbols:

- `x_0`: the latent of the high-resolution image; `x_t`: the latent at timestep `t` of the chain.
- `y`: the latent of the bicubic-upsampled low-resolution image, where the reverse chain starts.
- `e_0 = y - x_0`: the residual between the two.
- `eta_t`: the shift of timestep `t`, growing from `eta_1` to `eta_T` (eq. 7); `eta_0 = 0`.
- `alpha_t = eta_t - eta_{t-1}`.
- `kappa`: the noise scale; `0` for DeltaDiff, `2` for ResShift.
- `f(x_t, LR, t)`: the model. It predicts `x_0` (`prediction_type="sample"`) or `e_0` (`"residual"`).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor


@dataclass
class DeltaShiftSchedulerOutput(BaseOutput):
    """
    Output class for the scheduler's `step` function output.

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            Computed sample `x_{t-1}` of the previous timestep. `prev_sample` is the next model input in the reverse
            chain.
        pred_original_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The model's prediction of the clean latent `x_0`.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def eta_schedule_exponents(num_train_timesteps: int, power: float) -> np.ndarray:
    """`beta_t = ((t - 1) / (T - 1)) ** p * (T - 1)` for `t = 1..T` (eq. 7), in float64."""
    if num_train_timesteps == 1:
        return np.zeros(1, dtype=np.float64)
    t = np.arange(1, num_train_timesteps + 1, dtype=np.float64)
    return ((t - 1) / (num_train_timesteps - 1)) ** power * (num_train_timesteps - 1)


def eta_schedule(num_train_timesteps: int, eta_start: float, eta_end: float, power: float) -> np.ndarray:
    """
    The shifting schedule `[eta_1, ..., eta_T]` of eq. 7, in float64:

        sqrt(eta_t) = sqrt(eta_1) * b0 ** beta_t,   b0 = exp(log(eta_T / eta_1) / (2 (T - 1)))

    so that `eta_1 = eta_start` and `eta_T = eta_end`. With a single timestep the schedule is `[eta_end]`.
    """
    if num_train_timesteps == 1:
        return np.array([eta_end], dtype=np.float64)
    b0 = math.exp(math.log(eta_end / eta_start) / (2 * (num_train_timesteps - 1)))
    sqrt_etas = math.sqrt(eta_start) * np.power(b0, eta_schedule_exponents(num_train_timesteps, power))
    return sqrt_etas**2


def respaced_indices(num_train_timesteps: int, num_inference_steps: int) -> np.ndarray:
    """
    Ascending 0-based indices of the trained timesteps kept when sampling with fewer steps.

    The last trained timestep (`eta_T`, where the chain starts from `y`) is always kept; otherwise the indices are
    evenly spread over `[0, T - 1]`, both ends included, like ResShift's `space_timesteps`.
    """
    if num_inference_steps == 1:
        return np.array([num_train_timesteps - 1], dtype=np.int64)
    return np.round(np.linspace(0, num_train_timesteps - 1, num_inference_steps)).astype(np.int64)


def posterior_mean_coefficients(etas: np.ndarray, etas_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients of `x_t` and `x_0` in the reverse step (eq. 5/6): `eta_{t-1} / eta_t` and `alpha_t / eta_t`."""
    alphas = etas - etas_prev
    return etas_prev / etas, alphas / etas


def posterior_variance(etas: np.ndarray, etas_prev: np.ndarray, kappa: float) -> np.ndarray:
    """ResShift's posterior variance `kappa^2 * eta_{t-1} / eta_t * alpha_t` (zero for DeltaDiff, kappa = 0)."""
    return kappa**2 * etas_prev / etas * (etas - etas_prev)


def _integer(value, name: str) -> int:
    """One integer (a Python or NumPy integer, or a one-element integer tensor) as an `int`, else a `ValueError`."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_floating_point:
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be one integer, got {value!r}.")
    return int(value)


class DeltaShiftScheduler(SchedulerMixin, ConfigMixin):
    """
    `DeltaShiftScheduler` walks the residual-shifting Markov chain between the latent `x_0` of a high-resolution
    image and the latent `y` of its bicubic-upsampled low-resolution version.

    With `kappa = 0` (the default) this is DeltaDiff: the forward process (eq. 4) `x_t = x_0 + eta_t (y - x_0)` has
    no noise and the reverse step (eq. 5/6) is deterministic. With `kappa > 0` it is ResShift: Gaussian noise
    `kappa * sqrt(eta_t) * eps` is added in the forward process and the reverse step samples from the posterior.

    Timesteps are 0-based indices into the trained schedule: timestep `0` is `eta_1` and timestep `T - 1` is
    `eta_T`, as in ResShift. To build ResShift's own schedule from its configuration use
    [`~DeltaShiftScheduler.from_resshift_config`].

    This model inherits from [`SchedulerMixin`] and [`ConfigMixin`]. Check the superclass documentation for the
    generic methods the library implements for all schedulers such as loading and saving.

    Args:
        num_train_timesteps (`int`, defaults to 4):
            The number of diffusion steps `T` the model is trained with.
        eta_start (`float`, defaults to 0.01):
            The smallest shift `eta_1`.
        eta_end (`float`, defaults to 0.99):
            The largest shift `eta_T`; `x_T` is close to `y`.
        power (`float`, defaults to 0.3):
            The exponent `p` of the schedule (eq. 7). Smaller values spend more timesteps near `eta_T`.
        kappa (`float`, defaults to 0.0):
            The noise scale. `0` gives DeltaDiff, ResShift uses `2`.
        prediction_type (`str`, defaults to `"sample"`):
            What the model predicts. `"sample"`: the clean latent `x_0`, as in DeltaDiff (the paper's choice).
            `"residual"`: the residual `e_0 = y - x_0` (ResShift's `predict_type: residual`), so that
            `x_0 = y - f(x_t, LR, t)`. A model whose output is zero then returns `y` exactly: the bicubic upsampling.
        default_inference_steps (`int`, *optional*):
            The number of reverse steps [`~DeltaShiftScheduler.set_timesteps`] runs when it is given none: the chain
            length the model was trained through (1 for a model trained as a one-pass regression from `x_T = y`).
            `None` (the default) runs all `num_train_timesteps`.
    """

    _compatibles = []
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 4,
        eta_start: float = 0.01,
        eta_end: float = 0.99,
        power: float = 0.3,
        kappa: float = 0.0,
        prediction_type: str = "sample",
        *,
        default_inference_steps: int | None = None,
    ):
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int):
            raise ValueError(f"`num_train_timesteps` must be an integer, got {num_train_timesteps!r}.")
        if not 1 <= num_train_timesteps <= 1000:
            raise ValueError(f"`num_train_timesteps` must be from 1 to 1000, got {num_train_timesteps}.")
        for name, value in (("eta_start", eta_start), ("eta_end", eta_end), ("power", power), ("kappa", kappa)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
        if not 0.0 < eta_start <= eta_end <= 1.0:
            raise ValueError(f"Need 0 < eta_start <= eta_end <= 1, got eta_start={eta_start}, eta_end={eta_end}.")
        if power <= 0:
            raise ValueError(f"`power` must be positive, got {power}.")
        if kappa < 0:
            raise ValueError(f"`kappa` must be non-negative, got {kappa}.")
        if prediction_type not in ("sample", "residual"):
            raise ValueError(
                f"`prediction_type` must be 'sample' (the model predicts x_0) or 'residual' (it predicts y - x_0), "
                f"got {prediction_type!r}."
            )

        if default_inference_steps is not None and (
            isinstance(default_inference_steps, bool)
            or not isinstance(default_inference_steps, int)
            or not 1 <= default_inference_steps <= num_train_timesteps
        ):
            raise ValueError(
                f"`default_inference_steps` must be an integer from 1 to `num_train_timesteps` ({num_train_timesteps}) "
                f"or None, got {default_inference_steps!r} (with a shorter schedule, pass `default_inference_steps` "
                "too)."
            )

        self._etas = eta_schedule(num_train_timesteps, eta_start, eta_end, power)
        self.etas = torch.from_numpy(self._etas)
        # standard deviation of the initial latent `x_T` around `y`
        self.init_noise_sigma = kappa * math.sqrt(self._etas[-1])

        # setable values
        self.num_inference_steps = None
        self.timesteps = None
        # eta_{t-1} of the respaced chain and the step's coefficients, indexed by the trained timestep t
        self.etas_prev = None
        self.sample_coefficients = None
        self.original_coefficients = None
        self.posterior_stds = None

    @classmethod
    def from_resshift_config(
        cls,
        min_noise_level: float = 0.2,
        etas_end: float = 0.99,
        kappa: float = 2.0,
        steps: int = 4,
        power: float = 0.3,
        **kwargs,
    ) -> "DeltaShiftScheduler":
        """
        Build the scheduler that reproduces ResShift's `exponential` eta schedule from the fields of a ResShift
        diffusion config (`min_noise_level`, `etas_end`, `kappa`, `steps`, `schedule_kwargs.power`).

        ResShift parametrises the schedule by `sqrt(eta)`: its first value is `min(min_noise_level / kappa,
        min_noise_level)` and its last is `etas_end`. Hence `eta_start = min(min_noise_level / kappa,
        min_noise_level) ** 2` and `eta_end = etas_end ** 2` (0.01 and 0.9801 for ResShift's bicubic x4 config).

        Examples:

        ```py
        >>> from diffusers_deltadiff import DeltaShiftScheduler

        >>> scheduler = DeltaShiftScheduler.from_resshift_config(min_noise_level=0.2, etas_end=0.99, kappa=2.0, steps=4)
        >>> scheduler.etas
        ```
        """
        sqrt_eta_start = min(min_noise_level / kappa, min_noise_level) if kappa > 0 else min_noise_level
        return cls(
            num_train_timesteps=steps,
            eta_start=sqrt_eta_start**2,
            eta_end=etas_end**2,
            power=power,
            kappa=kappa,
            **kwargs,
        )

    def _timestep_indices(self, timesteps) -> torch.Tensor:
        """0-based `timesteps` (an int, a list or a tensor of them) as a 1-D long tensor, or a `ValueError`."""
        last = self.config.num_train_timesteps - 1
        try:
            indices = torch.as_tensor(timesteps, device=self.etas.device).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            indices = torch.tensor([-1])  # not numbers
        integral = not (indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool)
        if not integral or not bool(((indices >= 0) & (indices <= last)).all()):
            raise ValueError(f"`timesteps` must be integers from 0 to {last}, got {timesteps!r}.")
        return indices.long()

    def _eta(self, timesteps: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """`eta_t` for 0-based `timesteps`, shaped to broadcast against `like`."""
        etas = self.etas[self._timestep_indices(timesteps)].to(device=like.device, dtype=like.dtype)
        return etas.reshape(-1, *([1] * (like.ndim - 1)))

    def shift(
        self,
        original_samples: torch.Tensor,
        lr_samples: torch.Tensor,
        timesteps: torch.Tensor | int,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        The forward process (eq. 4): `x_t = x_0 + eta_t (y - x_0)`, plus `kappa * sqrt(eta_t) * noise` when
        `kappa > 0` (ResShift).

        Args:
            original_samples (`torch.Tensor`): The clean latents `x_0`.
            lr_samples (`torch.Tensor`): The latents `y` of the bicubic-upsampled low-resolution images.
            timesteps (`torch.Tensor` or `int`): 0-based timesteps, one per sample or one for the batch.
            noise (`torch.Tensor`, *optional*): Standard normal noise, required when `kappa > 0`.

        Returns:
            `torch.Tensor`: The shifted latents `x_t`.
        """
        eta = self._eta(timesteps, original_samples)
        shifted = original_samples + eta * (lr_samples - original_samples)
        if not self.is_deterministic:
            if noise is None:
                raise ValueError("`noise` is required by `shift` when kappa > 0.")
            shifted = shifted + self.config.kappa * eta.sqrt() * noise
        return shifted

    def init_latents(
        self, lr_samples: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """
        The start of the reverse chain: `x_T = y` when `kappa = 0`, `x_T = y + kappa * sqrt(eta_T) * eps` otherwise.

        Args:
            lr_samples (`torch.Tensor`): The latents `y` of the bicubic-upsampled low-resolution images.
            generator (`torch.Generator`, *optional*): Random generator(s) for the noise when `kappa > 0`.
        """
        if self.is_deterministic:
            return lr_samples.clone()
        noise = randn_tensor(lr_samples.shape, generator=generator, device=lr_samples.device, dtype=lr_samples.dtype)
        return lr_samples + self.init_noise_sigma * noise

    def scale_model_input(self, sample: torch.Tensor, timestep: torch.Tensor | int | None = None) -> torch.Tensor:
        """
        ResShift's input normalisation `x_t / sqrt(kappa^2 * eta_t + 1)`, the identity when `kappa = 0`.

        Args:
            sample (`torch.Tensor`): The current latents `x_t`.
            timestep (`int` or `torch.Tensor`): The current 0-based timestep.
        """
        if self.is_deterministic:
            return sample
        if timestep is None:
            raise ValueError("`timestep` is required by `scale_model_input` when kappa > 0.")
        return sample / (self.config.kappa**2 * self._eta(timestep, sample) + 1).sqrt()

    @property
    def is_deterministic(self) -> bool:
        """
        Whether the chain is deterministic: DeltaDiff (`kappa = 0`, no noise anywhere; the same input gives the same
        output, whatever the generator), or ResShift (`kappa > 0`, noise at the start and at every step).
        """
        return self.config.kappa == 0

    @property
    def default_steps(self) -> int:
        """The reverse steps run when none are asked for: `default_inference_steps`, else `num_train_timesteps`."""
        return self.config.get("default_inference_steps") or self.config.num_train_timesteps

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None):
        """
        Sets the timesteps of the reverse chain (to be run before inference).

        With fewer steps than `num_train_timesteps` the chain is respaced: a subsequence of the trained etas is
        kept (always including `eta_T`) and the step coefficients are recomputed from it, as in ResShift.

        Args:
            num_inference_steps (`int`, *optional*):
                The number of reverse steps, at most `num_train_timesteps`. Defaults to the config's
                `default_inference_steps`, or to `num_train_timesteps` when that is `None`.
            device (`str` or `torch.device`, *optional*):
                The device to which the timesteps should be moved to.
        """
        num_train_timesteps = self.config.num_train_timesteps
        if num_inference_steps is None:
            num_inference_steps = self.default_steps
        num_inference_steps = _integer(num_inference_steps, "num_inference_steps")
        if not 1 <= num_inference_steps <= num_train_timesteps:
            raise ValueError(
                f"`num_inference_steps` ({num_inference_steps}) must be between 1 and the scheduler's "
                f"`num_train_timesteps` ({num_train_timesteps}): the chain can be respaced to fewer steps, not more."
            )
        indices = respaced_indices(num_train_timesteps, num_inference_steps)
        etas = self._etas[indices]
        etas_prev = np.concatenate([[0.0], etas[:-1]])  # eta_0 = 0
        coef_sample, coef_original = posterior_mean_coefficients(etas, etas_prev)

        def by_timestep(values: np.ndarray) -> torch.Tensor:
            """Values of the kept timesteps at their trained index; NaN at the skipped ones."""
            table = np.full(num_train_timesteps, np.nan)
            table[indices] = values
            return torch.from_numpy(table)

        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.from_numpy(indices[::-1].copy()).to(device)
        self.etas_prev = by_timestep(etas_prev)
        self.sample_coefficients = by_timestep(coef_sample)
        self.original_coefficients = by_timestep(coef_original)
        self.posterior_stds = by_timestep(np.sqrt(posterior_variance(etas, etas_prev, self.config.kappa)))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        lr_sample: torch.Tensor | None = None,
    ) -> DeltaShiftSchedulerOutput | tuple:
        """
        Predict the sample at the previous timestep by reversing the shift (eq. 5/6).

        Args:
            model_output (`torch.Tensor`):
                The direct output of the model: the clean latent `x_0` or the residual `e_0 = y - x_0`, as the
                config's `prediction_type` says.
            timestep (`int` or `torch.Tensor`):
                The current 0-based timestep, one of `scheduler.timesteps`.
            sample (`torch.Tensor`):
                The current latents `x_t`.
            generator (`torch.Generator`, *optional*):
                A random number generator for the posterior noise when `kappa > 0`.
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`DeltaShiftSchedulerOutput`] or a `tuple`.
            lr_sample (`torch.Tensor`, *optional*):
                The latents `y` of the bicubic-upsampled LR images; required when `prediction_type="residual"`.

        Returns:
            [`DeltaShiftSchedulerOutput`] or `tuple`:
                If `return_dict` is `True`, a [`DeltaShiftSchedulerOutput`] is returned, otherwise a tuple whose first
                element is the previous sample and second the predicted `x_0`.
        """
        if self.timesteps is None:
            raise ValueError(
                "Number of inference steps is 'None', you need to run 'set_timesteps' after creating the scheduler"
            )
        t = _integer(timestep, "timestep")
        if not 0 <= t < self.config.num_train_timesteps or torch.isnan(self.etas_prev[t]):
            raise ValueError(f"Timestep {t} is not in the current schedule {self.timesteps.tolist()}.")

        # 1. predicted x_0 = f(x_t, LR, t), or y - f(x_t, LR, t) for a model of the residual e_0 = y - x_0
        if self.config.prediction_type == "residual":
            if lr_sample is None:
                raise ValueError("`lr_sample` (the latents y) is required by `step` when prediction_type='residual'.")
            pred_original_sample = lr_sample - model_output
        else:
            pred_original_sample = model_output

        # 2. posterior mean (eq. 5/6): x_{t-1} = (eta_{t-1} / eta_t) x_t + (alpha_t / eta_t) x_0
        coef_sample, coef_original = self.sample_coefficients[t].item(), self.original_coefficients[t].item()
        prev_sample = coef_sample * sample + coef_original * pred_original_sample

        # 3. ResShift only (kappa > 0): noise of variance kappa^2 * eta_{t-1} / eta_t * alpha_t
        std = self.posterior_stds[t].item()
        if std > 0:
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            prev_sample = prev_sample + std * noise

        if not return_dict:
            return (prev_sample, pred_original_sample)
        return DeltaShiftSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def __len__(self):
        return self.config.num_train_timesteps
