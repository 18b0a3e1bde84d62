"""The sandbox a submission's kernel runs in: bubblewrap, an unprivileged user, no network, limits.

The grader (:mod:`coursekit.grading.grade`) starts every kernel through :class:`SandboxedKernelManager`. Inside
the sandbox the kernel sees:

- read-only: the system folders (``/usr``, ``/etc``, ...), the Python installation and its
  site-packages, the ``coursekit`` package, and the data folder the grader made for it (the training
  images, no test image: :func:`coursekit.grading.tasks.make_kernel_data`); nothing else of the host (no home
  folder, no repository, no other submission, no grades);
- writable and private, gone when the kernel stops: its work folder ``/home/student``, ``/tmp`` and
  ``/dev/shm``, each a size-limited tmpfs, and the folder of its own connection sockets;
- its own PID namespace (it sees no other process, and everything it starts dies with it), no
  network (the grader talks to it over Unix sockets: jupyter_client's ``transport="ipc"``), an
  environment made from scratch (no variable of the grader's leaks in);
- limits (:class:`Limits`): memory, processes, file size, CPU threads. As root the memory limit is
  a cgroup's (:class:`Cage`), which counts everything the kernel holds, shared memory and its tmpfs
  folders too; as another user it is an address-space limit, which counts neither.

It runs as an unprivileged user with no capabilities: as root, bubblewrap's child drops with
``setpriv`` to a user id of its own (:func:`kernel_uid`: no other process on the machine has it, so
the process limit is its alone), and a read-only bind cannot be remounted writable; as any other user,
bubblewrap maps the user to ``nobody`` (65534) in a user namespace and drops every capability itself.
Messages from the kernel larger than :attr:`Limits.message_mb` are dropped, and at most
:attr:`Limits.queued` wait per channel, so no message (output, widget comm, reply) can fill the
grader's memory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
from jupyter_client.manager import AsyncKernelManager

from ..config import CACHE_ENV, DATA_ENV, FAST_ENV, is_fast

NOBODY = 65534  # the user a kernel runs as in a user namespace (the grader not run as root)
UID_BASE = 1_900_000_000  # as root: a kernel's user id is this plus the grading process's PID
HOME = "/home/student"  # the kernel's private work folder
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc")  # read-only, where they exist


@dataclass(frozen=True)
class Limits:
    """What one kernel may use. The defaults fit the homework in normal mode with room to spare."""

    memory_gb: float = 8.0  # as root: all the memory it holds (a cgroup: RAM, shared memory, its tmpfs
    # folders); otherwise its address space (RLIMIT_AS), in which importing torch reserves about 4 GB
    processes: int = 512  # processes and threads of the sandbox user (RLIMIT_NPROC)
    file_mb: int = 512  # the largest file it may write (RLIMIT_FSIZE)
    disk_mb: int = 1024  # size of each of its tmpfs folders, /home/student and /tmp
    threads: int = 1  # CPU threads for torch and OpenMP: the same for every kernel, so that training
    # gives the same numbers however many submissions are graded at once
    message_mb: int = 4  # a message from the kernel larger than this is dropped (an output flood)
    queued: int = 64  # messages waiting to be read, per channel: with message_mb, what a flood can hold


class SandboxError(Exception):
    """No working sandbox here: the message names what is missing and how to get it."""


def kernel_uid() -> int:
    """The user id this process's kernels run as: as root, one of their own (a uid no account has,
    from this process's PID, so no two graders running at once share it, nor its process limit);
    otherwise ``nobody`` inside a user namespace."""
    return UID_BASE + os.getpid() if os.geteuid() == 0 else NOBODY


def _readonly_paths(data: Path) -> list[Path]:
    """The host folders the kernel needs to read: Python, its packages, coursekit, its data."""
    import coursekit

    paths = {Path(sys.base_prefix), Path(sys.prefix), Path(coursekit.__file__).parent, data}
    paths |= {Path(p) for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    paths = {p.resolve() for p in paths if p.exists()}
    # a folder inside another one already bound needs no bind of its own
    return sorted(p for p in paths if not any(q != p and q in p.parents for q in paths))


def _parents(paths) -> list[Path]:
    """Every folder above ``paths`` that bubblewrap must create, top first."""
    out = set()
    for p in paths:
        out |= {q for q in p.parents if q != Path("/")}
    return sorted(out, key=lambda q: len(q.parts))


def kernel_environment(limits: Limits, data: Path, fast: bool | None = None) -> dict:
    """The kernel's whole environment, made from scratch: nothing of the grader's leaks in."""
    import coursekit

    threads = str(limits.threads)
    return {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": HOME,
            "TMPDIR": "/tmp", "LANG": "C.UTF-8", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": str(Path(coursekit.__file__).parent.parent.resolve()),
            DATA_ENV: str(data.resolve()), CACHE_ENV: "/tmp/coursekit-cache",
            FAST_ENV: "1" if (is_fast() if fast is None else fast) else "0",
            "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


class Cage:
    """The memory and process cgroups of one kernel (as root): every byte it holds counts, shared
    memory (``memfd_create``, ``/dev/shm``) and its tmpfs folders included, and no process of the
    machine's other kernels shares its process limit.

    Made as a child of this process's own cgroup under cgroup v1 (one folder per controller), or as a
    sibling of it under cgroup v2 (where a cgroup that holds processes cannot enable controllers for
    children). :attr:`folders` is empty where neither works (not root, no writable cgroup folder):
    the kernel then has only the address-space limit.
    """

    def __init__(self, limits: Limits, name: str):
        self.folders: list[Path] = []
        if os.geteuid() != 0:
            return
        memory = int(limits.memory_gb * 2**30)
        settings = {"memory.limit_in_bytes": memory, "memory.memsw.limit_in_bytes": memory,  # v1, no swap
                    "memory.max": memory, "memory.swap.max": 0, "pids.max": limits.processes}  # v2; both
        for base in _cgroup_bases():
            _remove_orphans(base)
            folder = base / name
            try:
                folder.mkdir()
                self.folders.append(folder)
                for key, value in settings.items():  # each folder has only its controllers' files
                    if (folder / key).exists():
                        (folder / key).write_text(str(value))
            except OSError:
                self.remove()
                return
        wanted = {"memory.limit_in_bytes", "memory.max"}
        if not any((f / k).exists() for f in self.folders for k in wanted):
            self.remove()

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` started inside the cgroups: a shell writes its PID into each, then becomes ``argv``."""
        if not self.folders:
            return argv
        joins = " && ".join(f"echo $$ > {shlex.quote(str(f / 'cgroup.procs'))}" for f in self.folders)
        return ["sh", "-c", f'{joins} && exec "$@"', "coursekit-cage", *argv]

    def remove(self) -> None:
        """Kill what is left inside and remove the folders (a cgroup folder goes only once empty)."""
        for folder in self.folders:
            for _ in range(50):
                try:
                    pids = (folder / "cgroup.procs").read_text().split()
                    for pid in pids:
                        with contextlib.suppress(OSError):
                            os.kill(int(pid), signal.SIGKILL)
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
        self.folders = []


