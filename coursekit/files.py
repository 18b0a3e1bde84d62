"""Files: the package's one atomic writer, and a removal that nothing left in a folder can stop."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import torch


def save_atomically(obj, path) -> None:
    """Write ``obj`` to a new file beside ``path``, then rename it to ``path``.

    A reader (another process, a run stopped halfway) sees the old file or the new one, never
    half of one. A ``str`` is written as UTF-8 text, ``bytes`` as they are, anything else with
    ``torch.save``. Missing parent folders are made; the file gets the usual permissions (umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as f:  # "x": a new file of our own, never someone else's
            if isinstance(obj, str):
                f.write(obj.encode("utf-8"))
            elif isinstance(obj, bytes):
                f.write(obj)
            else:
                torch.save(obj, f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_tree(folder) -> None:
    """Remove ``folder`` and everything in it, whatever a process left there; never raises.

    A kernel may leave folders without permissions or nested thousands deep, deeper than a path
    can name and than ``shutil.rmtree`` recurses: ``chmod -R`` and ``rm -rf`` handle both.
    """
    folder = Path(folder)
    try:
        for step in (["chmod", "-R", "u+rwX", "--", str(folder)], ["rm", "-rf", "--", str(folder)]):
            subprocess.run(step, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=False)
    except (OSError, subprocess.SubprocessError):  # no such programs: do what Python can
        try:
            shutil.rmtree(folder, ignore_errors=True)
        except RecursionError:
            pass
