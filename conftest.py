"""pytest setup for the whole repository.

Notebooks executed by nbval run in fast mode (small real subsets, few steps): the kernel inherits
this process's environment. Set COURSEKIT_FAST=0 yourself to execute them for real.
"""

import os

os.environ.setdefault("COURSEKIT_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# The student version of the homework raises NotImplementedError by design: its tests live in
# tests/test_homework.py. nbval executes the reference solution instead.
collect_ignore = ["notebooks/04_fashion_mnist_homework.ipynb"]
