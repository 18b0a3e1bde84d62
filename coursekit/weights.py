"""The course's trained weights: one ``.safetensors`` file per model, its sha256 pinned here.

Notebooks 03 and 05 load these files instead of training (seconds instead of minutes); the
homework (04) ships none, since trained weights would be an answer. Every file carries, in its
safetensors metadata, how it was made: its run (:mod:`coursekit.runs`), data, device, threads,
time, and its test accuracy.
``load`` checks a shipped file's sha256 before reading a byte of it as tensors.

One command trains them with the notebooks' own runs (:mod:`coursekit.runs`) and writes the files::

    python -m coursekit.weights --train 03 --runs runs/weights   # notebook 03: MNIST CNN and ViT, CIFAR-10 ViT
    python -m coursekit.weights --train 05 --runs runs/weights   # notebook 05's CPU grid
    python -m coursekit.weights --check                          # every file against its hash

Training is kept in ``--runs`` as it finishes (a rerun skips what is done); the command then writes
``weights/<name>.safetensors`` and prints the ``SHIPPED`` table to paste below.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
from pathlib import Path

import torch

from . import bench, config, reproduce
from .data import get_loaders, uses_stand_in
from .files import save_atomically
from .models import build_model, build_run
from .runs import Run, settings
from .train import History, evaluate
from .weightfile import WeightsError, check, read, save

ROOT = Path(__file__).resolve().parent.parent
# The shipped files: weights/ in a clone of the course (and its editable install, `pip install -e .`);
# a wheel (`pip install .`) carries the same files as package data in coursekit/_weights/, where
# pyproject.toml's [tool.setuptools] maps weights/. The package's own copy comes first: above an
# installed package lies site-packages, not the course. (Wheels install unpacked, so a plain path.)
PACKAGED = Path(__file__).resolve().parent / "_weights"
FOLDER = PACKAGED if PACKAGED.is_dir() else ROOT / "weights"
# notebook 05's shipped grid: the kinds of KINDS whose weights are made
NOTEBOOK_05_KINDS = ("cnn", "vit", "deepvit", "hybrid", "resnet")
NOTEBOOKS = {  # notebook -> its files (weights/<name>.safetensors) -> the run of coursekit.runs that made each
    "03": {"03_mnist_cnn": ("notebook03", "mnist", "cnn"), "03_mnist_vit": ("notebook03", "mnist", "vit"),
           "03_cifar10_vit": ("notebook03", "cifar10", "vit")},  # the last: its position embeddings
    "05": {f"05_cpu_{d}_{m}": ("cpu", d, m) for d in ("mnist", "cifar10") for m in NOTEBOOK_05_KINDS},
}
FP16_TOLERANCE = 0.1  # points of test accuracy fp16 storage may cost; more, and the file stays fp32

# file -> sha256, as `python -m coursekit.weights --train ...` printed it
SHIPPED: dict[str, str] = {
    "03_mnist_cnn.safetensors": "b5953dc766edd0ce2fe3d94d9b4ad56316a99090fff2f780816337ecccd0cb4a",
    "03_mnist_vit.safetensors": "ffac0a9a623e256093e7e2119ecc991e51af4704fb02c4338e6a59fbb8c4b038",
    "03_cifar10_vit.safetensors": "a003062b7cae47ecdef537ba239aab6b0a1589d31d28703769a6198fbd46f21a",
    "05_cpu_mnist_cnn.safetensors": "02e42291aedb6ba93d84c19eae748e2ef0a25a8666f47e28fb8c1beae00b9a74",
    "05_cpu_mnist_vit.safetensors": "8fb688534faca862f6511a1a64e203fca17cd4925f453145c72cf61ecc638c67",
    "05_cpu_mnist_deepvit.safetensors": "0d3a7437baf840c83ecabe94aaeab14d9239d6b97d8eadc3d98400566ce42aa6",
    "05_cpu_mnist_hybrid.safetensors": "cb19a1f041b9c59ad18c27f9560930340779662e8ee7fb4f11633d754b917505",
    "05_cpu_mnist_resnet.safetensors": "07497a06c9b8a18d81160ffb133f35460aaf491f07a97880df540d2f98fa00cd",
    "05_cpu_cifar10_cnn.safetensors": "ec6f6cf75a2bf21e768454546c6df5ab4a202d0780992694440ba418039fa055",
    "05_cpu_cifar10_vit.safetensors": "39247362f3ee634ef6b194ae372e10564d231cd543c180fdf7dc559f966f4582",
    "05_cpu_cifar10_deepvit.safetensors": "93ee4d6469a886297c7b684790fabd233a36e1dfba111e434c5ec0ddd7dac6c8",
    "05_cpu_cifar10_hybrid.safetensors": "6f68875251bfd06aaabefe9dc4d0f75f8dbce5fb8e3ebfdf109969ec950240f7",
    "05_cpu_cifar10_resnet.safetensors": "19bdd9c80701e3e2eefbeacb984b63cd92bf7197cd98b40b76f51ffc129edc06",
}


def path_of(name: str, folder=None) -> Path:
    """``folder/<name>.safetensors`` (``folder`` defaults to the course's ``weights/``)."""
    return Path(folder or FOLDER) / f"{name}.safetensors"


def load(name: str, folder=None, device="cpu") -> tuple[torch.nn.Module, dict]:
    """``(model, info)``: the model ``name`` built as it was trained, with the file's weights, in eval mode.

    Without ``folder`` it is one of the course's shipped files (``SHIPPED``), hash checked; with
    it, your own file ``folder/<name>.safetensors`` (written by :func:`save`), e.g. on Drive.
    ``info``: how it was made (``info["run"]``: the run's settings; ``info["history"]``:
    :func:`history` turns it into a ``History``).
    """
    path = path_of(name, folder)
    if folder is None and path.name not in SHIPPED:
        known = ", ".join(p.removesuffix(".safetensors") for p in SHIPPED) or "none yet"
        raise ValueError(f"{name!r} is not one of the course's weights ({known})")
    state, info = read(path, None if folder is not None else SHIPPED[path.name])
    r = info["run"]
    model = build_model(r["model"], r["dataset"], r["grid"], **r["sizes"])
    model.load_state_dict(state)
    return model.to(device).eval(), info


def history(info: dict) -> History:
    """The training history stored with a weights file, as ``fit`` returned it."""
    return History(**info["history"])


def summary(info: dict) -> str:
    """A short line for a learner: the model, its data, its test accuracy and epochs."""
    run, epochs = info["run"], len(info["history"]["train_loss"])
    line = f"{run['model']} on {info['data']}, {epochs} epochs"
    if info.get("test_acc") is not None:
        line += f": {info['test_acc']:.2f}% test accuracy"
    return line + (" (FAST MODE: not a real result)" if info.get("fast_mode") else "")


def describe(info: dict) -> str:
    """The whole record of how a weights file was made, from its metadata, on one line."""
    line = (f"trained by `{info['command']}` on {info['machine']}, in "
            f"{info['train_time_s'] / 60:.1f} min ({info['date']}); {info['data']}; stored in {info['dtype']}")
    if info.get("test_acc") is not None:
        line += f"; test accuracy {info['test_acc']:.2f}%"
    if info.get("note"):
        line += f"; {info['note']}"
    return line + (" (FAST MODE: not a real result)" if info.get("fast_mode") else "")


def folder_for(choice) -> Path | None:
    """A notebook's ``WEIGHTS`` choice: ``None`` for "course" or "train", else the folder it names.

    The folder is where a learner keeps what they train (on Colab, in Google Drive: mounted here
    first); it is created if needed.
    """
    if choice in ("course", "train"):
        return None
    if not isinstance(choice, (str, os.PathLike)) or not str(choice).strip():
        raise ValueError(f'WEIGHTS={choice!r}: use "course", "train", or a folder such as '
                         '"/content/drive/MyDrive/attention-course"')
    path = Path(choice).expanduser()
    if "google.colab" in sys.modules and str(path).startswith("/content/drive"):
        from google.colab import drive  # noqa: PLC0415  (only on Colab)
        drive.mount("/content/drive")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_info(name: str, run: Run, history: History, train_time_s: float, data: str, device,
             command: str, note: str = "") -> dict:
    """The metadata of model ``name``, trained by ``run`` as ``history`` says, for :func:`save`."""
    return dict(name=name, notebook=name[:2], run=run.as_dict(), history=history.as_dict(),
                train_time_s=round(train_time_s, 1), data=data, command=command,
                eval_precision=history.precision, note=note, date=datetime.date.today().isoformat(),
                fast_mode=run.fast, **_made_on(device))


def use_grid(out) -> list[dict]:
    """Put the course's CPU grid into ``out`` as ``coursekit.reproduce`` writes it; return its rows.

    Each shipped pair's record (row, history, settings) and its weights go to ``out/pairs/``, so
    ``reproduce.load_pairs(out)`` and the ``.pt`` files work as after training; the results table
    and figure are rebuilt (``reproduce.write_results``).
    """
    missing = [name for name in NOTEBOOKS["05"] if path_of(name).name not in SHIPPED]
    if missing:
        raise FileNotFoundError(
            f"the course does not ship notebook 05's trained weights yet ({', '.join(missing)} missing): "
            'set WEIGHTS = "train" to train the grid, or make the files with '
            "python -m coursekit.weights --train 05")
    for name in NOTEBOOKS["05"]:
        model, info = load(name)
        path = reproduce.pair_path(out, info["run"]["model"], info["run"]["dataset"])
        save_atomically(model.state_dict(), path.with_suffix(".pt"))
        save_atomically(json.dumps(info["record"], indent=1), path)
    return reproduce.write_results(out)


def test_accuracy(model: torch.nn.Module, info: dict, subset: int | None = None, device="cpu",
                  download: bool = True) -> float:
    """Test accuracy (%) of ``model`` on its dataset's test set, evaluated as ``info["test_acc"]`` was.

    ``subset``: at most that many test images (fast mode); ``None``: the whole test set.
    """
    dataset = info["run"]["dataset"]
    _, _, test = get_loaders(dataset, batch_size=256, subset=subset, download=download)
    if uses_stand_in(test):
        raise FileNotFoundError(f"{dataset}: only generated stand-in images are here, not the real "
                                "test set; set COURSEKIT_DATA to the course's data folder")
    return 100 * evaluate(model, test, device, info["eval_precision"])["acc"]


def pack(model: torch.nn.Module, info: dict, out=None) -> tuple[Path, str]:
    """Write a trained ``model`` to ``out/<info["name"]>.safetensors``, in fp16 if that keeps its accuracy.

    Measures the test accuracy with the weights as trained (fp32) and rounded to fp16; stores fp16
    when the two differ by at most ``FP16_TOLERANCE`` points, else fp32. ``info["test_acc"]`` is the
    stored weights' accuracy, measured with :func:`test_accuracy` after reading the file back;
    ``model`` is left holding those weights. Returns ``(path, sha256)``.
    """
    subset = 512 if info["fast_mode"] else None  # fast mode (CI): a few test images
    fp32 = test_accuracy(model, info, subset)
    half = copy.deepcopy(model)
    half.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                          for k, v in model.state_dict().items()})
    fp16 = test_accuracy(half, info, subset)
    dtype = "fp16" if abs(fp16 - fp32) <= FP16_TOLERANCE else "fp32"
    info = {**info, "test_acc_fp32": round(fp32, 2), "test_acc_fp16": round(fp16, 2)}
    path = path_of(info["name"], out)
    save(model, path, {**info, "test_acc": None}, dtype)
    state, _ = read(path)
    model.load_state_dict(state)  # what a learner loads: measure exactly that
    info["test_acc"] = round(test_accuracy(model, info, subset), 2)
    digest = save(model, path, info, dtype)
    print(f"{path}: {dtype}, test accuracy {info['test_acc']:.2f}% (fp32 {fp32:.2f}%, fp16 {fp16:.2f}%), "
          f"{path.stat().st_size / 1e6:.2f} MB")
    return path, digest