def _remove_orphans(base: Path) -> None:
    """Remove the empty cgroups of graders that were killed before they could (a batch's worker
    stopped at its time limit): named ``coursekit-kernel-<pid>-...`` after a process that is gone."""
    for folder in base.glob("coursekit-kernel-*-*"):
        try:
            os.kill(int(folder.name.split("-")[2]), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                folder.rmdir()
        except (ValueError, OSError):
            pass


def _cgroup_bases() -> list[Path]:
    """Where this process may make a kernel's cgroups: one folder per controller (v1), or one (v2)."""
    mine = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):  # v2's line "0::/path" gives the controller ""
            mine[controller] = path.lstrip("/")
    root = Path("/sys/fs/cgroup")
    v1 = [root / c / mine[c] for c in ("memory", "pids") if c in mine and (root / c / "cgroup.procs").exists()]
    if v1:
        return [p for p in v1 if os.access(p, os.W_OK)]
    if "" in mine and (root / "cgroup.controllers").exists():  # v2: a sibling of our own cgroup
        own = root / mine[""]
        base = own.parent if own != root else root
        if "memory" in (base / "cgroup.subtree_control").read_text().split() and os.access(base, os.W_OK):
            return [base]
    return []


def command(argv: list[str], sockets: Path, limits: Limits, env: dict, data: Path,
            caged: bool = False) -> list[str]:
    """``argv`` (the kernel's command) wrapped in bubblewrap, limits and a drop to the sandbox user.

    sockets: the one host folder the kernel may write (its connection file and Unix sockets), bound
    at the same path; data: the data folder it may read (the grader's,
    :func:`coursekit.grading.tasks.make_kernel_data`).
    caged: it will run in a :class:`Cage`, whose memory limit replaces the
    address-space limit.
    """

    readonly = _readonly_paths(data)
    cmd = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
           "--unshare-cgroup-try", "--die-with-parent", "--proc", "/proc", "--dev", "/dev"]
    if os.geteuid() != 0:
        cmd += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    for path in SYSTEM:
        if Path(path).exists():
            cmd += ["--ro-bind", path, path]
    size = str(limits.disk_mb * 2**20)
    cmd += ["--size", size, "--perms", "1777", "--tmpfs", "/dev/shm"]  # else half the machine's memory
    cmd += ["--size", size, "--perms", "1777", "--tmpfs", "/tmp"]  # first: folders below it go into it
    for folder in _parents([*readonly, sockets, Path(HOME)]):  # else bwrap makes them mode 0700
        if str(folder) not in SYSTEM and str(folder) != "/tmp":
            cmd += ["--perms", "0755", "--dir", str(folder)]
    cmd += ["--size", size, "--perms", "0777", "--tmpfs", HOME]
    for path in readonly:
        cmd += ["--ro-bind", str(path), str(path)]
    grader = Path(__file__).parent.resolve()  # this folder, coursekit/grading: its code and its bytecode
    cmd += ["--perms", "0555", "--tmpfs", str(grader)]  # an empty, read-only folder: nothing to import
    cmd += ["--bind", str(sockets), str(sockets), "--chdir", HOME, "--clearenv"]
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    memory = [] if caged else [f"--as={int(limits.memory_gb * 2**30)}"]
    cmd += ["--", "prlimit", *memory, f"--nproc={limits.processes}", f"--fsize={limits.file_mb * 2**20}",
            "--core=0", "--"]
    if os.geteuid() == 0:  # root keeps its capabilities inside bwrap: drop them and the uid for good
        uid = kernel_uid()
        cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--no-new-privs", "--"]
    return cmd + list(argv)


