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
"""
The code a saved DeltaDiff pipeline carries, and which classes load it.

A saved folder loads with diffusers alone (`trust_remote_code=True`), from a local path or the Hub:

    model_index.json            "scheduler": ["scheduling_delta_shift", "DeltaShiftScheduler"], ...
    pipeline.py                 the pipeline module itself, with the modules it imports relatively:
    canvas.py, config_checks.py, encoding.py, image_utils.py, pipeline_code.py, pipeline_output.py,
    tiled_execution.py, tiling.py
    scheduler/scheduling_delta_shift.py, unet/unet_local_norm.py, vqvae/autoencoder_space_to_depth.py

diffusers finds a component's class in `<component>/<module>.py` when `model_index.json` names the bare module, and
copies the relative imports of `pipeline.py` along with it. With this package installed, `DeltaDiffPipeline
.from_pretrained` builds those components from the package's own classes instead (no code from the folder runs), and
it still reads older folders that name the package modules (`diffusers_deltadiff.scheduling_delta_shift`).

This module is copied into saved folders: it imports nothing from the package.
"""

import contextlib
import importlib
import inspect
import json
import os
import shutil

from diffusers.utils.dynamic_modules_utils import get_relative_import_files


PACKAGE = "diffusers_deltadiff"
DYNAMIC_MODULES = "diffusers_modules"  # where diffusers imports a folder's code
# the package modules whose classes a saved folder carries as code, each self-contained (no relative imports)
COMPONENT_MODULES = ("autoencoder_space_to_depth", "scheduling_delta_shift", "unet_local_norm")
MODEL_INDEX = "model_index.json"
PIPELINE_FILE = "pipeline.py"


def own_module(dotted: str) -> str | None:
    """
    `scheduling_delta_shift` for a module path naming one of this package's component modules: bare, as saved
    folders name it in `model_index.json` (`["scheduling_delta_shift", ...]`), in the package
    (`diffusers_deltadiff.scheduling_delta_shift`, older folders and the package's classes) or imported by diffusers
    from a folder (`diffusers_modules.local.scheduling_delta_shift`). `None` for anything else (`"diffusers"`).
    """
    if not isinstance(dotted, str):
        return None
    package, _, module = dotted.rpartition(".")
    return module if module in COMPONENT_MODULES and package.split(".")[0] in ("", PACKAGE, DYNAMIC_MODULES) else None


def component_entries(model_index: dict):
    """`(name, library, class_name)` of each component named in `model_index` (the `[library, class]` pairs)."""
    for name, entry in model_index.items():
        if not name.startswith("_") and isinstance(entry, (list, tuple)) and len(entry) == 2:
            yield name, entry[0], entry[1]


def package_class(module: str, class_name: str):
    """The installed package's class, or `None` when the package is not installed (diffusers alone)."""
    try:
        return getattr(importlib.import_module(f"{PACKAGE}.{module}"), class_name)
    except ImportError:
        return None


def with_package_modules(model_index: dict) -> dict:
    """
    `model_index` with each component this package defines named by the installed package's module
    (`["diffusers_deltadiff.scheduling_delta_shift", "DeltaShiftScheduler"]`), so that diffusers builds it from the
    package's class, not from the folder's copy. Unchanged when the package is not installed (diffusers alone).
    """
    model_index = dict(model_index)
    for name, library, class_name in component_entries(model_index):
        module = own_module(library)
        if module and package_class(module, class_name) is not None:
            model_index[name] = [f"{PACKAGE}.{module}", class_name]
    return model_index


def import_package_modules(model_index: dict):
    """
    Import the package modules that `model_index` names (`diffusers_deltadiff.unet_local_norm`: folders saved before
    0.2). diffusers builds a component from a module outside its own libraries only if the process has imported it
    already, and the package imports its modules on first use, not when it is imported. Nothing for other names, or
    without the package (diffusers alone).
    """
    for _, library, _ in component_entries(model_index):
        if own_module(library) and library.startswith(f"{PACKAGE}."):
            with contextlib.suppress(ImportError):
                importlib.import_module(library)


