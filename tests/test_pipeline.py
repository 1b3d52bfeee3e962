import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import UNet2DModel

import diffusers_deltadiff
from conftest import random_image
from diffusers_deltadiff import DeltaDiffPipeline, DeltaDiffPipelineOutput, DeltaShiftScheduler
from diffusers_deltadiff.testing_utils import tiny_pipeline, tiny_unet, tiny_vqmodel


def make_pipeline(**scheduler_kwargs):
    pipe = tiny_pipeline(seed=0, **scheduler_kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline()


class TestComponents:
    def test_config(self, pipe):
        assert pipe.upscale_factor == 4
        assert pipe.vae_scale_factor == 4
        assert isinstance(pipe.scheduler, DeltaShiftScheduler)

    def test_unet_channel_mismatch_raises(self):
        torch.manual_seed(0)
        unet = UNet2DModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
        )
        with pytest.raises(ValueError, match="in_channels=3"):
            DeltaDiffPipeline(vqvae=tiny_vqmodel(), unet=unet, scheduler=DeltaShiftScheduler())

    def test_another_scheduler_is_refused(self, pipe):
        # before: a TypeError inside DDIMScheduler.set_timesteps on the first call, an AttributeError for None
        from diffusers import DDIMScheduler

        with pytest.raises(ValueError, match="`scheduler` must be a DeltaShiftScheduler, got DDIMScheduler"):
            DeltaDiffPipeline(vqvae=tiny_vqmodel(), unet=tiny_unet(), scheduler=DDIMScheduler())
        swapped = make_pipeline()
        for scheduler, name in ((DDIMScheduler(), "DDIMScheduler"), (None, "NoneType")):
            swapped.scheduler = scheduler
            with pytest.raises(ValueError, match=f"`scheduler` must be a DeltaShiftScheduler, got {name}"):
                swapped(random_image(8, 8))


class TestInference:
    def test_tiny_pipeline_slice(self, pipe):
        image = random_image(16, 16)
        out = pipe(image, output_type="np")
        assert isinstance(out, DeltaDiffPipelineOutput)
        assert out.images.shape == (1, 64, 64, 3)
        image_slice = out.images[0, -3:, -3:, -1]
        # obtained once from this code (tiny seeded components, 4 steps, torch CPU)
        expected_slice = np.array([0.3563, 0.4018, 0.3564, 0.4642, 0.4853, 0.4883, 0.4313, 0.3921, 0.4920])
        assert np.abs(image_slice.flatten() - expected_slice).max() < 1e-3

    def test_output_types(self, pipe):
        image = random_image(8, 12)
        pil = pipe(image).images
        assert isinstance(pil, list) and pil[0].size == (48, 32) and pil[0].mode == "RGB"
        np_out = pipe(image, output_type="np").images
        pt_out = pipe(image, output_type="pt").images
        assert pt_out.shape == (1, 3, 32, 48)
        np.testing.assert_allclose(pt_out.permute(0, 2, 3, 1).numpy(), np_out, atol=1e-6)
        latent = pipe(image, output_type="latent").images
        assert latent.shape == (1, 3, 8, 12)
        images, intermediates = pipe(image, output_type="np", return_dict=False)
        np.testing.assert_array_equal(images, np_out)
        assert intermediates is None

    @pytest.mark.parametrize("size", [(17, 23), (23, 17), (1, 1), (5, 9), (33, 32)])
    def test_output_size_is_exactly_scale_times_input(self, pipe, size):
        height, width = size
        out = pipe(random_image(height, width), output_type="np").images
        assert out.shape == (1, 4 * height, 4 * width, 3)
        assert np.isfinite(out).all()

    def test_odd_size_from_issue(self, pipe):
        # a 17x23 (width x height) image becomes 68x92
        image = random_image(23, 17)
        assert pipe(image).images[0].size == (68, 92)

    def test_batch_equals_single_runs(self, pipe):
        a, b = random_image(12, 20, seed=1), random_image(12, 20, seed=2)
        batch = pipe([a, b], output_type="np").images
        single_a = pipe(a, output_type="np").images[0]
        single_b = pipe(b, output_type="np").images[0]
        assert batch.shape == (2, 48, 80, 3)
        np.testing.assert_allclose(batch[0], single_a, atol=1e-5)
        np.testing.assert_allclose(batch[1], single_b, atol=1e-5)

    def test_mixed_sizes_each_handled(self, pipe):
        a, b, c = random_image(8, 8, seed=1), random_image(10, 6, seed=2), random_image(8, 8, seed=3)
        out = pipe([a, b, c], output_type="np").images
        assert [o.shape for o in out] == [(32, 32, 3), (40, 24, 3), (32, 32, 3)]
        np.testing.assert_allclose(out[1], pipe(b, output_type="np").images[0], atol=1e-5)
        np.testing.assert_allclose(out[2], pipe(c, output_type="np").images[0], atol=1e-5)

    def test_input_formats_agree(self, pipe):
        image = random_image(10, 14, seed=4)
        array = np.asarray(image)
        reference = pipe(image, output_type="np").images
        from_uint8 = pipe(array, output_type="np").images
        from_float = pipe(array.astype(np.float32) / 255.0, output_type="np").images
        from_tensor = pipe(torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0, output_type="np").images
        from_batch = pipe(array[None].astype(np.float32) / 255.0, output_type="np").images
        for other in (from_uint8, from_float, from_tensor, from_batch):
            np.testing.assert_allclose(other, reference, atol=1e-5)

    def test_grayscale_and_rgba(self, pipe):
        gray = random_image(10, 14, seed=5, mode="L")
        out_gray = pipe(gray, output_type="np").images
        out_rgb = pipe(gray.convert("RGB"), output_type="np").images
        assert out_gray.shape == (1, 40, 56, 3)
        np.testing.assert_allclose(out_gray, out_rgb, atol=1e-6)

        rgba = random_image(10, 14, seed=6, mode="RGBA")
        out_rgba = pipe(rgba, output_type="np").images
        np.testing.assert_allclose(out_rgba, pipe(rgba.convert("RGB"), output_type="np").images, atol=1e-6)
        # 16-bit grayscale keeps its depth
        gray16 = PIL.Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
        assert gray16.mode.startswith("I;16")
        np.testing.assert_allclose(pipe(gray16, output_type="np").images, out_gray, atol=1e-5)

    def test_bad_inputs(self, pipe):
        with pytest.raises(TypeError, match="Unsupported image type"):
            pipe("not an image")
        with pytest.raises(ValueError, match="channels"):
            pipe(torch.rand(5, 8, 8))
        with pytest.raises(ValueError, match="output_type"):
            pipe(random_image(8, 8), output_type="jpg")
        with pytest.raises(ValueError, match="generators"):
            pipe([random_image(8, 8)] * 2, generator=[torch.Generator()])

    def test_deltadiff_is_deterministic(self, pipe):
        image = random_image(12, 12, seed=7)
        a = pipe(image, output_type="pt").images
        b = pipe(image, output_type="pt").images
        c = pipe(image, output_type="pt", generator=torch.Generator().manual_seed(42)).images
        assert torch.equal(a, b)
        assert torch.equal(a, c)

    def test_resshift_generator_reproducibility(self):
        pipe = make_pipeline(kappa=2.0)
        image = random_image(12, 12, seed=8)
        a = pipe(image, output_type="pt", generator=torch.Generator().manual_seed(0)).images
        b = pipe(image, output_type="pt", generator=torch.Generator().manual_seed(0)).images
        c = pipe(image, output_type="pt", generator=torch.Generator().manual_seed(1)).images
        assert torch.equal(a, b)
        assert not torch.equal(a, c)

    def test_fewer_steps(self, pipe):
        image = random_image(8, 8)
        calls = []
        pipe(image, num_inference_steps=2, callback_on_step_end=lambda p, i, t, kw: calls.append(int(t)) or {})
        assert calls == [3, 0]
        with pytest.raises(ValueError, match="num_train_timesteps"):
            pipe(image, num_inference_steps=5)

    def test_the_model_s_default_step_count(self, pipe):
        # a model trained through a 1-step chain runs 1 step by default: the same output as asking for 1 step
        one = make_pipeline(default_inference_steps=1)
        image = random_image(8, 8)
        calls = []
        out = one(image, output_type="np", callback_on_step_end=lambda p, i, t, kw: calls.append(int(t)) or {})
        assert calls == [3]
        np.testing.assert_array_equal(out.images, pipe(image, output_type="np", num_inference_steps=1).images)
        assert not np.array_equal(out.images, pipe(image, output_type="np").images)
        assert (
            len(one(image, output_type="np", num_inference_steps=4, return_intermediates=True).intermediate_images)
            == 4
        )
        assert one.scheduler.config.default_inference_steps == 1

    def test_intermediates(self, pipe):
        image = random_image(8, 10)
        out = pipe(image, output_type="np", return_intermediates=True)
        assert len(out.intermediate_images) == 4
        assert all(step.shape == (1, 32, 40, 3) for step in out.intermediate_images)
        np.testing.assert_array_equal(out.intermediate_images[-1], out.images)
        pil = pipe(image, return_intermediates=True).intermediate_images
        assert len(pil) == 4 and pil[0][0].size == (40, 32)

    def test_callback_on_step_end_can_replace_latents(self, pipe):
        image = random_image(8, 8)
        seen = []

        def callback(pipeline, i, t, callback_kwargs):
            seen.append(sorted(callback_kwargs))
            return {"latents": torch.zeros_like(callback_kwargs["latents"])}

        out = pipe(
            image,
            output_type="latent",
            callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=["latents", "lr_latents"],
        )
        assert seen == [["latents", "lr_latents"]] * 4
        assert torch.equal(out.images, torch.zeros_like(out.images))
        with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
            pipe(image, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["noise"])


