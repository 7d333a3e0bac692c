"""Symmetric linear operators on flat vectors, the common ground of every curvature routine.

Everything in :mod:`landscape.curvature` (Lanczos, power iteration, Hutchinson/Hutch++, SLQ)
needs only two things from a matrix A ∈ ℝ^{P×P}: its size ``dim`` = P and the product
``matvec_flat(x)`` = A x on a 1-D tensor. :class:`_LinearOperator` fixes that interface and
counts the products (``matvecs``) so that every result can say what it cost.
:class:`MatrixOperator` wraps an explicit symmetric matrix (tests, synthetic spectra);
:func:`landscape.curvature.operators.as_operator` turns a Problem, an operator or a matrix into one.

Example:
    >>> import torch
    >>> op = MatrixOperator(torch.diag(torch.tensor([3.0, 1.0])))
    >>> op.matvec_flat(torch.tensor([1.0, 1.0])).tolist(), op.dim, op.matvecs
    ([3.0, 1.0], 2, 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


class _LinearOperator:
    """A symmetric operator x ↦ A x on flat vectors of length ``dim``.

    Subclasses implement :meth:`_matvec_flat`; the public :meth:`matvec_flat` counts the calls in
    ``matvecs``. ``dtype`` and ``device`` are those of the vectors the operator expects (the
    iterative methods keep their own bases in float64 and cast at the boundary).
    """

    dim: int
    dtype: torch.dtype = torch.float64
    device: torch.device = torch.device("cpu")

    def __init__(self) -> None:
        self.matvecs = 0

    def _matvec_flat(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def matvec_flat(self, x: Tensor) -> Tensor:
        """A x for a 1-D tensor x of length ``dim`` (any float dtype; returned in ``dtype``)."""
        if x.ndim != 1 or x.numel() != self.dim:
            raise ValueError(f"expected a vector of {self.dim} entries, got shape {tuple(x.shape)}")
        self.matvecs += 1
        return self._matvec_flat(x.to(device=self.device, dtype=self.dtype))

    def __matmul__(self, x: Tensor) -> Tensor:
        if x.ndim == 2:
            return torch.stack([self.matvec_flat(c) for c in x.T], dim=1)
        return self.matvec_flat(x)

    def to_dense(self) -> Tensor:
        """The explicit P×P matrix (``dim`` products with unit vectors; for tests and tiny problems)."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec_flat(e) for e in eye], dim=1)

    def to_scipy(self):
        """This operator as a ``scipy.sparse.linalg.LinearOperator`` (float64, symmetric), for scipy's solvers.

        Each product moves the vector to the operator's device and back (counted in ``matvecs``), e.g.
        ``scipy.sparse.linalg.eigsh(H.to_scipy(), k=5, which="LA")``.
        """
        from scipy.sparse.linalg import LinearOperator

        def mv(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64)
            flat = x.reshape(-1) if x.ndim == 1 or x.shape[1] == 1 else None
            if flat is None:  # a block of vectors
                return np.stack([mv(c) for c in x.T], axis=1)
            y = self.matvec_flat(torch.from_numpy(np.ascontiguousarray(flat)))
            out = y.detach().to(device="cpu", dtype=torch.float64).numpy()
            return out.reshape(x.shape)

        return LinearOperator((self.dim, self.dim), matvec=mv, rmatvec=mv, matmat=mv, dtype=np.float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, dtype={self.dtype}, matvecs={self.matvecs})"


class MatrixOperator(_LinearOperator):
    """An explicit symmetric matrix as an operator (float64 by default).

    Example:
        >>> op = MatrixOperator([[2.0, 1.0], [1.0, 2.0]])
        >>> op.matvec_flat(torch.ones(2)).tolist()
        [3.0, 3.0]
    """

    def __init__(self, matrix: Tensor | np.ndarray | Any, dtype: torch.dtype | None = torch.float64,
                 check_symmetric: bool = True):
        super().__init__()
        A = torch.as_tensor(matrix)
        if dtype is not None:
            A = A.to(dtype)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"expected a square matrix, got shape {tuple(A.shape)}")
        if check_symmetric and A.numel() and not torch.allclose(A, A.T, rtol=1e-6, atol=1e-12 * float(A.abs().max())):
            raise ValueError("the matrix is not symmetric")
        self.matrix = A
        self.dim = A.shape[0]
        self.dtype = A.dtype
        self.device = A.device

    def _matvec_flat(self, x: Tensor) -> Tensor:
        return self.matrix @ x


def is_operator(obj: Any) -> bool:
    """Whether ``obj`` has the operator interface (``matvec_flat`` and ``dim``)."""
    return callable(getattr(obj, "matvec_flat", None)) and hasattr(obj, "dim")


def generator(seed: int | torch.Generator | None) -> torch.Generator:
    """A CPU generator: a given one is used as is, an int seeds a new one, None means seed 0."""
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


def gaussian(dim: int, gen: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
    """Standard normal float64 vector (drawn on the CPU so a seed gives the same draw on any device)."""
    return torch.randn(dim, generator=gen, dtype=torch.float64).to(device)


def rademacher(dim: int, gen: torch.Generator, device: torch.device | str = "cpu", n: int | None = None) -> Tensor:
    """±1 float64 entries, shape (dim,) or (n, dim), drawn on the CPU."""
    shape = (dim,) if n is None else (n, dim)
    return (torch.randint(0, 2, shape, generator=gen, dtype=torch.int8) * 2 - 1).to(torch.float64).to(device)


def seed_value(seed: int | torch.Generator | None) -> int | None:
    """The int seed for ``to_attrs`` (None when a caller passed its own generator)."""
    if isinstance(seed, torch.Generator):
        return None
    return 0 if seed is None else int(seed)
