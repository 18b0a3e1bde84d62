"""Settings read from the environment, seeds and the device: the one place they are decided.

Two environment variables steer the course:

- ``COURSEKIT_DATA``: the folder that holds the datasets (torchvision's layout). When it is unset,
  a per-user cache folder is used and torchvision downloads into it.
- ``COURSEKIT_CACHE``: where decoded datasets are cached (default: a per-user cache folder). The
  data folder itself is never written to: it may be read-only.
- ``COURSEKIT_FAST=1``: fast mode, for CI only. Notebooks train on small real subsets for a few
  steps so that every notebook executes in minutes. Its numbers teach nothing and are labelled.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

DATA_ENV = "COURSEKIT_DATA"
FAST_ENV = "COURSEKIT_FAST"
CACHE_ENV = "COURSEKIT_CACHE"


def is_fast() -> bool:
    """True when ``COURSEKIT_FAST`` is set to 1 (or true/yes)."""
    return os.environ.get(FAST_ENV, "").strip().lower() in {"1", "true", "yes"}


def fast_or(normal, fast):
    """Return ``fast`` in fast mode and ``normal`` otherwise, e.g. ``epochs = fast_or(10, 1)``."""
    return fast if is_fast() else normal


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The dataset folder: ``root`` if given, else ``$COURSEKIT_DATA``, else a per-user cache."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return user_cache() / "data"


def user_cache() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/coursekit``, else ``~/.cache/coursekit``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "coursekit"


def cache_dir() -> Path:
    """Where decoded datasets are cached: ``$COURSEKIT_CACHE``, else ``user_cache() / "tensors"``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return user_cache() / "tensors"


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch so that a CPU run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup(seed: int = 0, device: str = "auto") -> torch.device:
    """First cell of every notebook: seed everything, pick the device, say which mode runs."""
    seed_everything(seed)
    dev = get_device(device)
    print(f"torch {torch.__version__} | device: {dev} | CPU threads: {torch.get_num_threads()} | seed: {seed}")
    if is_fast():
        print("FAST MODE (COURSEKIT_FAST=1): tiny subsets and few steps, for CI only. "
              "The numbers below are not real results.")
    return dev


def child_environment(base=None) -> dict:
    """The environment for a process started in another folder (an unsandboxed kernel, a grading
    worker): ``base`` (default: ours) with the data folder made absolute."""
    env = dict(os.environ if base is None else base)
    if env.get(DATA_ENV):  # the kernel runs in another folder
        env[DATA_ENV] = str(Path(env[DATA_ENV]).expanduser().resolve())
    return env
