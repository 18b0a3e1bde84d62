"""Measuring models: parameter counts, inference time, and result tables in markdown."""

from __future__ import annotations

import json
import logging
import platform

import torch
from torch import nn

from .config import get_device
from .train import eval_mode


def _timer_module():
    """``torch.utils.benchmark``, imported without the CUDA_HOME warning it gives on CPU-only machines.

    The warning comes from ``torch.utils.cpp_extension`` as it is imported; its logger is quieted
    for that import only and then left as it was.
    """
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        logger.setLevel(level)
    return benchmark


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.inference_mode()
def inference_time_ms(model: nn.Module, input_shape, batch_size: int = 1, device="auto",
                      warmup: int = 5, min_run_time: float = 1.0) -> float:
    """Median time in milliseconds for one forward pass over a batch of ``batch_size`` inputs.

    input_shape: one input without the batch dimension, e.g. ``(1, 28, 28)``.
    The model runs in eval mode under ``torch.inference_mode`` on random inputs, after ``warmup``
    calls, with ``torch.utils.benchmark`` (which synchronizes CUDA) using all of torch's CPU threads.
    Divide by ``batch_size`` for the time per image.
    """
    device = get_device(device)
    x = torch.randn(batch_size, *input_shape, device=device)
    with eval_mode(model.to(device)):
        for _ in range(warmup):
            model(x)
        timer = _timer_module().Timer(stmt="model(x)", globals={"model": model, "x": x},
                                      num_threads=torch.get_num_threads())
        median_s = timer.blocked_autorange(min_run_time=min_run_time).median
    return median_s * 1e3


def environment() -> str:
    """One line naming the machine a measurement was taken on."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        device = platform.processor() or platform.machine()
        try:  # Linux names the CPU model in /proc/cpuinfo
            with open("/proc/cpuinfo") as f:
                device = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    threads = torch.get_num_threads()
    return (f"torch {torch.__version__}, {device}, {threads} CPU thread{'s' if threads != 1 else ''}, "
            f"Python {platform.python_version()}")


def provenance() -> dict:
    """Where a result is being made, to record with it: ``{"machine", "threads", "torch"}``."""
    return {"machine": environment(), "threads": torch.get_num_threads(), "torch": torch.__version__}


def markdown_table(rows: list[dict], columns: list[str] | None = None, digits: int = 2) -> str:
    """Render rows (dicts) as a markdown table; numbers are right-aligned, floats get ``digits`` decimals."""
    if not rows:
        raise ValueError("markdown_table() needs at least one row")
    columns = columns or list(rows[0])

    def cell(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return str(value)
        return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"

    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                   for r in rows) for c in columns]
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def read_jsonl(path) -> list[dict]:
    """The records of a ``.jsonl`` results file, one dict per line (e.g. ``benchmarks/results/*.jsonl``)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
