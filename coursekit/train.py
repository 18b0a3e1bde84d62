"""The course's training loop, written out so that a learner can read every step.

``fit`` trains with AdamW and a one-cycle learning-rate schedule, keeps the weights of the epoch
with the best validation accuracy, and stops cleanly on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import get_device
from .files import save_atomically


@dataclass
class History:
    """What ``fit`` measured, one entry per finished epoch. Accuracies are fractions in [0, 1]."""

    train_loss: list = field(default_factory=list)  # mean training loss of the epoch
    val_loss: list = field(default_factory=list)  # validation loss after the epoch
    val_acc: list = field(default_factory=list)  # validation accuracy after the epoch
    epoch_time: list = field(default_factory=list)  # seconds of training + validation
    best_val_acc: float = float("nan")  # the best of val_acc (the model holds those weights)
    best_epoch: int = -1  # index of that epoch, counted from 0
    interrupted: bool = False  # True when Ctrl-C stopped training early
    resumed_epochs: int = 0  # epochs taken from a checkpoint rather than trained by this call
    precision: str = "fp32"  # "fp32", or "bf16" when the steps ran under bf16 autocast

    @property
    def resumed_seconds(self) -> float:
        """Seconds of the epochs taken from a checkpoint: what a resumed run adds to its own time."""
        return sum(self.epoch_time[:self.resumed_epochs])

    def as_dict(self) -> dict:
        return asdict(self)


PRECISIONS = ("auto", "fp32", "bf16")


def step_seconds(model: nn.Module, images: torch.Tensor, precision: str, steps: int = 3) -> float:
    """Median seconds of one training step (forward, backward, SGD) after one warm-up step.

    images: [B, C, H, W] on the model's device. The model's weights change (by a tiny step).
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    labels = torch.zeros(len(images), dtype=torch.long, device=images.device)
    cuda = images.device.type == "cuda"
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast(images.device.type, torch.bfloat16, enabled=precision == "bf16"):
            logits = model(images)
        loss = nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def choose_precision(model: nn.Module, images: torch.Tensor, device, measured: dict | None = None) -> str:
    """``"bf16"`` where bf16 autocast makes this model's training step at least 10% faster, else ``"fp32"``.

    On CUDA: bf16 when the GPU supports it. On the CPU it is measured, on a copy of the model with
    a batch like ``images`` [B, C, H, W]: bf16 is about twice as fast for convolutions on CPUs with
    bf16 instructions and no faster, or slower, for small transformers. Torch's random state is
    left as it was, so a seeded run still repeats exactly. ``measured``: a dict of earlier choices,
    keyed by (model class, parameter count, batch shape, CPU threads); a key found there is not
    measured again, and a new measurement is added to it. Without it every call measures.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type != "cpu":
        return "fp32"
    key = (type(model).__name__, sum(p.numel() for p in model.parameters()), tuple(images.shape),
           torch.get_num_threads())
    if measured is not None and key in measured:
        return measured[key]
    with torch.random.fork_rng():
        probe = copy.deepcopy(model).train()
        fp32, bf16 = (step_seconds(probe, images.cpu(), p) for p in ("fp32", "bf16"))
    choice = "bf16" if bf16 < 0.9 * fp32 else "fp32"
    if measured is not None:
        measured[key] = choice
    return choice


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Within the block ``model`` is in eval mode; afterwards every module's training flag is as it
    was (each its own, not one for all), even when the block fails."""
    flags = {m: m.training for m in model.modules()}
    try:
        yield model.eval()
    finally:
        for module, flag in flags.items():
            module.training = flag


@torch.no_grad()
def evaluate(model: nn.Module, loader, device="auto", precision: str = "fp32") -> dict:
    """``{"loss": mean cross-entropy, "acc": accuracy in [0, 1]}`` of ``model`` on ``loader``."""
    device = get_device(device)
    total_loss, correct, count = 0.0, 0, 0
    with eval_mode(model.to(device)):
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                logits = model(images).float()
            total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            count += len(labels)
    if count == 0:
        raise ValueError("evaluate() got an empty loader: there is nothing to measure")
    return {"loss": total_loss / count, "acc": correct / count}


