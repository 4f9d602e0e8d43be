import importlib.util
import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"     # the notebook kernels a worker starts: one core each, as the workers

import pytest
import torch
from PIL import Image
from skimage import data

from vispec_core.targets import load_target

# Tiny models run faster on one thread (intra-op sync costs more than it saves), and a second
# busy process on these 2 cores makes two threads per process 10-40x slower.
torch.set_num_threads(1)

FAMILIES = ["llava_next", "qwen2_5_vl"]


@pytest.fixture(scope="session")
def photos():
    """Real photos of different aspect ratios: square 512x512, landscape 640x427, landscape 600x400."""
    return {name: Image.fromarray(getattr(data, name)()) for name in ("astronaut", "rocket", "coffee")}


_targets = {}


def script_module(name: str):
    """scripts/<name>.py imported as a module, so its functions can be tested."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_target(family: str):
    if family not in _targets:
        _targets[family] = load_target(f"tiny:{family}", dtype=torch.float32)
    return _targets[family]


@pytest.fixture(scope="session", params=FAMILIES)
def target(request):
    return tiny_target(request.param)
