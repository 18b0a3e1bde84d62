"""fp32 against bf16 autocast: training images/s per model kind, and the accuracy of the same short run.

For each model kind on one dataset, side by side in one run: the median training step
(forward, backward, AdamW) in fp32 and under bf16 autocast, what ``fit(precision="auto")`` would
pick, and the test accuracy of the same seeded short run (``--subset`` images, ``--epochs``) in both.
It is also how the CPU grid's models were sized (``--grid cpu --epochs 0``: speeds only).

    python benchmarks/precision.py [--dataset cifar10] [--grid cpu] [--models cnn,vit,deepvit,hybrid]
                                   [--subset 5000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from coursekit.bench import environment
from coursekit.data import dataset_info, get_loaders, source_of
from coursekit.models import build_model
from coursekit.train import choose_precision, evaluate, fit


def images_per_s(model, images, labels, precision: str, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters())
    times = []
    for i in range(steps + 2):  # two warm-up steps
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            logits = model(images)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return len(images) / sorted(times[2:])[len(times[2:]) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--grid", default="cpu", choices=("reference", "cpu"), help="model sizes (default: cpu)")
    parser.add_argument("--models", default="cnn,vit,deepvit,hybrid")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per precision (median)")
    parser.add_argument("--subset", type=int, default=5000, help="images of the short accuracy run")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the short accuracy run (0: none)")
    args = parser.parse_args()
    info = dataset_info(args.dataset)
    train, val, test = get_loaders(args.dataset, batch_size=args.batch_size, subset=args.subset,
                                   augment=info.augment, download=False)
    images, labels = next(iter(train))
    print(f"environment: {environment()}")
    print(f"grid: {args.grid}; data: {source_of(train)}; steps: batch {args.batch_size}, "
          f"median of {args.steps} after 2 "
          f"warm-ups; accuracy: {args.subset} images, {args.epochs} epochs, seed 0, test on "
          f"{len(test.dataset)} images")
    print(f"{'model':8s} {'fp32 img/s':>11s} {'bf16 img/s':>11s} {'bf16/fp32':>9s} {'auto':>5s} "
          f"{'fp32 acc':>9s} {'bf16 acc':>9s}")
    for kind in args.models.split(","):
        torch.manual_seed(0)
        model = build_model(kind, args.dataset, args.grid)
        speed = {p: images_per_s(build_model(kind, args.dataset, args.grid), images, labels, p, args.steps)
                 for p in ("fp32", "bf16")}
        auto = choose_precision(model, images, "cpu")
        acc = {"fp32": float("nan"), "bf16": float("nan")}
        for p in ("fp32", "bf16") if args.epochs else ():
            torch.manual_seed(0)
            net = build_model(kind, args.dataset, args.grid)
            fit(net, train, val, epochs=args.epochs, lr=1e-3, device="cpu", progress=False, precision=p)
            acc[p] = 100 * evaluate(net, test, "cpu", p)["acc"]
        print(f"{kind:8s} {speed['fp32']:11.0f} {speed['bf16']:11.0f} {speed['bf16'] / speed['fp32']:9.2f} "
              f"{auto:>5s} {acc['fp32']:8.2f}% {acc['bf16']:8.2f}%")


if __name__ == "__main__":
    main()