class TestUpscaleFactor:
    def test_x2_on_f4_autoencoder(self):
        pipe = DeltaDiffPipeline(
            vqvae=tiny_vqmodel(), unet=tiny_unet(), scheduler=DeltaShiftScheduler(), upscale_factor=2
        )
        pipe.set_progress_bar_config(disable=True)
        assert pipe.upscale_factor == 2
        out = pipe(random_image(13, 9), output_type="np").images
        assert out.shape == (1, 26, 18, 3)


class TestSaveLoad:
    def test_round_trip(self, pipe, tmp_path):
        image = random_image(12, 16, seed=9)
        expected = pipe(image, output_type="np").images
        pipe.save_pretrained(tmp_path)
        files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
        assert "pipeline.py" in files
        assert not any(f.endswith(".bin") for f in files)
        assert "unet/diffusion_pytorch_model.safetensors" in files
        assert "vqvae/diffusion_pytorch_model.safetensors" in files
        index = json.loads((tmp_path / "model_index.json").read_text())
        assert index["scheduler"] == ["scheduling_delta_shift", "DeltaShiftScheduler"]
        assert index["upscale_factor"] == 4

        loaded = DeltaDiffPipeline.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert isinstance(loaded.scheduler, DeltaShiftScheduler)
        assert not loaded.unet.training and not pipe.unet.training
        # same weights, but not always the same float kernels (thread count, memory layout of the loaded tensors):
        # equal to float precision, and bit-identical run to run for one loaded pipeline
        out = loaded(image, output_type="np").images
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(loaded(image, output_type="np").images, out)

    def test_refuses_pickle_weights(self, pipe, tmp_path):
        with pytest.raises(ValueError, match="safetensors"):
            pipe.save_pretrained(tmp_path, safe_serialization=False)

    def test_scheduler_swap_keeps_weights(self, pipe, tmp_path):
        pipe.save_pretrained(tmp_path)
        scheduler = DeltaShiftScheduler.from_pretrained(tmp_path, subfolder="scheduler", kappa=2.0)
        resshift = DeltaDiffPipeline.from_pretrained(tmp_path, scheduler=scheduler)
        assert resshift.scheduler.config.kappa == 2.0
        for name in ("unet", "vqvae"):
            saved, loaded = getattr(pipe, name).state_dict(), getattr(resshift, name).state_dict()
            assert saved.keys() == loaded.keys()
            for key in saved:
                assert torch.equal(saved[key], loaded[key]), f"{name}.{key}"

    @pytest.mark.parametrize("custom_pipeline", ["package_file", "saved_dir", "loader"])
    def test_loading_in_a_fresh_process(self, pipe, tmp_path, custom_pipeline):
        """diffusers resolves components and custom pipelines by import: load where nothing was imported yet."""
        model_dir = tmp_path / "model"
        pipe.save_pretrained(model_dir)
        image = random_image(12, 16, seed=10)
        np.save(tmp_path / "lr.npy", np.asarray(image))
        # every way of loading gives the same pipeline: compare with the saved folder loaded here
        loaded = DeltaDiffPipeline.from_pretrained(model_dir)
        loaded.set_progress_bar_config(disable=True)
        np.save(tmp_path / "expected.npy", loaded(image, output_type="np").images)
        source = {
            "package_file": repr(diffusers_deltadiff.custom_pipeline_path()),
            "saved_dir": repr(str(model_dir)),
        }.get(custom_pipeline)
        if source is None:
            load = (
                f"from diffusers_deltadiff import DeltaDiffPipeline as P; pipe = P.from_pretrained({str(model_dir)!r})"
            )
        else:
            load = (
                "from diffusers import DiffusionPipeline; "
                f"pipe = DiffusionPipeline.from_pretrained({str(model_dir)!r}, custom_pipeline={source}, "
                "trust_remote_code=True)"
            )
        script = textwrap.dedent(
            f"""
            import numpy as np
            {load}
            assert type(pipe).__name__ == "DeltaDiffPipeline", type(pipe)
            assert type(pipe.scheduler).__name__ == "DeltaShiftScheduler", type(pipe.scheduler)
            pipe.set_progress_bar_config(disable=True)
            out = pipe(np.load({str(tmp_path / "lr.npy")!r}), output_type="np").images
            np.testing.assert_array_equal(out, np.load({str(tmp_path / "expected.npy")!r}))
            print("LOADED-OK")
            """
        )
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "LOADED-OK" in result.stdout


