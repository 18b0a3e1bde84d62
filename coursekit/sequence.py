"""A sequence task whose attention you can read: reverse a string of digits.

A tiny encoder-decoder transformer, assembled from ``coursekit.attention``: the encoder reads the
digits, the decoder writes them back in reverse order, one at a time. Trained with teacher forcing
(the decoder reads the true previous digits, hidden from the future by the causal mask of notebook
01), scored by greedy decoding (it reads its own previous digits). To reverse, output position t
must fetch input position L - 1 - t, so its cross-attention should draw an anti-diagonal: a map you
can check by eye. Without positional encodings the encoder cannot tell the positions apart
(notebook 02's permutation test), so the model cannot learn the task.

Tokens: the digits 0-9, and ``BOS`` (10) which starts every decoder input.

Training and decoding run on one CPU thread (:func:`one_thread`): the model is so small that a step
is mostly per-operation overhead, which threads cannot split, and on a busy machine a second thread
waits for a core. Measured on the course's 2-core machine with other jobs running (load average 3.5,
60 steps, twice): 34-74 ms per training step on one thread, 206-223 ms on two. One thread also makes
a seeded run independent of the thread count it is called with.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .attention import MultiHeadAttention, sinusoidal_positional_encoding
from .train import eval_mode

DIGITS, BOS = 10, 10


def reversal_data(n_train: int, n_test: int, length: int = 10, seed: int = 0):
    """Return ``(train, test)``, each ``(src, tgt)`` of random digit strings and their reversals.

    src, tgt: [n, length] int64 in 0..9, tgt = src.flip(1). Every string occurs once, and no test
    string is in the training set (held out). The same ``seed`` gives the same data.
    """
    if n_train < 1 or n_test < 1 or not 1 <= length <= 18:
        raise ValueError(f"n_train={n_train} and n_test={n_test} must be at least 1 and length={length} "
                         "between 1 and 18 (a string is kept as one 64-bit integer)")
    if n_train + n_test > 10 ** length // 2:
        raise ValueError(f"{n_train + n_test} distinct strings of {length} digits are too many "
                         f"(at most {10 ** length // 2}); use fewer or longer strings")
    g = torch.Generator().manual_seed(seed)
    codes: dict[int, None] = {}  # insertion-ordered set: drawn order, no duplicates
    while len(codes) < n_train + n_test:
        codes.update(dict.fromkeys(torch.randint(0, 10 ** length, (n_train + n_test,), generator=g).tolist()))
    codes = torch.tensor(list(codes)[: n_train + n_test])
    powers = 10 ** torch.arange(length - 1, -1, -1)
    src = codes[:, None] // powers % 10                           # [n, length], most significant first
    return (src[:n_train], src[:n_train].flip(1)), (src[n_train:], src[n_train:].flip(1))


@contextlib.contextmanager
def one_thread():
    """Run the block with one torch thread, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def causal_mask(n: int) -> torch.Tensor:
    """[n, n] bool, True on and below the diagonal: query t may look at keys 0..t (notebook 01)."""
    return torch.ones(n, n, dtype=torch.bool).tril()


