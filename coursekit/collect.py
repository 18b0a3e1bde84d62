"""What the grader runs inside a submission's kernel: hand each task's raw answer over as plain data.

The snippet for a task loads the grader's inputs, calls the learner's function or reads the
learner's variable, turns the result into tensors, numbers, strings, lists and dicts (what
``torch.load(weights_only=True)`` reads back), saves it to a file the grader chose, and removes
itself from the kernel. No points are computed in the kernel: :mod:`coursekit.grade` scores the
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
    if isinstance(x, dict):
        return {str(k): _plain(v, depth + 1) for k, v in list(x.items())[:100]}
    if isinstance(x, (list, tuple)):
        return [_plain(v, depth + 1) for v in list(x)[:100]]
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
# What each task hands over. `_inputs` is what the grader sent; `_out` is written to the file.
_COLLECT = {
    "data": '''
from coursekit.data import get_dataset
_out = {"indices": _answer("examples_per_class",
                           lambda f: f(get_dataset("fashion_mnist", train=False), _inputs["k"]))}''',
    "patchify": '''
_out = {"outputs": [_answer("patchify", lambda f: f(x.clone(), p)) for x, p in _inputs["cases"]]}''',
    "config": '''
_out = {"config": _answer("vit_config"), "n_patches": _answer("n_patches")}''',
    "training": '''
_out = {"vit": _answer("vit", lambda m: m.state_dict()), "cnn": _answer("cnn", lambda m: m.state_dict())}''',
    "comparison": '''
_out = {"rows": _answer("results")}''',
    "attention": '''
_out = {"index": _answer("miss_index"), "attention": _answer("miss_attention")}''',
}


def collector_source(task: str, inputs_path: str, out_path: str) -> str:
    """The snippet injected after a task: load the grader's inputs, save the raw answer, leave no trace."""
    body = _PRELUDE + _COLLECT[task] + f'''
torch.save(_out, {out_path!r})'''  # torch: imported by the wrapper below
    name = f"_grader_{secrets.token_hex(4)}"
    indented = "\n".join("    " + line for line in body.splitlines())
    return (f"def {name}():\n    import torch\n    _inputs = torch.load({inputs_path!r}, weights_only=True)\n"
            f"{indented}\n{name}()\ndel {name}")