def test_custom_pipeline_file_is_packaged():
    path = Path(diffusers_deltadiff.custom_pipeline_path())
    assert path.name == "pipeline.py" and path.is_file()


def test_concurrent_calls_with_different_step_counts_match_sequential_ones():
    """One pipeline, two threads (1 step and 4 steps), 6 calls each: every result equals the sequential one."""
    import threading
    import time

    pipe = make_pipeline()
    image = np.asarray(random_image(8, 8, seed=3))
    reference = {steps: pipe(image, num_inference_steps=steps, output_type="np").images for steps in (1, 4)}
    assert np.abs(reference[1] - reference[4]).max() > 1e-3  # the two step counts do differ
    # every UNet pass sleeps a little, so the two threads' chains interleave
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: time.sleep(0.002))
    results, errors = {1: [], 4: []}, []
    start = threading.Barrier(2)

    seen_steps = {1: set(), 4: set()}

    def work(steps):
        def callback(pipeline, i, t, kwargs):
            seen_steps[steps].add(pipeline.num_timesteps)  # what a progress callback reads
            return {}

        start.wait()
        for _ in range(6):
            try:
                out = pipe(image, num_inference_steps=steps, output_type="np", callback_on_step_end=callback)
                results[steps].append(out.images)
            except Exception as err:  # noqa: BLE001 - collected and reported below
                errors.append(repr(err))

    threads = [threading.Thread(target=work, args=(steps,)) for steps in (1, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hook.remove()
    assert not errors, errors
    assert seen_steps == {1: {1}, 4: {4}}
    for steps in (1, 4):
        assert len(results[steps]) == 6
        for result in results[steps]:
            np.testing.assert_array_equal(result, reference[steps])


def test_an_interrupt_stops_only_its_own_call():
    """A callback that sets `pipe._interrupt` (diffusers' idiom) stops its call, not another thread's."""
    import threading
    import time

    pipe = make_pipeline()
    image = np.asarray(random_image(8, 8, seed=4))
    reference = pipe(image, num_inference_steps=4, output_type="np").images
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: time.sleep(0.005))
    results, start = {}, threading.Barrier(2)

    def stop_at_once(pipeline, i, t, kwargs):
        pipeline._interrupt = True
        return {}

    def work(name, callback):
        start.wait()
        results[name] = [
            pipe(image, num_inference_steps=4, output_type="np", callback_on_step_end=callback).images
            for _ in range(3)
        ]

    threads = [threading.Thread(target=work, args=args) for args in (("stopped", stop_at_once), ("free", None))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hook.remove()
    for result in results["free"]:
        np.testing.assert_array_equal(result, reference)
    assert all(np.abs(result - reference).max() > 1e-3 for result in results["stopped"])
    assert not pipe.interrupt  # outside a call


def test_the_reverse_chain_reads_in_one_method():
    """
    `__call__` runs `_upscale_batch`, whose loop over the timesteps holds the UNet call and `scheduler.step`
    themselves: the chain reads like eq. 5/6 in `pipeline_deltadiff.py`, not in a closure in another file.
    """
    import ast
    import inspect
    import textwrap

    def method(name):
        return ast.parse(textwrap.dedent(inspect.getsource(getattr(DeltaDiffPipeline, name))))

    def calls(tree):
        return {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}

    assert "call._upscale_batch" in calls(method("__call__"))
    loops = [node for node in ast.walk(method("_upscale_batch")) if isinstance(node, ast.For)]
    (timestep_loop,) = [loop for loop in loops if ast.unparse(loop.iter) == "enumerate(timesteps)"]
    assert {"self.unet", "self.scheduler.step", "self.scheduler.scale_model_input"} <= calls(timestep_loop)
    assert {"self.encode_lr", "self.decode_latents"} <= calls(method("_upscale_batch"))


def test_no_class_has_more_than_two_bases():
    """Pipelines and helpers are composed, not stacked from mixins that call back into their host."""
    import ast

    package = Path(diffusers_deltadiff.__file__).parent
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                assert len(node.bases) <= 2, f"{path.name}: {node.name} has {len(node.bases)} bases"
