import io
import platform
import time

import pytest
import torch
from torch import nn

from coursekit import bench
from coursekit.bench import count_parameters, environment, inference_time_ms, markdown_table


def test_count_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))  # (3*4+4) + (4*2+2) = 26
    assert count_parameters(model) == 26
    model[0].requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 10 and count_parameters(model) == 26


class Sleepy(nn.Module):
    """A model whose forward pass takes 20 ms, whatever the batch."""

    def forward(self, x):
        time.sleep(0.02)
        return x


def test_inference_time_measures_the_forward_pass():
    model = Sleepy().train()
    ms = inference_time_ms(model, (1, 28, 28), batch_size=4, device="cpu", warmup=1,
                           min_run_time=0.2)
    assert 20 <= ms < 40
    assert model.training  # the mode the model came in with is restored


def test_markdown_table():
    rows = [{"model": "CNN", "acc": 0.991, "params": 1199882},
            {"model": "ViT", "acc": 0.98, "params": 123}]
    assert markdown_table(rows) == (
        "| model | acc | params |\n"
        "|---|---:|---:|\n"
        "| CNN | 0.99 | 1,199,882 |\n"
        "| ViT | 0.98 | 123 |")
    assert markdown_table(rows, ["params"]).splitlines()[0] == "| params |"
    assert markdown_table(rows, ["acc"], digits=4).splitlines()[2] == "| 0.9910 |"
    with pytest.raises(ValueError):
        markdown_table([])


def test_environment_names_torch_the_cpu_and_the_threads_in_use(monkeypatch):
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    cpuinfo = "processor\t: 0\nmodel name\t: Test CPU 9000\n"
    monkeypatch.setattr(bench, "open", lambda path: io.StringIO(cpuinfo),
                        raising=False)  # the module's open() reads this instead of /proc/cpuinfo
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        line = environment()
    finally:
        torch.set_num_threads(threads)
    assert line == (f"torch {torch.__version__}, Test CPU 9000, 3 CPU threads, "
                    f"Python {platform.python_version()}")

    def no_cpuinfo(path):
        raise FileNotFoundError(path)
    monkeypatch.setattr(bench, "open", no_cpuinfo, raising=False)  # not Linux: platform's name
    monkeypatch.setattr(bench.platform, "processor", lambda: "")
    monkeypatch.setattr(bench.platform, "machine", lambda: "arm64")
    assert ", arm64, " in environment()
