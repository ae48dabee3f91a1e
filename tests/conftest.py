"""Test-wide settings: headless MuJoCo rendering and deterministic, light CPU use."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
# runs started by tests count each other, not the machine's other maniflow-rl processes
# (utils/thread_peers.py)
if "MANIFLOW_THREAD_REGISTRY" not in os.environ:
    os.environ["MANIFLOW_THREAD_REGISTRY"] = tempfile.mkdtemp(prefix="maniflow_threads_")
    atexit.register(shutil.rmtree, os.environ["MANIFLOW_THREAD_REGISTRY"], True)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield
