import math
import tempfile

import numpy as np
import pytest
import torch

from diffusers_deltadiff import DeltaShiftScheduler, DeltaShiftSchedulerOutput


def paper_etas(T, eta_1, eta_T, p):
    """Eq. 7 written out independently, one timestep at a time."""
    if T == 1:
        return [eta_T]
    b0 = math.exp(math.log(eta_T / eta_1) / (2 * (T - 1)))
    etas = []
    for t in range(1, T + 1):
        beta_t = ((t - 1) / (T - 1)) ** p * (T - 1)
        etas.append((math.sqrt(eta_1) * b0**beta_t) ** 2)
    return etas


def resshift_sqrt_etas(steps, min_noise_level, etas_end, kappa, power):
    """ResShift's `get_named_eta_schedule("exponential", ...)`, re-derived from its definition."""
    etas_start = min(min_noise_level / kappa, min_noise_level)
    increaser = math.exp(1 / (steps - 1) * math.log(etas_end / etas_start))
    power_timestep = np.linspace(0, 1, steps, endpoint=True) ** power * (steps - 1)
    return np.power(np.full(steps, increaser), power_timestep) * etas_start


class OracleModel:
    """A 'UNet' that returns the true clean latent x_0."""

    def __init__(self, x0):
        self.x0 = x0

    def __call__(self, sample, t):
        return self.x0.clone()


def latents(seed, shape=(2, 3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


class TestSchedule:
    @pytest.mark.parametrize("T,p", [(4, 0.3), (15, 0.3), (4, 1.0), (2, 0.5)])
    def test_etas_match_eq7(self, T, p):
        scheduler = DeltaShiftScheduler(num_train_timesteps=T, eta_start=0.01, eta_end=0.99, power=p)
        expected = paper_etas(T, 0.01, 0.99, p)
        assert scheduler.etas.dtype == torch.float64
        assert scheduler.etas.shape == (T,)
        np.testing.assert_allclose(scheduler.etas.numpy(), expected, rtol=1e-12)
        assert scheduler.etas[0].item() == pytest.approx(0.01, rel=1e-12)
        assert scheduler.etas[-1].item() == pytest.approx(0.99, rel=1e-12)

    def test_known_values_paper_defaults(self):
        # eq. 7 with T=4, p=0.3, eta_1=0.01, eta_T=0.99, checked by hand once (beta_2 = 3 (1/3)^0.3, b0 = 99^(1/6))
        scheduler = DeltaShiftScheduler()
        np.testing.assert_allclose(scheduler.etas.numpy(), [0.01, 0.27246261, 0.58488447, 0.99], rtol=0, atol=1e-7)
        assert torch.all(scheduler.etas[1:] > scheduler.etas[:-1])

    def test_single_timestep(self):
        scheduler = DeltaShiftScheduler(num_train_timesteps=1)
        assert scheduler.etas.tolist() == [0.99]

    def test_from_resshift_config_reproduces_resshift(self):
        scheduler = DeltaShiftScheduler.from_resshift_config(
            min_noise_level=0.2, etas_end=0.99, kappa=2.0, steps=4, power=0.3
        )
        sqrt_etas = resshift_sqrt_etas(4, 0.2, 0.99, 2.0, 0.3)
        np.testing.assert_allclose(scheduler.etas.numpy(), sqrt_etas**2, rtol=1e-12)
        assert scheduler.config.kappa == 2.0
        # ResShift's realsr/bicsr configs with 15 steps too
        scheduler = DeltaShiftScheduler.from_resshift_config(
            min_noise_level=0.04, etas_end=0.99, kappa=1.0, steps=15, power=0.3
        )
        np.testing.assert_allclose(
            scheduler.etas.numpy(), resshift_sqrt_etas(15, 0.04, 0.99, 1.0, 0.3) ** 2, rtol=1e-12
        )

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"num_train_timesteps": 0},
            {"eta_start": 0.0},
            {"eta_start": 0.5, "eta_end": 0.4},
            {"eta_end": 1.5},
            {"kappa": -1.0},
            {"prediction_type": "epsilon"},
            {"default_inference_steps": 0},
            {"default_inference_steps": 5},
            {"default_inference_steps": 2.0},
            {"default_inference_steps": True},
        ],
    )
    def test_invalid_config(self, kwargs):
        with pytest.raises(ValueError):
            DeltaShiftScheduler(**kwargs)


