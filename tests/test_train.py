import math
import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from coursekit import config, train
from coursekit.data import get_loaders
from coursekit.models import build_model
from coursekit.train import evaluate, fit


def toy_loaders(n=256, seed=0):
    """Two Gaussian blobs in 8 dimensions: a task a small network learns in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = torch.randn(n, 8, generator=g) + 1.5 * (2 * labels[:, None] - 1)
    return (DataLoader(TensorDataset(x[:192], labels[:192]), batch_size=16, shuffle=True),
            DataLoader(TensorDataset(x[192:], labels[192:]), batch_size=32))


def toy_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def fit_toy(seed=1, **kwargs):
    train, val = toy_loaders()
    model = toy_model()
    return model, fit(model, train, val, epochs=3, lr=1e-2, seed=seed, progress=False, **kwargs)


def test_same_seed_same_history_exactly():
    (m1, h1), (m2, h2) = fit_toy(), fit_toy()
    assert (h1.train_loss, h1.val_loss, h1.val_acc) == (h2.train_loss, h2.val_loss, h2.val_acc)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    _, h3 = fit_toy(seed=2)
    assert h3.train_loss != h1.train_loss


def test_history_holds_fractions_and_the_best_weights():
    model, h = fit_toy()
    assert len(h.train_loss) == len(h.val_loss) == len(h.val_acc) == len(h.epoch_time) == 3
    assert all(0 <= a <= 1 for a in h.val_acc) and all(t > 0 for t in h.epoch_time)
    assert h.best_val_acc == max(h.val_acc) and h.val_acc[h.best_epoch] == h.best_val_acc
    assert h.train_loss[-1] < h.train_loss[0] and h.best_val_acc > 0.9
    _, val = toy_loaders()
    assert evaluate(model, val)["acc"] == h.best_val_acc  # the model holds the best epoch's weights
    assert not h.interrupted


def test_evaluate_matches_the_closed_form():
    class Fixed(nn.Module):  # always says class 0 with logits (log 3, 0): p(class 0) = 3/4
        def forward(self, x):
            return torch.tensor([math.log(3.0), 0.0]).expand(len(x), 2)
    labels = torch.tensor([0, 0, 0, 1])
    scores = evaluate(Fixed(), DataLoader(TensorDataset(torch.zeros(4, 1), labels), batch_size=3))
    assert scores["acc"] == 0.75
    assert scores["loss"] == pytest.approx((3 * -math.log(0.75) - math.log(0.25)) / 4)


def test_eval_mode_restores_each_modules_own_flag_even_after_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.BatchNorm1d(2))
    model[1].eval()  # a mixed model: one module already in eval mode
    with pytest.raises(RuntimeError), train.eval_mode(model):
        assert not any(m.training for m in model.modules())
        raise RuntimeError("the block fails")
    assert [m.training for m in model.modules()] == [True, True, False, True]


def test_evaluate_leaves_the_training_flags_as_they_were():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(1, 2))
    loader = DataLoader(TensorDataset(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long)), batch_size=2)
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(module[1].training))
    evaluate(model, loader)
    assert seen == [False, False] and model.training and model[1].training
    model.eval()
    evaluate(model, loader)
    assert not model.training


class InterruptAt:
    """Wraps a loader and raises KeyboardInterrupt (Ctrl-C) at batch ``batch`` of epoch ``epoch``."""

    def __init__(self, loader, epoch, batch):
        self.loader, self.epoch, self.batch, self.calls = loader, epoch, batch, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.calls += 1
        for i, item in enumerate(self.loader):
            if self.calls == self.epoch and i == self.batch:
                raise KeyboardInterrupt
            yield item


def test_ctrl_c_keeps_what_was_learned(tmp_path):
    train, val = toy_loaders()
    model = toy_model()
    ckpt = tmp_path / "run" / "model.pt"
    h = fit(model, InterruptAt(train, epoch=3, batch=4), val, epochs=5, lr=1e-2, progress=False,
            checkpoint=ckpt)
    assert h.interrupted and len(h.val_acc) == 2
    assert evaluate(model, val)["acc"] == h.best_val_acc > 0.9
    saved = torch.load(ckpt)
    assert saved["history"]["val_acc"] == h.val_acc
    assert os.listdir(ckpt.parent) == ["model.pt"]  # written atomically: no temporary leftovers


def test_an_interrupted_run_resumes_and_ends_exactly_as_an_uninterrupted_one(tmp_path):
    train, val = toy_loaders()  # shuffled by torch's global RNG, with dropout: both must be restored
    ckpt, common = tmp_path / "run.pt", dict(epochs=3, lr=1e-2, seed=1, progress=False)
    stopped = fit(toy_model(), InterruptAt(train, epoch=2, batch=4), val, checkpoint=ckpt, **common)
    assert stopped.interrupted and len(stopped.val_acc) == 1
    resumed = toy_model(seed=5)  # other starting weights: the checkpoint's replace them
    h = fit(resumed, train, val, checkpoint=ckpt, resume=True, **common)
    whole, h_whole = fit_toy()
    assert (h.train_loss, h.val_acc, h.best_epoch) == (h_whole.train_loss, h_whole.val_acc, h_whole.best_epoch)
    assert not h.interrupted and len(h.epoch_time) == 3
    for a, b in zip(resumed.state_dict().values(), whole.state_dict().values()):
        assert torch.equal(a, b)
    again = toy_model(seed=6)  # the checkpoint now covers every epoch: nothing more is trained
    h_again = fit(again, train, val, checkpoint=ckpt, resume=True, **common)
    assert h_again.train_loss == h.train_loss and evaluate(again, val)["acc"] == h.best_val_acc
    with pytest.raises(ValueError, match="other settings.*delete it"):
        fit(toy_model(), train, val, checkpoint=ckpt, resume=True, **dict(common, epochs=4))


def test_checkpoint_holds_the_best_weights(tmp_path):
    model, h = fit_toy(checkpoint=tmp_path / "best.pt")
    saved = torch.load(tmp_path / "best.pt")
    for name, tensor in model.state_dict().items():
        assert torch.equal(saved["model"][name], tensor)


def test_bad_arguments():
    train, val = toy_loaders()
    with pytest.raises(ValueError, match="epochs=0"):
        fit(toy_model(), train, val, epochs=0)
    with pytest.raises(ValueError, match="empty"):
        evaluate(toy_model(), [])


def test_max_steps_caps_the_batches():
    train, _ = toy_loaders()
    model = toy_model()
    h = fit(model, train, epochs=2, max_steps=3, progress=False)
    assert len(h.train_loss) == 2 and h.val_acc == [] and h.best_epoch == -1


def test_device_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert config.get_device("auto").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert config.get_device("auto").type == "cuda"
    assert config.get_device("cpu").type == "cpu"


def test_cnn_learns_real_mnist_in_two_epochs(real_root):
    # 2,000 images: seeds 0-3 reached 85.5-89.5% after two epochs (one epoch: 74-83.5%, too noisy)
    train, val, _ = get_loaders("mnist", batch_size=64, subset=2000, root=real_root)
    torch.manual_seed(0)
    model = build_model("cnn", "mnist")
    h = fit(model, train, val, epochs=2, lr=1e-3, device="cpu", progress=False)
    assert h.val_acc[-1] > 0.84


def tiny_loader(n: int = 64):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(10, (n,), generator=g))
    return DataLoader(data, batch_size=16, shuffle=True)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_seeded_run_repeats_exactly_in_each_precision(precision):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("cnn", "mnist")
        history = fit(model, tiny_loader(), tiny_loader(), epochs=1, device="cpu", progress=False,
                      precision=precision)
        runs.append((history.train_loss, model.classifier[-1].weight.detach().clone()))
        assert history.precision == precision
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def test_auto_precision_measures_without_touching_the_random_state():
    model, images = build_model("cnn", "mnist"), torch.randn(8, 1, 28, 28)
    torch.manual_seed(3)
    choice = train.choose_precision(model, images, "cpu")
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(1), after) and choice in ("fp32", "bf16")
    torch.manual_seed(0)
    auto = fit(build_model("cnn", "mnist"), tiny_loader(), epochs=1, device="cpu", progress=False,
               precision="auto")
    torch.manual_seed(0)
    fixed = fit(build_model("cnn", "mnist"), tiny_loader(), epochs=1, device="cpu", progress=False,
                precision=auto.precision)
    assert auto.train_loss == fixed.train_loss  # measuring changed nothing in the run
    with pytest.raises(ValueError, match="precision='fp16' is not one of"):
        fit(model, tiny_loader(), precision="fp16")


def test_auto_precision_remembers_only_in_the_dict_it_is_given(monkeypatch):
    timed = []

    def fake_step_seconds(model, images, precision, steps=3):
        timed.append(precision)
        return {"fp32": 1.0, "bf16": 0.5}[precision]  # bf16 twice as fast: it is chosen

    monkeypatch.setattr(train, "step_seconds", fake_step_seconds)
    model, images = build_model("cnn", "mnist"), torch.randn(8, 1, 28, 28)
    assert [train.choose_precision(model, images, "cpu") for _ in range(2)] == ["bf16", "bf16"]
    assert len(timed) == 4  # no dict: each call measures, nothing is kept between calls
    measured = {}
    assert [train.choose_precision(model, images, "cpu", measured) for _ in range(2)] == ["bf16", "bf16"]
    assert len(timed) == 6 and list(measured.values()) == ["bf16"]  # measured once, then remembered
    measured[next(iter(measured))] = "fp32"  # fit takes the remembered choice without measuring
    loader = [(images, torch.zeros(8, dtype=torch.long))]
    history = fit(model, loader, epochs=1, device="cpu", progress=False, precision="auto",
                  measured=measured)
    assert history.precision == "fp32" and len(timed) == 6