class EncoderLayer(nn.Module):
    """Pre-norm encoder layer. x: [B, N, D] -> [B, N, D]; keeps ``self.weights`` [B, H, N, N]."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, num_heads)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x):
        h = self.norm1(x)
        a, self.weights = self.attn(h, h, h)
        x = x + a
        return x + self.ff(self.norm2(x))


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: causal self-attention, cross-attention to the encoder, feed-forward.

    y: [B, T, D] (the decoder's tokens), memory: [B, N, D] (the encoder's output) -> [B, T, D].
    Keeps ``self.self_weights`` [B, H, T, T] and ``self.cross_weights`` [B, H, T, N].
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.self_attn = MultiHeadAttention(d_model, num_heads)
        self.cross_attn = MultiHeadAttention(d_model, num_heads)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, y, memory):
        h = self.norm1(y)
        a, self.self_weights = self.self_attn(h, h, h, mask=causal_mask(y.shape[1]).to(y.device))
        y = y + a
        h = self.norm2(y)                                   # queries from the decoder,
        a, self.cross_weights = self.cross_attn(h, memory, memory)  # keys and values from the encoder
        y = y + a
        return y + self.ff(self.norm3(y))


class Seq2Seq(nn.Module):
    """Encoder-decoder transformer over digit strings of at most ``max_len`` tokens.

    positions: add the sinusoidal encoding to the tokens of both the encoder and the decoder (False:
    the model sees no order, except what the decoder's causal mask lets it count).
    """

    def __init__(self, d_model: int = 32, num_heads: int = 2, d_ff: int = 64, num_layers: int = 1,
                 max_len: int = 16, positions: bool = True):
        super().__init__()
        self.max_len, self.positions = max_len, positions
        self.embed = nn.Embedding(DIGITS + 1, d_model)      # digits and BOS
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model), persistent=False)
        self.encoder = nn.ModuleList(EncoderLayer(d_model, num_heads, d_ff) for _ in range(num_layers))
        self.decoder = nn.ModuleList(DecoderLayer(d_model, num_heads, d_ff) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, DIGITS)              # the decoder never writes BOS

    def tokens(self, ids):
        """ids: [B, N] int -> [B, N, D] embeddings (+ positions)."""
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise ValueError(f"expected token ids [B, N] of dtype int64, got {tuple(ids.shape)} {ids.dtype}")
        if ids.shape[1] > self.max_len:
            raise ValueError(f"{ids.shape[1]} tokens but max_len={self.max_len}; "
                             "build Seq2Seq(max_len=...) larger")
        if ids.numel() and (ids.min() < 0 or ids.max() > BOS):
            raise ValueError(f"token ids must be digits 0-9 or BOS={BOS}, got {ids.min()}..{ids.max()}")
        x = self.embed(ids)
        return x + self.pe[: ids.shape[1]] if self.positions else x

    def forward(self, src, tgt_in):
        """Logits [B, T, 10] for the next digit at each decoder position.

        src: [B, N] digits; tgt_in: [B, T], BOS then the first T - 1 output digits (teacher forcing).
        """
        if src.shape[0] != tgt_in.shape[0]:
            raise ValueError(f"src {tuple(src.shape)} and tgt_in {tuple(tgt_in.shape)} "
                             "must share the batch size")
        memory = self.tokens(src)
        for layer in self.encoder:
            memory = layer(memory)
        y = self.tokens(tgt_in)
        for layer in self.decoder:
            y = layer(y, memory)
        return self.head(self.norm(y))


def teacher_input(tgt):
    """[B, T] targets -> [B, T] decoder input: BOS, then tgt shifted right by one."""
    return torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], dim=1)


@torch.no_grad()
def greedy_decode(model: Seq2Seq, src, length: int | None = None):
    """[B, length] digits written one at a time, each the most likely given the ones before.

    src: [B, N]; length defaults to N (a reversal is as long as its input).
    """
    out = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
    with one_thread(), eval_mode(model):
        for _ in range(length or src.shape[1]):
            out = torch.cat([out, model(src, out)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out[:, 1:]


def evaluate(model: Seq2Seq, src, tgt, batch_size: int = 1000) -> dict:
    """``{"seq_acc", "token_acc"}`` of greedy decoding: whole strings right, and single digits right."""
    if src.shape != tgt.shape or len(src) == 0:
        raise ValueError(f"src {tuple(src.shape)} and tgt {tuple(tgt.shape)} "
                         "must be the same, non-empty shape")
    right = torch.cat([greedy_decode(model, s) == t for s, t in
                       zip(src.split(batch_size), tgt.split(batch_size))])  # [n, length] bool
    return {"seq_acc": right.all(1).float().mean().item(), "token_acc": right.float().mean().item()}


def train(model: Seq2Seq, src, tgt, steps: int = 600, batch_size: int = 128, lr: float = 3e-3,
          seed: int = 0, progress: bool = True) -> list:
    """Train with teacher forcing, AdamW and a one-cycle schedule; return the loss of every step.

    src, tgt: [n, L] digits. Batches are drawn in a random order fixed by ``seed``: with the same
    seed and the same initial weights, a CPU run repeats exactly. Runs on one thread (see above).
    """
    if src.shape != tgt.shape or src.dim() != 2:
        raise ValueError(f"src {tuple(src.shape)} and tgt {tuple(tgt.shape)} must both be [n, L]")
    if steps < 1 or batch_size < 1 or batch_size > len(src):
        raise ValueError(f"steps={steps} must be at least 1 and batch_size={batch_size} between 1 and "
                         f"the {len(src)} training strings")
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    losses, per_pass = [], len(src) // batch_size
    with one_thread():
        for step in tqdm(range(steps), desc="training", unit="step", disable=not progress):
            if step % per_pass == 0:                        # a new pass over the data: reshuffle
                order = torch.randperm(len(src), generator=g)
            idx = order[step % per_pass * batch_size:][:batch_size]
            logits = model(src[idx], teacher_input(tgt[idx]))  # [B, L, 10]
            loss = F.cross_entropy(logits.flatten(0, 1), tgt[idx].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def attention_maps(model: Seq2Seq, src) -> dict:
    """The attention weights of the model as it reverses ``src`` [B, N] by greedy decoding.

    Returns ``{"output": [B, T], "encoder": [layers, B, H, N, N], "decoder": [layers, B, H, T, T],
    "cross": [layers, B, H, T, N]}``: rows are queries, columns keys; cross: rows are output
    positions, columns input positions. The decoder reads its own greedy output, as when it decodes.
    """
    out = greedy_decode(model, src)
    model(src, teacher_input(out))
    return {"output": out,
            "encoder": torch.stack([layer.weights for layer in model.encoder]),
            "decoder": torch.stack([layer.self_weights for layer in model.decoder]),
            "cross": torch.stack([layer.cross_weights for layer in model.decoder])}
