"""Cost of one ViT training step on this machine, for the homework's choice of patch size and dropout.

Times forward + backward + AdamW step on a batch of random 28x28 grayscale images (the cost does not
depend on the pixel values) for the ViTs the homework compares: 16 patches against 49, a wider and
deeper model, and the same model with ``dropout`` (inside every layer) or ``emb_dropout`` (once, on
the patch embeddings). Warm-up steps first, then the median of the timed steps; the last column
is that median times the steps of one Fashion-MNIST epoch (54,000 images), model only; the
last, the step time relative to the 16-patch, 96-wide model.

    python benchmarks/vit_step_time.py [--batch-size 128] [--steps 15] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from coursekit.bench import count_parameters, environment, markdown_table
from coursekit.models import build_model

SMALL = dict(dim=64, depth=4, heads=4, dim_head=16, mlp_dim=128)
WIDE = dict(dim=96, depth=6, heads=4, dim_head=24, mlp_dim=192)
BASE = "16 patches, dim 96, depth 6"  # the row the last column compares with
CONFIGS = {
    "16 patches, dim 64, depth 4": dict(patch_size=7, **SMALL),
    "49 patches, dim 64, depth 4": dict(patch_size=4, **SMALL),
    BASE: dict(patch_size=7, **WIDE),
    "same, dropout=0.1": dict(patch_size=7, **WIDE, dropout=0.1),
    "same, emb_dropout=0.3": dict(patch_size=7, **WIDE, emb_dropout=0.3),
}
TRAIN_IMAGES = 54_000  # the homework's training split


def step_ms(model: torch.nn.Module, batch_size: int, steps: int, warmup: int = 3) -> float:
    """Median milliseconds of one training step of ``model`` on images [batch_size, 1, 28, 28]."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = torch.randn(batch_size, 1, 28, 28), torch.randint(10, (batch_size,))
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name, config in CONFIGS.items():
        torch.manual_seed(0)
        model = build_model("vit", "fashion_mnist", **{"dropout": 0.0, "emb_dropout": 0.0, **config})
        ms = step_ms(model, args.batch_size, args.steps)
        rows.append({"ViT": name, "params": count_parameters(model), "ms per step": ms,
                     "s per epoch": ms / 1000 * math.ceil(TRAIN_IMAGES / args.batch_size)})
    base = next(row["ms per step"] for row in rows if row["ViT"] == BASE)
    for row in rows:
        row["relative"] = f"{row['ms per step'] / base:.2f}x"
    print(f"training step, batch {args.batch_size}, median of {args.steps} after 3 warm-up steps, CPU; "
          f"{environment()}")
    print(markdown_table(rows, ["ViT", "params", "ms per step", "s per epoch", "relative"], digits=1))


if __name__ == "__main__":
    main()
