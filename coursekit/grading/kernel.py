"""A submission's kernel, as the grader drives it: cells run one by one, limits, restarts, answers read back.

:class:`Runner` starts a kernel (in the sandbox of :mod:`coursekit.grading.sandbox`, or unsandboxed when
told) and runs one cell at a time with a time limit per cell and one for the whole notebook. A cell
over its limit is interrupted; a kernel that does not stop, or dies, is replaced by a fresh one that
runs again every cell that had worked, so later tasks still run. Only a cell's errors are kept:
what it prints or shows is never graded. :func:`read_answer` reads the file in which the kernel
hands an answer over, as plain data only. What to run and how to score it is :mod:`coursekit.grading.grade`'s.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import time
import zipfile
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete, CellTimeoutError, DeadKernelError
from nbclient.util import run_sync

from . import sandbox
from ..config import DATA_ENV

MAX_ANSWER_BYTES = 256 * 2**20  # a handed-over answer larger than this is refused
MAX_PICKLE_BYTES = 8 * 2**20  # its pickle (all but the tensors' bytes): a ViT's state dict needs a few KB

_QUIET = logging.getLogger("coursekit.grading.kernel")  # nbclient's timeout messages: the report says it
_QUIET.setLevel(logging.CRITICAL)


class _Client(NotebookClient):
    """Reads only what grading needs from a kernel's messages: that a cell finished, and its first
    error, cut short. What a cell prints or shows is never graded, and a submission can send any
    message (a widget's comm with no data, a reply of the wrong shape): every other message is
    dropped here, before any of nbclient's handlers could raise on it or keep it in memory."""

    def process_message(self, msg, cell, cell_index):
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, dict):
            return None
        if msg.get("msg_type") == "status" and content.get("execution_state") == "idle":
            raise CellExecutionComplete()
        if msg.get("msg_type") != "error" or any(o.get("output_type") == "error" for o in cell.outputs):
            return None
        short = {"ename": str(content.get("ename"))[:100], "evalue": str(content.get("evalue"))[:1000],
                 "traceback": []}
        return self.output(cell.outputs, {**msg, "content": short}, None, cell_index)


def _error_of(cell) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename')}: {str(out.get('evalue'))[:200]}"
    return None


class Runner:
    """Executes cells one by one in a kernel of its own, with per-cell and total limits.

    limits: the sandbox's (:class:`coursekit.grading.sandbox.Limits`), or None to run the kernel unsandboxed
    with environment ``env``. data: the data folder the kernel reads (its ``COURSEKIT_DATA``).
    """

    def __init__(self, nb, timeout: float, total: float, workdir: str, env: dict,
                 limits: sandbox.Limits | None, data: Path):
        self.nb, self.workdir, self.limits, self.data = nb, workdir, limits, data
        self.env = dict(env, **{DATA_ENV: str(data)})
        self.timeout, self.deadline = timeout, time.monotonic() + total
        self.replay: list = []  # cells that ran without error, run again in a restarted kernel
        self.starts = 0
        self.broken: str | None = None  # why no cell can run any more (no kernel could be restarted)
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.starts += 1
        km = None
        if self.limits is not None:
            km = sandbox.kernel_manager(Path(self.workdir, f"kernel-{self.starts}"), self.limits, self.data)
        self.client = _Client(self.nb, km=km, timeout=int(self.timeout), kernel_name="python3",
                              allow_errors=True, interrupt_on_timeout=False, record_timing=False,
                              store_widget_state=False, resources={"metadata": {"path": self.workdir}},
                              log=_QUIET)
        if km is None:
            self.client.km = self.client.create_kernel_manager()
        # in a session of its own; what it prints outside cells (its banner, a flood) goes nowhere
        self.client.start_new_kernel(env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client.start_new_kernel_client()
        if km is not None:
            km.seal()

    @property
    def exchange(self) -> Path:
        """The folder the kernel reads its inputs from and writes its answers to."""
        km = self.client.km
        return km.sockets if self.limits is not None else Path(self.workdir)

    def answer_file(self, path: Path) -> None:
        """Make the file the kernel hands an answer over in (a sealed sandbox cannot make files)."""
        if self.limits is not None:
            self.client.km.answer_file(path)

    def close(self) -> None:
        """Stop the kernel for good (SIGKILL: a submission may ignore gentler signals), and its cgroups."""
        client = getattr(self, "client", None)
        km = getattr(client, "km", None)
        try:
            if client is not None and client.kc is not None:
                client.kc.stop_channels()
        finally:
            process = getattr(getattr(km, "provisioner", None), "process", None)
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=30)
            if getattr(km, "cage", None) is not None:
                km.cage.remove()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, cell, limit: float | None = None) -> str | None:
        """Run one cell: None if fine, else why not (its error, or a time limit)."""
        if self.broken:
            return self.broken
        limit = min(limit or self.timeout, self.left())
        if limit <= 1:
            return "not run: the total time limit of the notebook was reached"
        self.client.timeout = int(limit)
        try:
            self.client.execute_cell(cell, 0)
        except CellTimeoutError:
            self._recover()
            return f"timed out after {int(limit)} s and was interrupted"
        except DeadKernelError:
            self._restart()
            return "the kernel died (out of memory?) and was restarted"
        except Exception as error:  # a reply of a shape no kernel sends unless told to: a new kernel
            self._restart()
            return (f"the kernel sent a message the grader does not accept ({type(error).__name__}) "
                    "and was restarted")
        return _error_of(cell)

    def _recover(self) -> None:
        """Interrupt the cell; if the kernel does not answer within 15 s, start a new one."""
        run_sync(self.client.km.interrupt_kernel)()
        self.client.timeout = 15
        try:
            self.client.execute_cell(nbformat.v4.new_code_cell("pass"), 0)
        except Exception:
            self._restart()

    def _restart(self) -> None:
        """A fresh kernel that re-runs every cell that had worked, so that later tasks still run.
        If none starts, every later cell is refused with the reason (:attr:`broken`)."""
        self.close()
        try:
            self._start()
        except Exception as error:
            self.broken = f"not run: no new kernel could be started ({type(error).__name__})"
            return
        for cell in self.replay:
            self.client.timeout = int(max(1, min(self.timeout, self.left())))
            try:
                self.client.execute_cell(nbformat.v4.new_code_cell(cell.source), 0)
            except Exception:  # it timed out, died or misbehaved again: later cells say so
                return


