"""Models, data and losses as a user's own module would define them (for ``--model tests.user_models:...``,
``--data ...``, ``--loss ...``, and copied into a temporary folder to test import specs)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset


# ------------------------------------------------------------------ regression
class Reg(nn.Module):
    """A regression MLP: (B, 3) → (B, 1)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 1))

    def forward(self, x):
        return self.net(x)


def regression():
    """Float targets (B, 1): a smooth function of the inputs plus noise."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(96, 3, generator=g)
    y = (torch.sin(X[:, :1]) + 0.5 * X[:, 1:2] * X[:, 2:3] + 0.1 * torch.randn(96, 1, generator=g))
    return X, y


def regression_seq():
    """The same data as a plain nn.Sequential regression net sees it (the input-layer fold applies)."""
    return regression()


def reg_seq():
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))


def log_cosh(out, y):
    """A custom per-example loss: mean log(cosh(f − t)) over the output entries."""
    return torch.log(torch.cosh(out - y.reshape(out.shape))).reshape(len(out), -1).mean(1)


def scalar_loss(out, y):
    """Wrong: a reduced (scalar) loss instead of per-example losses."""
    return (out - y).pow(2).mean()


def constant_loss(out, y):
    """Wrong: does not depend on the output."""
    return (y.reshape(len(y), -1).float() * 0).sum(1) + 1.0


# ------------------------------------------------------------------ two inputs, dict batches
class PairNet(nn.Module):
    """Two inputs, ``a`` (B, 4) and ``b`` (B, 3) (integer ids 0..4 embedded), → 5 classes; returns a dict."""

    def __init__(self):
        super().__init__()
        self.fa = nn.Linear(4, 8)
        self.emb = nn.Embedding(5, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, a, b):
        h = torch.tanh(self.fa(a) + self.emb(b).mean(1))
        return {"logits": self.head(h), "hidden": h}


class _Pairs(Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.a = torch.randn(70, 4, generator=g)
        self.b = torch.randint(0, 5, (70, 3), generator=g)
        self.y = torch.randint(0, 5, (70,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"a": self.a[i], "b": self.b[i], "target": self.y[i]}


def pair_data():
    """A Dataset of dicts {a, b, target}: the target under a non-default key (--target-key target)."""
    return _Pairs()


def pair_tuples():
    """The same examples as (a, b, target) tuples: positional inputs."""
    d = _Pairs()
    return d.a, d.b, d.y


class PairPositional(PairNet):
    """PairNet returning a tuple (logits, hidden): the first element is the output."""

    def forward(self, a, b):
        out = super().forward(a, b)
        return out["logits"], out["hidden"]


@dataclass
class Output:
    """A ModelOutput-like object: the logits as an attribute."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


class ObjectOut(nn.Module):
    """A classifier returning an :class:`Output` object."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)

    def forward(self, x):
        return Output(self.lin(x))


def four_classes():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(40, 3, generator=g)
    return X, torch.randint(0, 4, (40,), generator=g)


# ------------------------------------------------------------------ a HuggingFace-style causal LM
def tiny_gpt2():
    """transformers' GPT-2 from a tiny config (no weights downloaded)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=96, n_positions=32, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


def lm_dicts():
    """``{input_ids, attention_mask, labels}`` batches from zoo:chars (labels = input_ids: the model shifts)."""
    from landscape.zoo.data import chars

    X, _ = chars("all", length=16, n=48)
    return {"input_ids": X, "attention_mask": torch.ones_like(X), "labels": X.clone()}
