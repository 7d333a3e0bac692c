"""A small training loop for zoo models on zoo data, saving what the rest of the tool reads.

``train(...)`` writes into ``out_dir``:

* ``init.pt`` -- the weights before the first step (θ₀ for ``landscape interpolate --from``);
* ``final.pt`` -- the weights after the last step (θ_T, ``--checkpoint``/``--to``);
* ``ckpt_00000.pt``, ``ckpt_00025.pt``, ... -- every ``save_every`` optimizer steps, including
  step 0 and the last step, so ``--trajectory 'DIR/ckpt_*.pt'`` covers the whole run;
* ``train.json`` -- the configuration, per-epoch loss/accuracy and the list of files.

Every file is a plain ``state_dict`` of CPU tensors saved with ``torch.save`` (read back with
``weights_only=True``). Runs are reproducible: the model is built under ``torch.manual_seed(seed)``
(as :func:`landscape.problem.load_model` does for every command, so ``--seed`` gives the same θ₀)
and the mini-batches are drawn by a generator seeded with ``seed``.

Optimizers: ``sgd`` (``lr``, ``momentum``, ``weight_decay``; heavy ball,
v ← μv + g, θ ← θ − ηv) and ``adam`` (``lr``, β = (0.9, 0.999), ``weight_decay``). The mean
cross-entropy (or MSE) of a mini-batch is minimized; BatchNorm layers use batch statistics in
training and their running averages (momentum 0.1) in evaluation.

Example:
    >>> import tempfile
    >>> r = train("zoo:mlp", "zoo:synthetic", model_args={"width": 8, "depth": 1}, steps=4, batch_size=32,
    ...           save_every=2, out_dir=tempfile.mkdtemp(), log=None)
    >>> [os.path.basename(c) for c in r.checkpoints]
    ['ckpt_00000.pt', 'ckpt_00002.pt', 'ckpt_00004.pt']
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from . import batches as B
from . import losses as L
from .errors import LandscapeError
from .objective import eval_mode, loss_acc_sums
from .problem import (
    correct_count,
    inputs_for,
    load_checkpoint,
    load_data,
    load_model,
    loss_sum,
    parse_kwargs,
    resolve_device,
    subsample,
)
from .store import make_output_folder

OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainResult:
    out_dir: str
    init: str
    final: str
    checkpoints: list[str]
    steps: int
    final_loss: float
    final_acc: float
    seconds: float
    history: list[dict] = field(default_factory=list)


def make_optimizer(params, name: str, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise LandscapeError(f"`optimizer`: {name!r} is not one of {', '.join(OPTIMIZERS)}")


def save_state(model: nn.Module, path: str) -> str:
    """``torch.save`` a plain CPU ``state_dict`` atomically (temporary file, then rename)."""
    sd = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(sd, tmp)
    os.replace(tmp, path)
    return path


def _evaluate(model: nn.Module, X, y: Tensor, loss: str | L.Loss, batch_size: int = 1024) -> tuple[float, float]:
    """Mean loss and accuracy (NaN when the loss has none) over (X, y) in eval mode, in batches of ``batch_size``."""
    fn = loss if isinstance(loss, L.Loss) else None
    has_accuracy = fn is None or fn.has_accuracy(y)
    batches = [(X[i: i + batch_size], y[i: i + batch_size]) for i in range(0, len(X), batch_size)]
    with eval_mode(model):
        total, correct = loss_acc_sums(model, batches, lambda out, t: loss_sum(loss, out, t),
                                       (lambda out, t: correct_count(out, t, fn)) if has_accuracy else None)
    return float(total) / len(X), (float(correct) / len(X) if has_accuracy else float("nan"))


def train(model_spec: str | nn.Module = "zoo:mlp", data_spec: str | tuple[Tensor, Tensor] = "zoo:digits", *,
          model_args: dict | str | None = None, optimizer: str = "sgd", lr: float = 0.1, momentum: float = 0.9,
          weight_decay: float = 0.0, epochs: int = 10, steps: int | None = None, batch_size: int = 64,
          seed: int = 0, out_dir: str = os.path.join("outputs", "train"), save_every: int = 0,
          loss: str = "cross_entropy", samples: int | None = None, device: str = "cpu", init: str | None = None,
          log: Callable[[str], None] | None = print, target_key: str = B.TARGET_KEY, output_key: str | None = None,
          shift_labels: bool = False, strip_prefix: str | None = None) -> TrainResult:
    """Train with mini-batch SGD or Adam and save init/final/every-``save_every``-steps checkpoints.

    ``steps`` (optimizer steps) overrides ``epochs``; ``save_every=0`` saves no ``ckpt_*`` files.
    ``init`` starts from a checkpoint instead of the seeded initialization. Data, outputs and losses of any
    structure as in :func:`landscape.problem.make_problem` (``target_key``, ``output_key``, ``shift_labels``).
    """
    loss_fn = L.get_loss(loss, shift=shift_labels)
    if optimizer not in OPTIMIZERS:
        raise LandscapeError(f"`optimizer`: {optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if not (lr > 0 and math.isfinite(lr)):
        raise LandscapeError(f"`lr` must be a positive number, got {lr}")
    if batch_size <= 0 or epochs < 0 or (steps is not None and steps < 0) or save_every < 0:
        raise LandscapeError("`batch_size` must be positive; `epochs`, `steps` and `save_every` non-negative")
    for name, v in (("momentum", momentum), ("weight_decay", weight_decay)):
        if not (v >= 0 and math.isfinite(v)):
            raise LandscapeError(f"`{name}` must be a finite number of 0 or more, got {v}")
    dev = resolve_device(device)  # '--device: 'tpu' is not auto, cpu, cuda or cuda:N', before anything is made
    t0 = time.perf_counter()
    make_output_folder(out_dir, "`out_dir`", "the checkpoints")
    model = load_model(model_spec, model_args, seed=seed) if isinstance(model_spec, str) else model_spec
    if init:
        load_checkpoint(model, init, flag="`init`", strip_prefix=strip_prefix)
    model = model.to(dev).eval()  # (the probes below must not move BatchNorm statistics; train() comes later)
    X, y = load_data(data_spec, target_key=target_key) if isinstance(data_spec, str) else data_spec
    X, y, _ = subsample(X, y, samples, seed)
    X = inputs_for(model, X, dev)
    if isinstance(X, torch.Tensor) and X.is_floating_point() \
            and any(p.dtype == torch.float64 for p in model.parameters()):
        X = X.double()  # a float64 model trains on float64 inputs
    B.adapt_model(model, X[:2].to(dev), output_key)
    X, y = X.to(dev), y.to(dev)
    with torch.inference_mode():
        probe = model(X[:256])
    L.check_setup(loss_fn, probe, y[:256])
    n = len(X)
    per_epoch = max(1, n // batch_size + (1 if n % batch_size > 1 else 0))  # a last batch of 1 is dropped (BN)
    total_steps = steps if steps is not None else epochs * per_epoch
    opt = make_optimizer(model.parameters(), optimizer, lr, momentum, weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    saved: list[str] = []
    init_path = save_state(model, os.path.join(out_dir, "init.pt"))

    def checkpoint(step: int) -> None:
        if save_every and (step % save_every == 0 or step == total_steps):
            saved.append(save_state(model, os.path.join(out_dir, f"ckpt_{step:05d}.pt")))

    history: list[dict] = []
    l0, a0 = _evaluate(model, X, y, loss_fn)
    history.append({"epoch": 0, "step": 0, "loss": l0, "acc": a0})
    if log:
        log(f"train: {type(model).__name__} on {n} samples, {optimizer} lr={lr:g}"
            + (f" momentum={momentum:g}" if optimizer == "sgd" else "")
            + f", {total_steps} steps of batch {batch_size}; initial loss {l0:.4f}, accuracy {a0:.3f}")
    checkpoint(0)
    step, epoch = 0, 0
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout and friends
        while step < total_steps:
            epoch += 1
            perm = torch.randperm(n, generator=gen).to(dev)
            running, seen = 0.0, 0
            for i in range(0, n, batch_size):
                idx = perm[i : i + batch_size]
                if len(idx) < 2 and n > 1:
                    continue
                opt.zero_grad(set_to_none=True)
                out = model(X[idx])
                batch_loss = loss_sum(loss_fn, out, y[idx]) / len(idx)
                batch_loss.backward()
                opt.step()
                step += 1
                running += float(batch_loss.detach()) * len(idx)
                seen += len(idx)
                checkpoint(step)
                if step >= total_steps:
                    break
            if not math.isfinite(running):
                raise LandscapeError(f"training diverged (loss {running}) at step {step}; lower `lr`")
            le, ae = _evaluate(model, X, y, loss_fn)
            history.append({"epoch": epoch, "step": step, "batch_loss": running / max(seen, 1), "loss": le,
                            "acc": ae})
            if log and (epoch == 1 or step >= total_steps or epoch % max(1, (total_steps // per_epoch) // 5) == 0):
                log(f"  epoch {epoch:3d}  step {step:5d}  loss {le:.4f}  accuracy {ae:.3f}")
    model.eval()
    final_path = save_state(model, os.path.join(out_dir, "final.pt"))
    lf, af = _evaluate(model, X, y, loss_fn)
    res = TrainResult(out_dir, init_path, final_path, saved, step, lf, af, time.perf_counter() - t0, history)
    config = dict(model=model_spec if isinstance(model_spec, str) else type(model_spec).__name__,
                  model_args=parse_kwargs(model_args) if isinstance(model_args, str) or model_args is None
                  else model_args, data=data_spec if isinstance(data_spec, str) else "<tensors>",
                  optimizer=optimizer, lr=lr, momentum=momentum if optimizer == "sgd" else None,
                  weight_decay=weight_decay, epochs=epochs, steps=total_steps, batch_size=batch_size, seed=seed,
                  save_every=save_every, loss=loss, samples=samples, init=init)
    with open(os.path.join(out_dir, "train.json"), "w") as f:
        json.dump({"config": config, **{k: v for k, v in asdict(res).items() if k != "out_dir"}}, f, indent=1)
    if log:
        log(f"train: final loss {lf:.4f}, accuracy {af:.3f} after {step} steps ({res.seconds:.1f} s); "
            f"{init_path}, {final_path}" + (f" and {len(saved)} checkpoints ckpt_*.pt" if saved else ""))
    return res
