"""One model's weights in a ``.safetensors`` file: written atomically, its sha256 checked, read back.

A file holds the model's state dict (in fp32, or fp16 to halve it) and, as safetensors metadata under
the key ``"coursekit"``, a JSON dict that says how the model was made (:mod:`coursekit.weights` fills
it). :func:`check` compares a file's sha256 with the expected one before a byte of it is read as
tensors; a damaged, changed or foreign file raises :class:`WeightsError` naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file


class WeightsError(ValueError):
    """A weights file is damaged, changed, or not the course's."""


def sha256(path) -> str:
    """The sha256 of the file at ``path``, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(model: torch.nn.Module, path, info: dict, dtype: str = "fp32") -> str:
    """Write ``model``'s weights and ``info`` (JSON-able) to ``path``, atomically; return its sha256.

    ``dtype="fp16"`` stores floating-point tensors in half precision (half the size); integer
    tensors (e.g. batch norm's step counter) stay as they are. ``load`` gives fp32 back.
    """
    if dtype not in ("fp32", "fp16"):
        raise ValueError(f"dtype={dtype!r}: use 'fp32' or 'fp16'")
    half = dtype == "fp16"
    tensors = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"coursekit": json.dumps({**info, "dtype": dtype})})
        os.chmod(tmp, 0o644)  # mkstemp made it private; weights are for everyone to read
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return sha256(path)


def check(path, expected: str) -> bytes:
    """The bytes of the file at ``path``; :class:`WeightsError` naming the file and the fix unless
    their sha256 is ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not found. The course's weights live in its repository's weights/ folder, "
            "and an installed coursekit carries them: use a clone of the course (git clone) or "
            "install it again (pip install --force-reinstall --no-deps .), or train them: "
            f"python -m coursekit.weights --train {path.name[:2]}")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise WeightsError(
            f"{path}: sha256 is {actual}, expected {expected}: the file is damaged or was changed. "
            f"Restore it with `git checkout -- weights/{path.name}` (or fetch or install the course again), "
            f"or train it again: python -m coursekit.weights --train {path.name[:2]}")
    return data


def read(path, expected: str | None = None) -> tuple[dict, dict]:
    """``(state_dict, info)`` of a file written by :func:`save`; floats come back as fp32.

    ``expected``: its sha256, checked on the bytes that are then read as tensors (read once).
    """
    path = Path(path)
    if expected is not None:
        data = check(path, expected)
    elif path.is_file():
        data = path.read_bytes()
    else:
        raise FileNotFoundError(f"{path}: not found; save a model there first (coursekit.weightfile.save)")
    try:
        state = load_tensors(data)
        # the format: 8 bytes (little-endian header length), then a JSON header holding __metadata__
        size = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + size]).get("__metadata__") or {}
    except Exception as error:  # safetensors raises its own error types for a malformed file
        raise WeightsError(f"{path}: not a readable safetensors file ({error}); write it again "
                           "with coursekit.weightfile.save") from error
    if "coursekit" not in meta:
        raise WeightsError(f"{path}: has no coursekit metadata, so it is not a file "
                           "coursekit.weightfile.save wrote; save the model with it")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state, json.loads(meta["coursekit"])
