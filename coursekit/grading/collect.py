"""What the grader runs inside a submission's kernel: hand each task's raw answer over as plain data.

It knows no task by name: each task's snippet lives in the registry
(:data:`coursekit.grading.tasks.TASKS`). The injected code loads the grader's inputs, runs the snippet
(which calls the learner's function or reads the learner's variable), turns the answer into
tensors, numbers, strings, lists and dicts (what ``torch.load(weights_only=True)`` reads back),
saves it to a file the grader chose, and removes itself from the kernel. No points are computed in the kernel:
:mod:`coursekit.grading.grade` scores the
answers in its own process.
"""

from __future__ import annotations

import secrets

# Runs in the submission's kernel: turn an answer into plain data that torch.load(weights_only) reads.
_PRELUDE = '''
def _plain(x, depth=0):
    import torch, numbers
    if depth > 4:
        return "<too deep>"
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().clone()
    if isinstance(x, (bool, int, float, str)) or x is None:
        return x
    if isinstance(x, numbers.Real):
        return float(x)
    if isinstance(x, dict):  # a state dict of a 64-layer ViT has about 800 entries
        return {str(k): _plain(v, depth + 1) for k, v in list(x.items())[:10_000]}
    if isinstance(x, (list, tuple)):
        return [_plain(v, depth + 1) for v in list(x)[:10_000]]
    if hasattr(x, "__array__"):
        return torch.as_tensor(x.__array__())
    return f"<{type(x).__name__}>"

def _answer(name, call=None):
    g = globals()
    if name not in g:
        return f"NameError: {name} is not defined"
    try:
        return _plain(call(g[name]) if call else g[name])
    except BaseException as e:
        return f"{type(e).__name__}: {e}"
'''


def collector_source(snippet: str, inputs_path: str, out_path: str) -> str:
    """The code injected after a task: load the grader's inputs, run ``snippet`` (it sets ``_out``),
    save ``_out`` for the grader, and leave no name behind in the kernel.

    snippet: a task's ``collect`` code from :data:`coursekit.grading.tasks.TASKS`; it may use
    ``_answer(name, call=None)`` and ``_inputs``.
    """
    body = _PRELUDE + "\n" + snippet + f"\ntorch.save(_out, {out_path!r})"  # torch: imported below
    name = f"_grader_{secrets.token_hex(4)}"
    indented = "\n".join("    " + line for line in body.splitlines())
    return (f"def {name}():\n    import torch\n    _inputs = torch.load({inputs_path!r}, weights_only=True)\n"
            f"{indented}\n{name}()\ndel {name}")