class TestTimesteps:
    def test_full_chain(self):
        scheduler = DeltaShiftScheduler()
        scheduler.set_timesteps(4)
        assert scheduler.timesteps.tolist() == [3, 2, 1, 0]

    def test_default_is_trained_steps(self):
        scheduler = DeltaShiftScheduler(num_train_timesteps=6)
        scheduler.set_timesteps()
        assert scheduler.timesteps.tolist() == [5, 4, 3, 2, 1, 0]

    @pytest.mark.parametrize("n,expected", [(1, [3]), (2, [3, 0]), (4, [3, 2, 1, 0])])
    def test_default_inference_steps(self, n, expected):
        # a model trained through an n-step chain runs n steps unless told otherwise; explicit counts still win
        scheduler = DeltaShiftScheduler(default_inference_steps=n)
        scheduler.set_timesteps()
        assert scheduler.timesteps.tolist() == expected
        assert scheduler.num_inference_steps == n
        scheduler.set_timesteps(4)
        assert scheduler.timesteps.tolist() == [3, 2, 1, 0]
        with tempfile.TemporaryDirectory() as tmp:
            scheduler.save_config(tmp)
            loaded = DeltaShiftScheduler.from_pretrained(tmp)
        loaded.set_timesteps()
        assert loaded.timesteps.tolist() == expected

    @pytest.mark.parametrize("n,expected", [(2, [3, 0]), (1, [3]), (3, [3, 2, 0])])
    def test_respaced(self, n, expected):
        scheduler = DeltaShiftScheduler()
        scheduler.set_timesteps(n)
        assert scheduler.timesteps.tolist() == expected

    def test_more_steps_than_trained_raises(self):
        scheduler = DeltaShiftScheduler()
        with pytest.raises(ValueError, match="num_train_timesteps"):
            scheduler.set_timesteps(5)
        with pytest.raises(ValueError):
            scheduler.set_timesteps(0)

    def test_step_before_set_timesteps_raises(self):
        scheduler = DeltaShiftScheduler()
        x = latents(0)
        with pytest.raises(ValueError, match="set_timesteps"):
            scheduler.step(x, 3, x)

    def test_step_with_timestep_outside_schedule_raises(self):
        scheduler = DeltaShiftScheduler()
        scheduler.set_timesteps(2)
        x = latents(0)
        with pytest.raises(ValueError, match="not in the current schedule"):
            scheduler.step(x, 1, x)

    def test_respaced_coefficients_are_recomputed(self):
        # with 2 of 4 steps, the step from t=3 goes straight to eta_1 (timestep 0), not to eta_3
        scheduler = DeltaShiftScheduler()
        scheduler.set_timesteps(2)
        x0, y = latents(0), latents(1)
        x_t = scheduler.shift(x0, y, 3)
        prev = scheduler.step(x0, 3, x_t).prev_sample
        torch.testing.assert_close(prev, scheduler.shift(x0, y, 0), rtol=0, atol=1e-12)