def fit(model: nn.Module, train_loader, val_loader=None, epochs: int = 5, lr: float = 1e-3,
        device="auto", seed: int = 0, weight_decay: float = 0.05, label_smoothing: float = 0.0,
        max_steps: int | None = None, checkpoint=None, resume: bool = False, progress: bool = True,
        precision: str = "fp32", measured: dict | None = None) -> History:
    """Train ``model`` with AdamW and a one-cycle schedule; return its :class:`History`.

    Batches are ``images [B, C, H, W]``, ``labels [B]``. After each epoch the model is scored on
    ``val_loader``; at the end it holds the weights of its best validation epoch. ``seed`` makes a
    CPU run repeat exactly. ``max_steps`` caps the batches per epoch (fast mode). ``checkpoint``:
    a file written atomically after every epoch with the best weights (``"model"``), the history
    and what it takes to go on (weights, optimizer, schedule, random state). With ``resume=True`` a
    checkpoint left by an interrupted run of the same plan is picked up after its last finished
    epoch, and the run ends exactly as an uninterrupted one would (on the CPU); a checkpoint of a
    finished run trains nothing more and returns its history, the model holding its best weights.
    Ctrl-C stops training and returns what was learned so far (``history.interrupted``).
    ``precision``: "fp32"; "bf16" (autocast: faster convolutions on recent CPUs and GPUs); "auto"
    picks the faster of the two for this model by measuring it (:func:`choose_precision`; pass
    the same dict as ``measured`` to several runs to measure each model shape only once).
    """
    if epochs < 1:
        raise ValueError(f"epochs={epochs} must be at least 1")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")
    device = get_device(device)
    torch.manual_seed(seed)
    model.to(device)
    steps = len(train_loader) if max_steps is None else min(max_steps, len(train_loader))
    if steps == 0:
        raise ValueError("the training loader is empty: nothing to train on")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps,
                                                   pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    plan = {"epochs": epochs, "steps": steps, "lr": lr, "weight_decay": weight_decay, "seed": seed,
            "label_smoothing": label_smoothing, "precision": precision}  # a resumed run must match it
    if resume and checkpoint is not None and Path(checkpoint).exists():
        history, best_state = _resume(checkpoint, plan, model, optimizer, schedule, device)
        precision = history.precision  # as the interrupted run chose it
    else:
        if precision == "auto":
            with torch.random.fork_rng():
                images = next(iter(train_loader))[0].to(device)
            precision = choose_precision(model, images, device, measured)
        history, best_state = History(precision=precision), None
    done = len(history.train_loss)  # epochs finished before this call (a resumed run)
    bar = tqdm(total=epochs * steps, initial=done * steps, desc="training", unit="batch", disable=not progress)
    try:
        for epoch in range(done, epochs):
            start = time.perf_counter()
            history.train_loss.append(_train_epoch(model, train_loader, steps, optimizer, schedule, loss_fn,
                                                   device, precision, bar, epoch))
            if val_loader is not None:
                scores = evaluate(model, val_loader, device, precision)
                history.val_loss.append(scores["loss"])
                history.val_acc.append(scores["acc"])
                if not scores["acc"] <= history.best_val_acc:  # also true while best is nan
                    history.best_val_acc, history.best_epoch = scores["acc"], epoch
                    best_state = copy.deepcopy(model.state_dict())
                bar.set_postfix(epoch=epoch + 1, val_acc=f"{scores['acc']:.4f}")
            history.epoch_time.append(time.perf_counter() - start)
            if checkpoint is not None:
                _save_checkpoint(checkpoint, plan, history, best_state, model, optimizer, schedule, device)
    except KeyboardInterrupt:
        history.interrupted = True
        print(f"Interrupted after {len(history.train_loss)} finished epoch(s); "
              "keeping what was learned so far.")
    finally:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def _train_epoch(model, loader, steps, optimizer, schedule, loss_fn, device, precision, bar, epoch) -> float:
    """One epoch of ``steps`` batches: forward, loss, backward, AdamW step, schedule step; the mean loss."""
    model.train()
    running = 0.0
    for step, (images, labels) in enumerate(loader):
        if step == steps:
            break
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            logits = model(images)
        loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running += loss.item()
        bar.update()
        bar.set_postfix(epoch=epoch + 1, loss=f"{running / (step + 1):.3f}", refresh=False)  # drawn at the bar's pace
    return running / steps


def _save_checkpoint(path, plan, history, best_state, model, optimizer, schedule, device) -> None:
    """Everything an interrupted run needs to go on exactly, written atomically after an epoch: the
    best weights so far (``"model"``), the history, the plan it must match, and the current weights,
    optimizer, schedule and random state."""
    save_atomically({"model": best_state or model.state_dict(), "history": history.as_dict(), "plan": plan,
                     "state": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "schedule": schedule.state_dict(), "rng": _rng_state(device)}, path)


def _rng_state(device: torch.device) -> dict:
    """The random state a resumed run needs: torch's CPU generator (which draws the data order and
    augmentation, see :class:`coursekit.tensordata.TensorLoader`) and the GPU's when training there."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _resume(checkpoint, plan: dict, model, optimizer, schedule, device) -> tuple[History, dict | None]:
    """Load an interrupted run's state from ``checkpoint`` into the model, optimizer and schedule;
    return its history and best weights. A checkpoint of another plan is refused, naming the fix."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if saved.get("plan") != plan:
        raise ValueError(f"{checkpoint} was written by a run with other settings ({saved.get('plan')}, "
                         f"now {plan}): delete it to start again, or resume with the same settings")
    model.load_state_dict(saved["state"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    torch.set_rng_state(saved["rng"]["cpu"])
    if saved["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state(saved["rng"]["cuda"], device)
    history = History(**saved["history"])
    history.interrupted, history.resumed_epochs = False, len(history.train_loss)
    best = saved["model"] if history.best_epoch >= 0 else None
    print(f"resuming from {checkpoint}: {len(history.train_loss)} of {plan['epochs']} epochs done")
    return history, best
