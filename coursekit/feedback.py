"""What every scorer returns, ``credit(value, feedback)``, and how feedback may show a learner's value.

Feedback says what was expected and what was got, without giving the answer, and echoes at most a
short escaped form of a learner's value (:func:`show`): a submission could hand over anything.
The grader (:mod:`coursekit.grading.grade`) words its own failures with the same two functions.
"""

from __future__ import annotations

import torch


def credit(value: float, feedback) -> dict:
    """A scorer's answer: ``value`` in [0, 1] of the task's points, and feedback lines joined by '; '."""
    return {"credit": float(min(1.0, max(0.0, value))), "feedback": "; ".join(feedback)}


def shape_of(x) -> str:
    """``[3, 16, 49]`` for a tensor, else the type's name: what feedback shows of a wrong answer."""
    return str(list(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def show(x, limit: int = 40) -> str:
    """A short, escaped form of a learner's value for feedback: ``repr`` cut to ``limit`` characters.

    Feedback never echoes more of an answer than this (a submission could hand over anything).
    """
    text = repr(x) if isinstance(x, (str, int, float, bool, type(None))) else f"<{shape_of(x)}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."