class TestChain:
    @pytest.mark.parametrize("steps", [4, 2, 1])
    def test_oracle_lands_on_x0(self, steps):
        """kappa = 0, a model returning the true x_0: the chain from y ends on x_0."""
        scheduler = DeltaShiftScheduler()
        x0, y = latents(0), latents(1)
        model = OracleModel(x0)
        scheduler.set_timesteps(steps)
        sample = scheduler.init_latents(y)
        torch.testing.assert_close(sample, y, rtol=0, atol=0)
        for t in scheduler.timesteps:
            sample = scheduler.step(model(sample, t), t, sample).prev_sample
        max_error = (sample - x0).abs().max().item()
        print(f"oracle max error, {steps} steps: {max_error:.3e}")
        assert max_error < 1e-6

    @pytest.mark.parametrize("t", [3, 2, 1])
    def test_eq4_then_eq5_gives_eq4(self, t):
        scheduler = DeltaShiftScheduler()
        scheduler.set_timesteps(4)
        x0, y = latents(2), latents(3)
        x_t = scheduler.shift(x0, y, t)
        # eq. 4 by hand
        eta = scheduler.etas
        torch.testing.assert_close(x_t, x0 + eta[t] * (y - x0), rtol=0, atol=1e-12)
        prev = scheduler.step(x0, t, x_t).prev_sample
        torch.testing.assert_close(prev, x0 + eta[t - 1] * (y - x0), rtol=0, atol=1e-12)

    def test_shift_per_sample_timesteps(self):
        scheduler = DeltaShiftScheduler()
        x0, y = latents(4), latents(5)
        x_t = scheduler.shift(x0, y, torch.tensor([0, 3]))
        torch.testing.assert_close(x_t[0], scheduler.shift(x0, y, 0)[0])
        torch.testing.assert_close(x_t[1], scheduler.shift(x0, y, 3)[1])

    def test_deterministic_with_or_without_generator(self):
        scheduler = DeltaShiftScheduler()
        scheduler.set_timesteps(4)
        x, pred = latents(6), latents(7)
        a = scheduler.step(pred, 2, x).prev_sample
        b = scheduler.step(pred, 2, x, generator=torch.Generator().manual_seed(123)).prev_sample
        assert torch.equal(a, b)
        assert torch.equal(scheduler.scale_model_input(x, 2), x)

    @pytest.mark.parametrize("kappa", [0.0, 0.5, 2.0])
    def test_is_deterministic_says_whether_the_generator_matters(self, kappa):
        """The property agrees with what the chain does: two generators give one chain exactly when it is True."""
        scheduler = DeltaShiftScheduler(kappa=kappa)
        scheduler.set_timesteps(4)
        x, pred = latents(6), latents(7)
        runs = []
        for seed in (1, 2):
            generator = torch.Generator().manual_seed(seed)
            start = scheduler.init_latents(x, generator=generator)
            runs.append(scheduler.step(pred, 2, start, generator=generator).prev_sample)
        assert scheduler.is_deterministic == torch.equal(*runs)
        assert scheduler.is_deterministic == (kappa == 0)

    def test_float32_sample_keeps_dtype(self):
        scheduler = DeltaShiftScheduler(kappa=2.0)
        scheduler.set_timesteps(4)
        x = latents(8).float()
        assert scheduler.step(x, 3, x, generator=torch.Generator().manual_seed(0)).prev_sample.dtype == torch.float32
        assert scheduler.shift(x, x, 1, noise=x).dtype == torch.float32
        assert scheduler.scale_model_input(x, 1).dtype == torch.float32


class TestResShift:
    """kappa = 2 against ResShift's formulas, re-derived here from its definitions."""

    def setup_method(self):
        self.scheduler = DeltaShiftScheduler.from_resshift_config(min_noise_level=0.2, etas_end=0.99, kappa=2.0)
        self.etas = resshift_sqrt_etas(4, 0.2, 0.99, 2.0, 0.3) ** 2
        self.etas_prev = np.append(0.0, self.etas[:-1])
        self.alpha = self.etas - self.etas_prev

    @pytest.mark.parametrize("t", [3, 2, 1, 0])
    def test_posterior_mean_and_variance(self, t):
        self.scheduler.set_timesteps(4)
        x_t, x0 = latents(10), latents(11)
        mean = self.etas_prev[t] / self.etas[t] * x_t + self.alpha[t] / self.etas[t] * x0
        variance = 2.0**2 * self.etas_prev[t] / self.etas[t] * self.alpha[t]

        out = self.scheduler.step(x0, t, x_t, generator=torch.Generator().manual_seed(7))
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7), dtype=x_t.dtype)
        torch.testing.assert_close(out.prev_sample, mean + math.sqrt(variance) * noise, rtol=0, atol=1e-10)
        if t == 0:
            torch.testing.assert_close(out.prev_sample, x0, rtol=0, atol=1e-12)
        # the empirical variance of many draws around the mean
        draws = torch.stack(
            [
                self.scheduler.step(x0, t, x_t, generator=torch.Generator().manual_seed(s)).prev_sample - mean
                for s in range(200)
            ]
        )
        assert draws.var().item() == pytest.approx(variance, rel=0.05, abs=1e-12)

    def test_forward_process_and_scaling(self):
        x0, y, noise = latents(12), latents(13), latents(14)
        t = 2
        expected = x0 + self.etas[t] * (y - x0) + 2.0 * math.sqrt(self.etas[t]) * noise
        torch.testing.assert_close(self.scheduler.shift(x0, y, t, noise=noise), expected, rtol=0, atol=1e-12)
        with pytest.raises(ValueError, match="noise"):
            self.scheduler.shift(x0, y, t)
        scaled = self.scheduler.scale_model_input(x0, t)
        torch.testing.assert_close(scaled, x0 / math.sqrt(4.0 * self.etas[t] + 1), rtol=0, atol=1e-12)

    def test_init_latents(self):
        y = latents(15)
        x_T = self.scheduler.init_latents(y, generator=torch.Generator().manual_seed(3))
        noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
        torch.testing.assert_close(x_T, y + 2.0 * math.sqrt(self.etas[-1]) * noise, rtol=0, atol=1e-12)

    def test_generator_reproducibility(self):
        self.scheduler.set_timesteps(4)
        x = latents(16)

        def run(seed):
            g = torch.Generator().manual_seed(seed)
            sample = self.scheduler.init_latents(x, generator=g)
            for t in self.scheduler.timesteps:
                sample = self.scheduler.step(x, t, sample, generator=g).prev_sample
            return sample

        # the last step lands on the prediction; compare the chain one step before the end
        self.scheduler.set_timesteps(4)
        g1, g2, g3 = (torch.Generator().manual_seed(s) for s in (0, 0, 1))
        a = self.scheduler.step(x, 3, x, generator=g1).prev_sample
        b = self.scheduler.step(x, 3, x, generator=g2).prev_sample
        c = self.scheduler.step(x, 3, x, generator=g3).prev_sample
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)
        assert torch.equal(run(0), run(0))


