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
"""What [`DeltaDiffPipeline`] returns."""

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class DeltaDiffPipelineOutput(BaseOutput):
    """
    Output class for the DeltaDiff pipeline.

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The upscaled images, `upscale_factor` times the size of each input. A NumPy array `(B, H, W, 3)` or a
            tensor `(B, 3, H, W)` when all inputs have one size, otherwise a list with one entry per input.
        intermediate_images (`list`, *optional*):
            With `return_intermediates=True`: for every reverse step, the decoded `x_{t-1}` of every input, in the
            same format as `images`. The last entry equals `images`.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | list
    intermediate_images: list | None = None