def read_answer(path: Path):
    """The answer file the kernel wrote: a plain file (no link), of bounded size, plain data only."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block us
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ANSWER_BYTES:
            raise ValueError(f"the answer file is not a plain file of at most {MAX_ANSWER_BYTES >> 20} MB")
        if info.st_size == 0:  # made by the grader, never written
            return None
        _check_archive(file)
        file.seek(0)
        answer = torch.load(file, weights_only=True)
    _check_sizes(answer)
    return answer


def _check_archive(file) -> None:
    """``ValueError`` unless ``file`` is what ``torch.save`` writes, whose every byte is bounded before
    it is read: a zip archive of entries stored as they are (a 2 MB file of compressed entries could
    unpack to gigabytes), at most :data:`MAX_ANSWER_BYTES` in all, its pickle at most
    :data:`MAX_PICKLE_BYTES` (the objects it builds grow with it)."""
    try:
        entries = zipfile.ZipFile(file).infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise ValueError("the answer file is not one torch.save writes (a zip archive)") from None
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries):
        raise ValueError("the answer file holds compressed entries; torch.save stores them as they are")
    if sum(e.file_size for e in entries) > MAX_ANSWER_BYTES:
        raise ValueError(f"the answer file unpacks to more than {MAX_ANSWER_BYTES >> 20} MB")
    if any(e.filename.endswith(".pkl") and e.file_size > MAX_PICKLE_BYTES for e in entries):
        raise ValueError(f"the answer's pickle is over {MAX_PICKLE_BYTES >> 20} MB; answers are tensors, "
                         "numbers and short lists")


def _check_sizes(answer) -> None:
    """``ValueError`` if the tensors in ``answer`` claim more data than an answer file may hold.

    A tensor saved as a view (``torch.zeros(1).expand(10**9)``) loads with its tiny storage, but
    comparing or copying it would make the full size: refuse such answers before any of that.
    """
    seen, todo, total = 0, [answer], 0
    while todo:
        x = todo.pop()
        seen += 1
        if seen > 1_000_000:
            raise ValueError("the answer holds too many items")
        if isinstance(x, torch.Tensor):
            total += x.numel() * x.element_size()
            if total > MAX_ANSWER_BYTES:
                raise ValueError(f"the answer's tensors claim more than {MAX_ANSWER_BYTES >> 20} MB")
        elif isinstance(x, dict):
            todo.extend(x.values())
        elif isinstance(x, (list, tuple)):
            todo.extend(x)