class TestConfig:
    def test_save_load(self):
        scheduler = DeltaShiftScheduler(num_train_timesteps=6, eta_start=0.02, eta_end=0.95, power=0.5, kappa=1.5)
        with tempfile.TemporaryDirectory() as tmp:
            scheduler.save_config(tmp)
            loaded = DeltaShiftScheduler.from_pretrained(tmp)
        public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
        assert public(loaded.config) == public(scheduler.config)
        assert loaded.config.kappa == 1.5
        assert torch.equal(loaded.etas, scheduler.etas)

    def test_from_config_override(self):
        scheduler = DeltaShiftScheduler(kappa=2.0)
        other = DeltaShiftScheduler.from_config(scheduler.config, kappa=0.0)
        assert other.config.kappa == 0.0
        assert torch.equal(other.etas, scheduler.etas)

    def test_tuple_vs_dataclass(self):
        scheduler = DeltaShiftScheduler()
        scheduler.set_timesteps(4)
        x, pred = latents(20), latents(21)
        out = scheduler.step(pred, 3, x)
        assert isinstance(out, DeltaShiftSchedulerOutput)
        prev, pred_x0 = scheduler.step(pred, 3, x, return_dict=False)
        assert torch.equal(out.prev_sample, prev)
        assert torch.equal(out.pred_original_sample, pred_x0)
        assert torch.equal(pred_x0, pred)


class ResidualOracleModel:
    """A 'UNet' that returns the true residual e_0 = y - x_0."""

    def __init__(self, x0, y):
        self.residual = y - x0

    def __call__(self, sample, t):
        return self.residual.clone()


