"""Does a small CIFAR-10 ViT learn position embeddings that show the patch grid? Train one recipe and measure.

Issue #20 §2 wants learned position embeddings whose cosine-similarity map has the patch grid's 2-D
structure (the ViT paper's figure). This trains one recipe with coursekit's own pieces only
(``seed_everything``, ``build_model``, ``get_loaders(augment=True)``, ``fit``), scores the test set
once and measures ``coursekit.maps.neighbour_similarity(position_similarity(model))``: the mean
cosine of each patch's embedding to its 4 grid neighbours and to every other patch. The
neighbour/others pair is also read after every epoch (when ``fit`` starts scoring the validation
set, so it costs nothing and changes nothing in training). One run at a time, on 1 thread:

    PYTHONPATH=. COURSEKIT_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/position_grid.py \
        --patch-size 4 --dim 64 --depth 4 --heads 4 --dim-head 16 --mlp-dim 128 \
        --epochs 10 --lr 2e-3 --batch-size 128 --label-smoothing 0.1 --out /work/runs/pos

It prints one JSON line and appends it to ``--results``
(default ``benchmarks/results/position_grid_cpu.jsonl``); ``--out`` gets the final (best validation
epoch's) state_dict ``<name>.pt``, the record ``<name>.json`` and the similarity figure ``<name>.png``.
``--time-steps N`` only times N training steps (after one warm-up) and records nothing.
``--pos-init-std S`` is a diagnostic, not a recipe ``coursekit.weights`` can make: it redraws the
position embedding with std S (vit-pytorch draws it with std 1, which a short run barely moves).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from coursekit.config import seed_everything
from coursekit.data import get_loaders, source_of
from coursekit.maps import neighbour_similarity, position_similarity
from coursekit.models import build_model
from coursekit.train import evaluate, fit, step_seconds
from coursekit.viz import plot_position_similarity

RESULTS = Path(__file__).parent / "results" / "position_grid_cpu.jsonl"


class GridProbe:
    """The validation loader, which also measures the position grid each time ``fit`` iterates it.

    ``fit`` iterates the validation loader once after every epoch, so ``per_epoch`` gets one
    ``(neighbours, others)`` pair per epoch, of the weights at that moment. The loader draws no
    random numbers (no shuffle, no augmentation), so training is the same as without the probe.
    """

    def __init__(self, loader, model):
        self.loader, self.model, self.per_epoch = loader, model, []

    def __iter__(self):
        self.per_epoch.append([round(x, 4) for x in neighbour_similarity(position_similarity(self.model))])
        print(f"epoch {len(self.per_epoch)}: neighbours {self.per_epoch[-1][0]:.3f}, "
              f"others {self.per_epoch[-1][1]:.3f}", flush=True)
        return iter(self.loader)


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the machine type."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in [("patch-size", 4), ("dim", 64), ("depth", 4), ("heads", 4), ("dim-head", 16),
                          ("mlp-dim", 128), ("epochs", 10), ("batch-size", 128), ("seed", 0),
                          ("threads", 1)]:
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--emb-dropout", type=float, default=0.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--pos-init-std", type=float, default=None,
                        help="diagnostic only, not a coursekit recipe: redraw the position embedding "
                             "from N(0, std^2) after building (vit-pytorch draws it with std 1)")
    parser.add_argument("--subset", type=int, default=None, help="a class-balanced sample (pilots)")
    parser.add_argument("--time-steps", type=int, default=0, help="only time this many training steps")
    parser.add_argument("--out", type=Path, default=Path("/work/runs/pos"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    sizes = {"patch_size": args.patch_size, "dim": args.dim, "depth": args.depth, "heads": args.heads,
             "dim_head": args.dim_head, "mlp_dim": args.mlp_dim, "dropout": args.dropout,
             "emb_dropout": args.emb_dropout}
    seed_everything(args.seed)
    model = build_model("vit", "cifar10", **sizes)
    if args.pos_init_std is not None:  # fit reseeds torch, so training draws the same numbers
        with torch.no_grad():
            model.pos_embedding.normal_(0.0, args.pos_init_std)
    train, val, test = get_loaders("cifar10", batch_size=args.batch_size, augment=True, seed=args.seed,
                                   subset=args.subset)
    params = sum(p.numel() for p in model.parameters())
    if args.time_steps:
        images = next(iter(train))[0]
        seconds = step_seconds(model, images, "fp32", steps=args.time_steps)
        print(json.dumps({"sizes": sizes, "params": params, "batch_size": args.batch_size,
                          "threads": torch.get_num_threads(), "step_s": round(seconds, 3),
                          "epoch_s_estimate": round(seconds * len(train), 1)}))
        return {}

    probe = GridProbe(val, model)
    start = time.perf_counter()
    h = fit(model, train, probe, epochs=args.epochs, lr=args.lr, seed=args.seed,
            label_smoothing=args.label_smoothing, device="cpu", precision="fp32", progress=False)
    train_s = time.perf_counter() - start
    neighbours, others = neighbour_similarity(position_similarity(model))  # the best epoch's weights
    name = (f"vit_p{args.patch_size}_d{args.dim}x{args.depth}_h{args.heads}_e{args.epochs}"
            f"_lr{args.lr:g}_b{args.batch_size}_s{args.seed}" + (f"_n{args.subset}" if args.subset else "")
            + (f"_pos{args.pos_init_std:g}" if args.pos_init_std is not None else ""))
    record = {
        "name": name, "kind": "vit", "dataset": "cifar10", "model": sizes, "params": params,
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "augment": True,
        "label_smoothing": args.label_smoothing, "seed": args.seed, "subset": args.subset,
        "pos_init_std": args.pos_init_std,  # None: build_model's own init (a reproducible recipe)
        "data": f"{source_of(train)}: {len(train.dataset):,} train / {len(val.dataset):,} val / "
                f"{len(test.dataset):,} test",
        "device": "cpu", "cpu": cpu_name(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "precision": h.precision,
        "train_s": round(train_s, 1), "epoch_s": [round(t, 1) for t in h.epoch_time],
        "val_acc": [round(100 * a, 2) for a in h.val_acc],
        "best_val_acc": round(100 * h.best_val_acc, 2), "best_epoch": h.best_epoch + 1,
        "test_acc": round(100 * evaluate(model, test, "cpu")["acc"], 2),
        "grid_per_epoch": probe.per_epoch,  # [neighbours, others] after epoch 1, 2, ...
        "neighbours": round(neighbours, 4), "others": round(others, 4),
        "interrupted": h.interrupted, "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(record))
    with open(args.results, "a") as f:
        f.write(json.dumps(record) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / f"{name}.pt")
    (args.out / f"{name}.json").write_text(json.dumps(record, indent=1))
    plot_position_similarity(model).savefig(args.out / f"{name}.png", dpi=80)
    return record


if __name__ == "__main__":
    main()
