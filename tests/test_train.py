import math
import os

import pytest
import torch
from conftest import RunsCode
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


def test_the_bf16_choice_needs_a_ten_percent_faster_step(monkeypatch):
    model, images = toy_model(), torch.randn(4, 8)
    for fp32, bf16, choice in [(1.0, 0.95, "fp32"), (1.0, 0.9, "fp32"), (1.0, 0.89, "bf16"), (2.0, 1.7, "bf16")]:
        monkeypatch.setattr(train, "step_seconds", lambda m, x, p, steps=3: {"fp32": fp32, "bf16": bf16}[p])
        assert train.choose_precision(model, images, "cpu") == choice, (fp32, bf16)


def test_a_gpu_asks_cuda_and_other_devices_keep_fp32(monkeypatch):
    model, images = toy_model(), torch.randn(4, 8)
    for supported, choice in [(True, "bf16"), (False, "fp32")]:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: supported)
        assert train.choose_precision(model, images, "cuda") == choice
    assert train.choose_precision(model, images, "meta") == "fp32"


def test_each_model_shape_is_measured_once_under_its_own_key(monkeypatch):
    monkeypatch.setattr(train, "step_seconds", lambda m, x, p, steps=3: {"fp32": 1.0, "bf16": 2.0}[p])
    measured = {}
    train.choose_precision(toy_model(), torch.randn(4, 8), "cpu", measured)
    train.choose_precision(nn.Linear(8, 2), torch.randn(4, 8), "cpu", measured)
    assert sorted(measured) == [("Linear", 18, (4, 8), torch.get_num_threads()),
                                ("Sequential", 178, (4, 8), torch.get_num_threads())]


class Recording(nn.Module):
    """A linear layer that notes the dtype its output had in every forward pass."""

    def __init__(self):
        super().__init__()
        self.linear, self.dtypes = nn.Linear(8, 2), []

    def forward(self, x):
        out = self.linear(x)
        self.dtypes.append(out.dtype)
        return out


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_step_seconds_times_the_median_of_its_steps_after_one_warm_up(monkeypatch, precision, dtype):
    clock = iter([0, 0, 1, 1, 3, 3, 6, 6, 10])  # the warm-up's start, then steps of 1, 2, 3 and 4 s
    monkeypatch.setattr(train.time, "perf_counter", lambda: next(clock))
    model = Recording()
    before = model.linear.weight.detach().clone()
    assert train.step_seconds(model, torch.randn(4, 8), precision, steps=4) == 3
    assert model.dtypes == [dtype] * 5  # the warm-up and four timed steps, each in the precision asked
    assert 0 < (model.linear.weight - before).abs().max() < 1e-5  # a tiny step: the weights barely move
    clock = iter(range(100))
    train.step_seconds(model, torch.randn(4, 8), precision)
    assert len(model.dtypes) == 5 + 4  # three timed steps by default, after the warm-up


def test_an_epochs_training_loss_is_the_mean_of_its_steps():
    x, labels = torch.randn(64, 8), torch.arange(64) % 2
    loader = DataLoader(TensorDataset(x, labels), batch_size=16)
    model = nn.Linear(8, 2)
    h = fit(model, loader, epochs=1, lr=0.0, weight_decay=0.0, progress=False)  # lr 0: nothing changes
    assert h.train_loss[0] == pytest.approx(evaluate(model, loader)["loss"], rel=1e-6)


def test_the_rng_state_of_a_gpu_run_holds_its_gpus_generator(monkeypatch):
    asked = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: asked.append(device) or torch.tensor([7]))
    cuda = torch.device("cuda", 0)
    state = train._rng_state(cuda)
    assert asked == [cuda] and torch.equal(state["cuda"], torch.tensor([7]))
    assert torch.equal(state["cpu"], torch.get_rng_state())
    assert train._rng_state(torch.device("cpu"))["cuda"] is None and asked == [cuda]


