"""How the homework's reference ViT recipe was chosen: many recipes on full Fashion-MNIST, on a GPU.

Each recipe in ``homework_recipes.json`` (a model's settings, epochs, learning rate, weight decay,
label smoothing, augmentation, seed) is trained the way :func:`coursekit.train.fit` trains (AdamW,
one-cycle schedule with 15% warm-up, weights of the best validation epoch) on the homework's own
split (:func:`coursekit.homework.loaders`: 54,000 / 6,000 / 10,000 images) and normalization, with
the augmentation of ``augment=True`` (random 28x28 crops of the image padded by 2, horizontal
flips). The images are kept on the device and batched there, which is why this does not call
``fit`` with DataLoaders: on a GPU the per-image transforms would take longer than the training.
Several worker processes share one GPU. One JSON line per recipe goes to ``--out``: best
validation accuracy, test accuracy at that epoch, test accuracy after the last epoch, seconds.

GPU runs are not bit-for-bit repeatable and differ from a CPU run with the same seed: read one
recipe's number as one draw, within a few tenths of a percent of another seed's.

    python benchmarks/homework_recipes.py --out results.jsonl [--only p7d96] [--workers 8] [--device cuda]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from coursekit import homework
from coursekit.data import dataset_info
from coursekit.models import build_model
from coursekit.train import evaluate

RECIPES = Path(__file__).with_name("homework_recipes.json")


class DeviceData:
    """The homework's split as tensors on ``device``: train images [54000, 28, 28] in [0, 1]."""

    def __init__(self, device):
        self.device = device
        train, val, test = homework.loaders()
        full = train.dataset.dataset  # a TensorSplit: the images as uint8 [60000, 1, 28, 28]
        info = dataset_info(homework.DATASET)
        self.mean, self.std = info.mean[0], info.std[0]
        images = full.images[:, 0].float().div(255).to(device)
        targets = full.targets.to(device)
        train_idx = torch.tensor(train.dataset.indices, device=device)
        val_idx = torch.tensor(val.dataset.indices, device=device)
        self.train_x, self.train_y = images[train_idx], targets[train_idx]
        self.val_x, self.val_y = self.normalize(images[val_idx]), targets[val_idx]
        self.test_x = self.normalize(test.images[:, 0].float().div(255).to(device))
        self.test_y = test.targets.to(device)

    def normalize(self, x):
        """[B, 28, 28] in [0, 1] -> [B, 1, 28, 28], what ToTensor + Normalize give."""
        return ((x - self.mean) / self.std).unsqueeze(1)


def augment(x):
    """RandomCrop(28, padding=2) and RandomHorizontalFlip on a batch [B, 28, 28], on its own device."""
    b, side = x.shape[0], torch.arange(28, device=x.device)
    padded = F.pad(x, (2, 2, 2, 2))
    dy, dx = (torch.randint(0, 5, (b,), device=x.device) for _ in range(2))
    rows, cols = (dy[:, None] + side)[:, :, None], (dx[:, None] + side)[:, None, :]
    out = padded[torch.arange(b, device=x.device)[:, None, None], rows, cols]
    flip = torch.rand(b, device=x.device) < 0.5
    return torch.where(flip[:, None, None], out.flip(-1), out)


def accuracy(model, images, labels, batch: int = 1000) -> float:
    """:func:`coursekit.train.evaluate` over tensors already on the device, in batches of ``batch``."""
    batches = [(images[i:i + batch], labels[i:i + batch]) for i in range(0, len(images), batch)]
    return evaluate(model, batches, images.device)["acc"]


def train_recipe(recipe: dict, data: DeviceData) -> dict:
    """Train one recipe as ``fit`` would and return its scores."""
    epochs, lr, batch = recipe["epochs"], recipe.get("lr", 3e-3), recipe.get("bs", 128)
    torch.manual_seed(recipe.get("seed", 0))
    model = build_model(recipe.get("kind", "vit"), homework.DATASET, **recipe.get("cfg", {})).to(data.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=recipe.get("wd", 0.05))
    steps = -(-len(data.train_x) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps, pct_start=0.15)
    best, best_state, vals = -1.0, None, []
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(data.train_x), device=data.device)
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            images = augment(data.train_x[idx]) if recipe.get("aug") else data.train_x[idx]
            loss = F.cross_entropy(model(data.normalize(images)), data.train_y[idx],
                                   label_smoothing=recipe.get("ls", 0.0))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        val = accuracy(model, data.val_x, data.val_y)
        vals.append(round(val, 4))
        if val > best:
            best, best_state = val, copy.deepcopy(model.state_dict())
    last_test = accuracy(model, data.test_x, data.test_y)
    model.load_state_dict(best_state)
    return dict(name=recipe["name"], seed=recipe.get("seed", 0), best_val=round(best, 4),
                test=round(accuracy(model, data.test_x, data.test_y), 4), last_test=round(last_test, 4),
                best_epoch=vals.index(max(vals)) + 1, epochs=epochs,
                gpu_s=round(time.perf_counter() - start, 1), vals=vals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON lines, appended")
    parser.add_argument("--only", default="", help="run the recipes whose name contains this text")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the device")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    recipes = [r for r in json.loads(RECIPES.read_text()) if args.only in r["name"]]
    if args.worker is None and args.workers > 1:  # start the workers, each taking every n-th recipe
        procs = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--worker", str(k)])
                 for k in range(args.workers)]
        sys.exit(max(p.wait() for p in procs))
    data = DeviceData(args.device)
    for k, recipe in enumerate(recipes):
        if args.worker is not None and k % args.workers != args.worker:
            continue
        result = train_recipe(recipe, data)
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")
        print(f"{result['name']:30s} val {result['best_val']:.4f} test {result['test']:.4f} "
              f"(epoch {result['best_epoch']}/{result['epochs']}, {result['gpu_s']} s)", flush=True)


if __name__ == "__main__":
    main()