def _made_on(device) -> dict:
    return dict(bench.provenance(), device=f"{torch.device(device).type} ({torch.get_num_threads()} threads)")


def train(notebook: str, runs, out=None, device="cpu", note: str = "") -> dict[str, str]:
    """Train one notebook's models by their runs with :func:`coursekit.reproduce.run_pair` (kept in
    ``runs/<notebook>``: a rerun resumes, finished pairs are kept), write their files; ``{file: sha256}``."""
    folder, hashes = Path(runs) / ("05_cpu" if notebook == "05" else notebook), {}
    for name, (grid, dataset, model) in NOTEBOOKS[notebook].items():
        run = settings(grid, dataset, model)
        record = reproduce.run_pair(run, folder, device=device)  # trained, or kept from an earlier call
        pair = reproduce.pair_path(folder, model, dataset)
        net = build_run(run)
        net.load_state_dict(torch.load(pair.with_suffix(".pt"), map_location="cpu"))
        row = record["row"]
        command = f"python -m coursekit.weights --train {notebook}" if notebook == "03" else \
            f"python -m coursekit.reproduce --grid {grid} --datasets {dataset} --models {model}"
        mtime = datetime.datetime.fromtimestamp(pair.stat().st_mtime, datetime.timezone.utc)
        made = dict(date=record.get("date", mtime.date().isoformat()),  # as trained; older records lack these
                    machine=record.get("machine", "a machine not recorded"), threads=record.get("threads"),
                    torch=record.get("torch", "not recorded"))
        info = dict(run_info(name, run, History(**record["history"]), row["train_time_s"], row["data"],
                             device, command, note), record=record, device=row["device"], **made)
        path, hashes[path.name] = pack(net, info, out)
    if notebook == "05":
        reproduce.write_results(folder)
    return hashes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m coursekit.weights", description=__doc__.split("\n")[0])
    p.add_argument("--train", choices=sorted(NOTEBOOKS), action="append", default=[],
                   help="train (or resume) and write one notebook's weights; may be repeated")
    p.add_argument("--runs", default="runs/weights", help="where training is kept (default: runs/weights)")
    p.add_argument("--out", default=None, help="where the files go (default: the course's weights/)")
    p.add_argument("--note", default="", help="a remark stored with every file, e.g. the machine was shared")
    p.add_argument("--check", action="store_true", help="check every shipped file against its sha256")
    args = p.parse_args(argv)
    if args.check or not args.train:
        bad = 0
        for file, expected in SHIPPED.items():
            try:
                check(FOLDER / file, expected)
                print(f"ok  {file}")
            except (WeightsError, FileNotFoundError) as error:
                bad += 1
                print(f"BAD {error}", file=sys.stderr)
        return 1 if bad else 0
    device = config.setup(0, "cpu")
    hashes = {}
    try:
        for notebook in args.train:
            hashes.update(train(notebook, args.runs, args.out, device, args.note))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"Interrupted: what finished is kept in {args.runs}; run the same command to go on.")
        return 130
    print("\nSHIPPED entries (paste into coursekit/weights.py):")
    for file, digest in {**SHIPPED, **hashes}.items():
        print(f'    "{file}": "{digest}",')
    return 0


if __name__ == "__main__":
    sys.exit(main())