def test_resuming_a_gpu_run_restores_its_gpus_generator(tmp_path, monkeypatch, capsys):
    ckpt, common = tmp_path / "run.pt", dict(epochs=2, lr=1e-2, seed=1, progress=False)
    train_loader, val = toy_loaders()
    fit(toy_model(), InterruptAt(train_loader, epoch=2, batch=1), val, checkpoint=ckpt, **common)
    saved = torch.load(ckpt, weights_only=True)
    saved["rng"]["cuda"] = torch.tensor([7], dtype=torch.uint8)
    torch.save(saved, ckpt)
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, device)))
    model = toy_model()
    optimizer = torch.optim.AdamW(model.parameters())
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=24, pct_start=0.15)
    cuda = torch.device("cuda", 0)
    train._resume(ckpt, saved["plan"], model, optimizer, schedule, cuda)
    assert len(restored) == 1 and torch.equal(restored[0][0], torch.tensor([7], dtype=torch.uint8))
    assert restored[0][1] == cuda
    assert f"resuming from {ckpt}: 1 of 2 epochs done" in capsys.readouterr().out


def test_a_refused_checkpoint_names_both_plans(tmp_path):
    ckpt, common = tmp_path / "run.pt", dict(lr=1e-2, seed=1, progress=False)
    train_loader, val = toy_loaders()
    fit(toy_model(), train_loader, val, checkpoint=ckpt, epochs=1, **common)
    with pytest.raises(ValueError, match=r"other settings \(\{'epochs': 1, .*now \{'epochs': 2, "):
        fit(toy_model(), train_loader, val, checkpoint=ckpt, resume=True, epochs=2, **common)


def test_a_finished_run_whose_first_epoch_was_best_resumes_with_those_weights(tmp_path):
    ckpt, common = tmp_path / "run.pt", dict(epochs=2, lr=1e-2, seed=1, progress=False)
    train_loader, val = toy_loaders()
    fit(toy_model(), train_loader, val, checkpoint=ckpt, **common)
    saved = torch.load(ckpt, weights_only=True)
    saved["history"]["best_epoch"] = 0
    saved["model"] = toy_model(seed=9).state_dict()  # weights unlike the last epoch's
    torch.save(saved, ckpt)
    model = toy_model()
    fit(model, train_loader, val, checkpoint=ckpt, resume=True, **common)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved["model"][name])


def test_a_checkpoint_never_runs_code(tmp_path):
    ckpt = tmp_path / "run.pt"
    torch.save({"plan": RunsCode(tmp_path / "ran")}, ckpt)
    train_loader, val = toy_loaders()
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        fit(toy_model(), train_loader, val, checkpoint=ckpt, resume=True, epochs=1, progress=False)
    assert not (tmp_path / "ran").exists()


def test_the_checkpoint_records_the_plan_a_resume_must_match(tmp_path):
    train_loader, _ = toy_loaders()  # 12 batches
    fit(toy_model(), train_loader, checkpoint=tmp_path / "a.pt", progress=False)  # every default
    fit(toy_model(), train_loader, checkpoint=tmp_path / "b.pt", epochs=2, lr=0.5, seed=3, max_steps=5,
        weight_decay=0.1, label_smoothing=0.2, precision="bf16", progress=False)
    assert torch.load(tmp_path / "a.pt")["plan"] == dict(epochs=5, steps=12, lr=1e-3, weight_decay=0.05, seed=0,
                                                         label_smoothing=0.0, precision="fp32")
    assert torch.load(tmp_path / "b.pt")["plan"] == dict(epochs=2, steps=5, lr=0.5, weight_decay=0.1, seed=3,
                                                         label_smoothing=0.2, precision="bf16")


def test_a_checkpoint_is_only_resumed_when_asked(tmp_path):
    ckpt, train_loader = tmp_path / "run.pt", toy_loaders()[0]
    first = fit(toy_model(), train_loader, epochs=2, checkpoint=ckpt, progress=False)
    again = fit(toy_model(), train_loader, epochs=2, checkpoint=ckpt, progress=False)
    assert again.resumed_epochs == 0 and again.train_loss == first.train_loss  # trained afresh