def problem() -> str | None:
    """Why no sandbox can run here (None when one can): a missing program, or namespaces refused."""
    if not sys.platform.startswith("linux"):
        return (f"the sandbox needs Linux (bubblewrap); this is {sys.platform}: grade inside a Linux "
                "container (docs/instructors.md, 'On macOS or Windows')")
    needed = ["bwrap", "prlimit"] + (["setpriv"] if os.geteuid() == 0 else [])
    missing = [p for p in needed if shutil.which(p) is None]
    if missing:
        return (f"{', '.join(missing)} not found: install bubblewrap and util-linux "
                "(Debian/Ubuntu: apt-get install bubblewrap util-linux)")
    try:
        with tempfile.TemporaryDirectory(prefix="coursekit-probe-") as folder:
            probe = command([sys.executable, "-c", "import os; print(os.getuid())"], Path(folder),
                            Limits(), {"PATH": "/usr/bin:/bin"}, Path(folder))
            done = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap could not start a sandbox: {error}"
    if done.returncode != 0 or done.stdout.strip() != str(kernel_uid()):
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return (f"bubblewrap could not start a sandbox ({why}); it needs user, network and PID "
                "namespaces (on some systems: sysctl kernel.unprivileged_userns_clone=1)")
    return None


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager that starts its kernel inside the sandbox, talking over Unix sockets.

    Give it ``sockets`` (a new, empty folder), ``limits``, ``sandbox_env`` and ``data`` before starting.
    """

    sockets: Path
    limits: Limits
    sandbox_env: dict
    data: Path
    cage: Cage

    def format_kernel_cmd(self, extra_arguments=None) -> list[str]:
        return self.cage.wrap(command(super().format_kernel_cmd(extra_arguments), self.sockets, self.limits,
                                      self.sandbox_env, self.data, caged=bool(self.cage.folders)))

    def client(self, **kwargs):
        kc = super().client(**kwargs)
        # for every socket it opens: a larger message is dropped, and few wait to be read, so no
        # message of any type (outputs, comms, replies) can fill the grader's memory
        kc.context.setsockopt(zmq.MAXMSGSIZE, self.limits.message_mb * 2**20)
        kc.context.setsockopt(zmq.RCVHWM, self.limits.queued)
        return kc

    def seal(self) -> None:
        """Once the kernel has made its sockets: take the folder back (as root), so that the kernel can
        write only the answer files the grader makes for it (:meth:`answer_file`), not fill the disk."""
        if os.geteuid() == 0:
            os.chown(self.sockets, 0, 0)
            os.chmod(self.sockets, 0o755)

    def answer_file(self, path: Path) -> None:
        """Make the empty file ``path`` in the sockets folder, which the kernel may write."""
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        if os.geteuid() == 0:
            os.chown(path, kernel_uid(), kernel_uid())


def kernel_manager(sockets: Path, limits: Limits, data: Path, fast: bool | None = None) -> SandboxedKernelManager:
    """A :class:`SandboxedKernelManager` whose connection file and sockets live in ``sockets``, and
    whose kernel reads the data folder ``data``."""
    sockets.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(sockets, kernel_uid(), kernel_uid())  # the kernel creates its sockets there
    km = SandboxedKernelManager(kernel_name="python3", transport="ipc", ip=str(sockets / "kernel"),
                                connection_file=str(sockets / "connection.json"))
    km.sockets, km.limits, km.data = sockets, limits, data
    km.sandbox_env = kernel_environment(limits, data, fast)
    km.cage = Cage(limits, f"coursekit-kernel-{os.getpid()}-{secrets.token_hex(4)}")
    # a signal to the process group would stop bubblewrap itself: interrupt by a message instead
    km.kernel_spec.interrupt_mode = "message"
    km.write_connection_file()
    if os.geteuid() == 0:
        os.chown(km.connection_file, kernel_uid(), kernel_uid())
    return km