def code_files(cls) -> list[str]:
    """The source of `cls`'s module and of every module it imports relatively (recursively)."""
    source = inspect.getsourcefile(cls)
    return [source, *get_relative_import_files(source)]


def write_pipeline_code(pipeline, save_directory: str):
    """
    Make a saved folder load with diffusers alone: `pipeline.py` and its relative imports next to `model_index.json`,
    each component class of this package as `<component>/<module>.py`, named by its bare module in `model_index.json`.
    """
    pipeline_source, *imports = code_files(type(pipeline))
    shutil.copyfile(pipeline_source, os.path.join(save_directory, PIPELINE_FILE))
    for path in imports:
        shutil.copyfile(path, os.path.join(save_directory, os.path.basename(path)))

    index_path = os.path.join(save_directory, MODEL_INDEX)
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    index.pop("_name_or_path", None)  # where the pipeline was loaded from, on the machine that saved it
    for name, _, class_name in list(component_entries(index)):
        component = getattr(pipeline, name, None)
        component = getattr(component, "_orig_mod", component)  # a `torch.compile`d model: the model inside
        module = own_module(type(component).__module__) if component is not None else None
        if module is None:
            continue
        source, *relative = code_files(type(component))
        if relative:
            raise ValueError(f"{source}: a component module must be self-contained, but it imports {relative}")
        os.makedirs(os.path.join(save_directory, name), exist_ok=True)
        shutil.copyfile(source, os.path.join(save_directory, name, f"{module}.py"))
        index[name] = [module, class_name]
    with open(index_path, "w", encoding="utf-8") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")


class CarriesCode:
    """
    A mixin for a `DiffusionPipeline` of this package: saved folders carry its code (and load with diffusers alone);
    loaded with the package, the package's own classes are used.
    """

    @classmethod
    def load_config(cls, *args, **kwargs):
        """
        Read `model_index.json` like [`ConfigMixin.load_config`], with the components this package defines (the
        scheduler, a [`LocalUNet2DModel`], a [`SpaceToDepthAutoencoder`]) named by the installed package's modules.
        So `DeltaDiffPipeline.from_pretrained(folder)` builds them from the package's classes, not from the copies a
        saved folder carries: no code from the folder runs and `trust_remote_code` is not needed. Folders saved by
        older versions, which name the package modules already, load the same way. With diffusers alone
        (`DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder, trust_remote_code=True)`), the folder's
        copies are used.
        """
        loaded = super().load_config(*args, **kwargs)
        if isinstance(loaded, tuple):
            return (with_package_modules(loaded[0]), *loaded[1:])
        return with_package_modules(loaded)

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """
        [`ConfigMixin.extract_init_dict`], after importing the package modules the config names
        ([`import_package_modules`]): `DiffusionPipeline.from_pretrained(older_folder, custom_pipeline=...)` reads
        the config with diffusers' own `load_config`, then finds the components' modules only among those imported.
        """
        import_package_modules(config_dict)
        return super().extract_init_dict(config_dict, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs):
        """
        Save the pipeline like [`DiffusionPipeline.save_pretrained`], weights as safetensors only, with the code that
        makes the folder load with diffusers alone (see `save_config`):
        `DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder, trust_remote_code=True)`, from a local
        path or the Hub.
        """
        if not safe_serialization:
            raise ValueError("DeltaDiff pipelines are saved as safetensors only: drop `safe_serialization=False`.")
        super().save_pretrained(save_directory, safe_serialization=True, **kwargs)

    def save_config(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """
        Write `model_index.json` and, with it, the pipeline's code: `pipeline.py` and the modules it imports next to
        it, each component class of this package in its component folder. `save_pretrained` writes the config last,
        before any upload to the Hub, so the code goes wherever the weights go.
        """
        if push_to_hub:
            raise ValueError("Upload a DeltaDiff pipeline with `save_pretrained(..., push_to_hub=True)`.")
        super().save_config(save_directory, **kwargs)
        write_pipeline_code(self, str(save_directory))