class TestResidualPrediction:
    @pytest.mark.parametrize("steps", [4, 2, 1])
    def test_oracle_residual_lands_on_x0(self, steps):
        """kappa = 0, a model returning the true residual y - x_0: the chain from y ends on x_0 (float64)."""
        scheduler = DeltaShiftScheduler(prediction_type="residual")
        x0, y = latents(10), latents(11)
        model = ResidualOracleModel(x0, y)
        scheduler.set_timesteps(steps)
        sample = scheduler.init_latents(y)
        for t in scheduler.timesteps:
            sample = scheduler.step(model(sample, t), t, sample, lr_sample=y).prev_sample
        max_error = (sample - x0).abs().max().item()
        print(f"residual oracle max error, {steps} steps: {max_error:.3e}")
        assert max_error < 1e-12

    @pytest.mark.parametrize("t", [3, 2, 1, 0])
    def test_residual_equals_sample_prediction_of_y_minus_residual(self, t):
        # eq. 5/6 written by hand with x_0 = y - e: for kappa = 0 and kappa = 2 (posterior mean, same noise)
        for kappa in (0.0, 2.0):
            sample_sched = DeltaShiftScheduler(kappa=kappa)
            residual_sched = DeltaShiftScheduler(kappa=kappa, prediction_type="residual")
            for s in (sample_sched, residual_sched):
                s.set_timesteps(4)
            x_t, y, e = latents(12), latents(13), latents(14)
            a = sample_sched.step(y - e, t, x_t, generator=torch.Generator().manual_seed(0))
            b = residual_sched.step(e, t, x_t, generator=torch.Generator().manual_seed(0), lr_sample=y)
            torch.testing.assert_close(b.pred_original_sample, y - e, rtol=0, atol=0)
            torch.testing.assert_close(b.prev_sample, a.prev_sample, rtol=0, atol=1e-12)
            etas = paper_etas(4, 0.01, 0.99, 0.3)
            eta_t, eta_prev = etas[t], (etas[t - 1] if t > 0 else 0.0)
            mean = eta_prev / eta_t * x_t + (eta_t - eta_prev) / eta_t * (y - e)
            if kappa == 0:
                torch.testing.assert_close(b.prev_sample, mean, rtol=0, atol=1e-12)

    def test_zero_residual_keeps_y_on_every_step(self):
        scheduler = DeltaShiftScheduler(prediction_type="residual")
        scheduler.set_timesteps(4)
        y = latents(15)
        sample = scheduler.init_latents(y)
        for t in scheduler.timesteps:
            sample = scheduler.step(torch.zeros_like(y), t, sample, lr_sample=y).prev_sample
            torch.testing.assert_close(sample, y, rtol=0, atol=1e-15)

    def test_residual_needs_lr_sample(self):
        scheduler = DeltaShiftScheduler(prediction_type="residual")
        scheduler.set_timesteps(4)
        x = latents(16)
        with pytest.raises(ValueError, match="lr_sample"):
            scheduler.step(x, 3, x)

    def test_unknown_prediction_type(self):
        with pytest.raises(ValueError, match="prediction_type"):
            DeltaShiftScheduler(prediction_type="epsilon")


class TestOddArguments:
    """Step counts and timesteps that are not integers of the schedule: a `ValueError` naming the argument."""

    @pytest.mark.parametrize("steps", [2.5, 2.0, np.float64(3.0), True, "2"])
    def test_set_timesteps_needs_an_integer(self, steps):
        # before: numpy's `TypeError: 'float' object cannot be interpreted as an integer`, and True ran 1 step
        with pytest.raises(ValueError, match="`num_inference_steps` must be one integer"):
            DeltaShiftScheduler().set_timesteps(steps)

    @pytest.mark.parametrize("steps", [np.int64(2), torch.tensor(2)])
    def test_set_timesteps_takes_integer_scalars(self, steps):
        scheduler = DeltaShiftScheduler()
        scheduler.set_timesteps(steps)
        assert scheduler.timesteps.tolist() == [3, 0]

    @pytest.mark.parametrize("timestep", [2.7, torch.tensor(1.9), None, "3", torch.tensor([3, 2]), True])
    def test_step_needs_one_integer_timestep(self, timestep):
        # before: 2.7 and tensor(1.9) were truncated to a timestep of the schedule and stepped silently
        scheduler = DeltaShiftScheduler()
        scheduler.set_timesteps(4)
        x = latents(0)
        with pytest.raises(ValueError, match="`timestep` must be one integer"):
            scheduler.step(x, timestep, x)

    @pytest.mark.parametrize("timestep", [np.int64(3), torch.tensor(3), torch.tensor([3])])
    def test_step_takes_integer_scalars(self, timestep):
        scheduler = DeltaShiftScheduler()
        scheduler.set_timesteps(4)
        x0, y = latents(0), latents(1)
        expected = scheduler.shift(x0, y, 2)  # eq. 4 at t - 1, reached by one exact step from eq. 4 at t
        torch.testing.assert_close(scheduler.step(x0, timestep, scheduler.shift(x0, y, 3)).prev_sample, expected)

    @pytest.mark.parametrize("timesteps", [4, -1, 1.5, torch.tensor([0.0, 1.0]), torch.tensor([-1, 2])])
    def test_shift_needs_timesteps_of_the_trained_schedule(self, timesteps):
        # before: -1 silently shifted by eta_T (negative indexing), 1.5 by eta_2 (truncation), 4 an IndexError
        x = latents(0)
        with pytest.raises(ValueError, match=r"`timesteps` must be integers from 0 to 3"):
            DeltaShiftScheduler().shift(x, x, timesteps)