def test_a_capped_epoch_reports_the_mean_loss_of_its_steps():
    x, labels = torch.randn(64, 8), torch.arange(64) % 2
    loader = DataLoader(TensorDataset(x, labels), batch_size=16)  # 4 batches, 3 of them trained
    model = nn.Linear(8, 2)
    h = fit(model, loader, epochs=1, lr=0.0, weight_decay=0.0, max_steps=3, progress=False)
    first_three = DataLoader(TensorDataset(x[:48], labels[:48]), batch_size=16)
    assert h.train_loss[0] == pytest.approx(evaluate(model, first_three)["loss"], rel=1e-6)


def test_weight_decay_reaches_the_optimizer():
    train_loader, val = toy_loaders()
    weights = []
    for decay in (0.0, 0.5):
        model = toy_model()
        fit(model, train_loader, epochs=1, lr=1e-2, weight_decay=decay, progress=False)
        weights.append(model[0].weight.detach().clone())
    assert weights[1].norm() < weights[0].norm()


def test_bf16_training_runs_its_steps_under_autocast():
    model = Recording()
    loader = [(torch.randn(4, 8), torch.tensor([0, 1, 0, 1]))] * 2
    fit(model, loader, loader, epochs=1, precision="bf16", progress=False)
    assert model.dtypes == [torch.bfloat16] * 4  # two training steps, then two validation batches


def test_the_progress_bar_shows_the_epoch_and_its_running_loss(capsys):
    train_loader, _ = toy_loaders()
    h = fit(toy_model(), train_loader, epochs=2, lr=1e-2)  # the bar is on by default
    shown = capsys.readouterr().err.split("\r")[-1]
    assert "training: 100%" in shown and f"epoch=2, loss={h.train_loss[-1]:.3f}" in shown, shown


def test_an_empty_training_loader_is_named():
    with pytest.raises(ValueError, match="^the training loader is empty: nothing to train on$"):
        fit(toy_model(), [], epochs=1, progress=False)


def test_the_first_epoch_reaching_the_best_accuracy_is_kept_with_its_own_weights():
    train_loader, _ = toy_loaders()
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(64) % 2
    easy = DataLoader(TensorDataset(torch.randn(64, 8, generator=g) + 10 * (2 * labels[:, None] - 1), labels),
                      batch_size=32)  # far apart: every epoch scores 100%
    whole = toy_model()
    h = fit(whole, train_loader, easy, epochs=3, lr=1e-2, progress=False)
    assert h.val_acc == [1.0, 1.0, 1.0] and h.best_epoch == 0
    assert h.val_loss[0] == pytest.approx(evaluate(whole, easy)["loss"], rel=1e-6)
    first = toy_model()  # the same run stopped after its first epoch holds that epoch's weights
    fit(first, InterruptAt(train_loader, epoch=2, batch=0), easy, epochs=3, lr=1e-2, progress=False)
    for a, b in zip(whole.state_dict().values(), first.state_dict().values()):
        assert torch.equal(a, b)
    assert all(0 < t < 600 for t in h.epoch_time)


def test_ctrl_c_says_what_it_kept(capsys):
    train_loader, val = toy_loaders()
    fit(toy_model(), InterruptAt(train_loader, epoch=3, batch=0), val, epochs=3, progress=False)
    assert "Interrupted after 2 finished epoch(s); keeping what was learned so far." in capsys.readouterr().out


def test_a_resumed_run_keeps_the_interrupted_runs_precision(tmp_path):
    ckpt, loader = tmp_path / "run.pt", [(torch.randn(4, 8), torch.tensor([0, 1, 0, 1]))] * 2
    fit(Recording(), InterruptAt(loader, epoch=2, batch=0), epochs=2, precision="bf16", checkpoint=ckpt,
        progress=False)
    resumed = Recording()
    fit(resumed, loader, epochs=2, precision="bf16", checkpoint=ckpt, resume=True, progress=False)
    assert resumed.dtypes == [torch.bfloat16] * 2


def test_no_bar_is_drawn_when_progress_is_off_and_validation_shows_on_it(capsys):
    train_loader, val = toy_loaders()
    fit(toy_model(), train_loader, val, epochs=1, progress=False)
    assert capsys.readouterr().err == ""
    h = fit(toy_model(), train_loader, val, epochs=2)
    shown = capsys.readouterr().err.split("\r")[-1]
    assert f"epoch=2, val_acc={h.val_acc[-1]:.4f}" in shown, shown
