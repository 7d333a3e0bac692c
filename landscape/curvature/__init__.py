"""Curvature of the loss: Hessian/GGN-vector products, extreme eigenpairs, trace and spectral density.

One module per concept (docs/curvature.md):

==========================  ==================================================================
:mod:`.hvp`                 :class:`HessianOperator`, :class:`GGNOperator`, :func:`hvp`,
                            :func:`check_deterministic` -- products over a whole evaluation set
:mod:`.lanczos`             :func:`lanczos` (full reorthogonalization), :func:`power_iteration`
                            (PyHessian's baseline), :func:`hessian_eigenpairs`
:mod:`.trace`               :func:`hutchinson`, :func:`hutchpp`, :func:`hessian_trace`
:mod:`.density`             :func:`spectral_density` (stochastic Lanczos quadrature),
                            :func:`fraction_near_zero`
:mod:`.fisher`              :class:`EmpiricalFisherOperator`
:mod:`.operators`           :func:`make_operator` (``hessian`` | ``ggn`` | ``fisher`` by name),
                            :func:`as_operator`
:mod:`.save`                :func:`save_curvature` (eigenvalues, trace, density into an HDF5 file)
==========================  ==================================================================

Every function takes a :class:`~landscape.problem.Problem` (its loss Hessian), any symmetric
operator with ``matvec_flat`` and ``dim`` (such as :class:`MatrixOperator`), or a square matrix.
Results are dataclasses with ``to_attrs()`` (the parameters used, JSON-able, for the HDF5 store).

Example:
    >>> import torch
    >>> A = torch.diag(torch.tensor([10.0, 3.0, 2.0, 1.0, -1.0], dtype=torch.float64))
    >>> eig = hessian_eigenpairs(A, k=2, which="both")
    >>> eig.eigenvalues.round(6).tolist(), round(eig.smallest, 6)
    ([10.0, 3.0], -1.0)
    >>> round(hessian_trace(A, matvecs=5).estimate, 6)  # budget ≥ dim: exact
    15.0
"""

from __future__ import annotations

from ._base import MatrixOperator
from .density import DensityResult, fraction_near_zero, gaussian_density, slq_nodes, spectral_density
from .fisher import OPERATOR_LABELS, OPERATORS, EmpiricalFisherOperator
from .hvp import GGNOperator, HessianOperator, check_deterministic, check_deterministic_loss, hvp
from .lanczos import EigenResult, hessian_eigenpairs, lanczos, power_iteration, smallest_eigenvalue, tridiagonal
from .operators import as_operator, make_operator
from .save import save_curvature
from .trace import TraceResult, hessian_trace, hutchinson, hutchpp

__all__ = [
    "DensityResult", "EigenResult", "GGNOperator", "HessianOperator", "MatrixOperator", "TraceResult",
    "as_operator", "check_deterministic", "check_deterministic_loss", "fraction_near_zero", "gaussian_density",
    "hessian_eigenpairs",
    "hessian_trace", "hutchinson", "hutchpp", "hvp", "lanczos", "power_iteration", "slq_nodes",
    "smallest_eigenvalue", "spectral_density", "tridiagonal",
    "OPERATORS", "OPERATOR_LABELS", "EmpiricalFisherOperator", "make_operator", "save_curvature",
]
