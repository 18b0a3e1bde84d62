"""How notebook 03's MNIST recipes were chosen: train one recipe on full MNIST and print its figures.

Trains exactly as notebook 03 does (``get_loaders("mnist", batch_size=128)``: 54,000 / 6,000 / 10,000
images; ``coursekit.train.fit``: AdamW, one-cycle schedule, best validation epoch kept), scores the
test set once and prints one line: device, threads, data, model, epochs, lr, label smoothing,
augmentation, test accuracy, training seconds. Run one recipe at a time, on a fixed number of threads
(the course machine has 2 cores shared with others):

    PYTHONPATH=. COURSEKIT_DATA=... python benchmarks/mnist_recipes.py --model vit --epochs 12 \
        --lr 3e-3 --label-smoothing 0.1 --augment --threads 1

``--precision bf16`` trains under bf16 autocast (and tests in it), as ``fit(precision=...)`` does.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from coursekit.data import get_loaders
from coursekit.models import build_model
from coursekit.runs import settings
from coursekit.train import evaluate, fit


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["cnn", "vit"], required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--augment", action="store_true", help="padded random 28x28 crops (no flips)")
    parser.add_argument("--patch-size", type=int, default=7)
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                        help="fit's precision: bf16 autocast, or auto (the faster of the two, measured)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, val, test = get_loaders("mnist", batch_size=128, augment=args.augment, seed=args.seed)
    # notebook 03's small ViT (16 patches of 7x7; --patch-size 4: 49)
    sizes = {}
    if args.model == "vit":
        sizes = {**settings("notebook03", "mnist", "vit").sizes, "patch_size": args.patch_size}
    model = build_model(args.model, "mnist", **sizes)
    start = time.perf_counter()
    history = fit(model, train, val, epochs=args.epochs, lr=args.lr, device="cpu", seed=args.seed,
                  label_smoothing=args.label_smoothing, progress=False, precision=args.precision)
    seconds = time.perf_counter() - start
    result = {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
              "data": f"MNIST {len(train.dataset)}/{len(val.dataset)}/{len(test.dataset)}",
              "model": args.model, **({"settings": sizes} if sizes else {}),
              "epochs": args.epochs, "lr": args.lr, "label_smoothing": args.label_smoothing,
              "augment": args.augment, "seed": args.seed, "precision": history.precision,
              "best_val_acc": round(100 * history.best_val_acc, 2),
              "best_epoch": history.best_epoch + 1,
              "test_acc": round(100 * evaluate(model, test, "cpu", history.precision)["acc"], 2),
              "train_s": round(seconds, 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
