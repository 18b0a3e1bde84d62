"""Training throughput of coursekit's ``fit`` against a plain hand-written PyTorch loop.

Both train the same CNN from the same initial weights on the same batches (real MNIST images held
in memory when COURSEKIT_DATA points at them, random images of MNIST's shape otherwise), with the
same optimizer, schedule and seed. Runs alternate (plain, fit, plain, fit, ...) so that drift in
the machine's speed hits both; the median images/second of each is reported with their ratio.

    python benchmarks/train_overhead.py [--images 4096] [--batch-size 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from coursekit.bench import environment
from coursekit.data import get_dataset
from coursekit.models import build_model
from coursekit.train import fit


def mnist_in_memory(n: int) -> tuple[TensorDataset, str]:
    """``n`` normalized MNIST training images [n, 1, 28, 28] with labels, or random stand-ins."""
    try:
        ds = get_dataset("mnist", download=False)
    except FileNotFoundError:
        g = torch.Generator().manual_seed(0)
        return (TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(10, (n,), generator=g)),
                "random images of MNIST's shape (no MNIST files found)")
    images = torch.stack([ds[i][0] for i in range(n)])
    return TensorDataset(images, ds.targets[:n].clone()), "real MNIST training images"


def plain_loop(model: nn.Module, loader: DataLoader, epochs: int, lr: float, seed: int) -> None:
    """What a learner would write by hand: the same optimizer and schedule as ``fit``, no extras."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader),
                                                   pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for images, labels in loader:
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    data, what = mnist_in_memory(args.images)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True)
    torch.manual_seed(0)
    initial = build_model("cnn", "mnist")
    images = args.images * args.epochs

    def run(train) -> float:
        model = copy.deepcopy(initial)
        start = time.perf_counter()
        train(model)
        return images / (time.perf_counter() - start)

    plain, ours = [], []
    run(lambda m: plain_loop(m, loader, 1, 1e-3, 0))  # warm-up: allocator, kernels, caches
    for _ in range(args.repeats):
        plain.append(run(lambda m: plain_loop(m, loader, args.epochs, 1e-3, 0)))
        ours.append(run(lambda m: fit(m, loader, epochs=args.epochs, lr=1e-3, seed=0, device="cpu")))

    p, f = statistics.median(plain), statistics.median(ours)
    print(f"environment: {environment()}")
    print(f"data: {args.images} {what}, batch size {args.batch_size}, {args.epochs} epoch(s), "
          f"CNN (1,199,882 parameters), CPU, {args.repeats} alternating runs each, median")
    print(f"plain loop:     {p:8.1f} images/s  (runs: {', '.join(f'{x:.0f}' for x in plain)})")
    print(f"coursekit.fit:  {f:8.1f} images/s  (runs: {', '.join(f'{x:.0f}' for x in ours)})")
    print(f"ratio fit / plain: {f / p:.3f}  (target: at least 0.95)")


if __name__ == "__main__":
    main()
