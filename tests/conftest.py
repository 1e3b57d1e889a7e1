"""Shared test settings: one per-dtype tolerance table, the dtypes every precision-sensitive check
runs in, and seeded generators."""

from typing import NamedTuple

import pytest
import torch

from hamnet.equivariance import ROUND_OFF

# Small tensors are fastest on one thread, and a fixed thread count keeps timings and reductions
# repeatable on any machine (CI has 2 cores; oversubscribing them slows the suite many times over).
torch.set_num_threads(1)

#: Training defaults to float32 and ground truth is float64: precision-sensitive checks run in both.
DTYPES = (torch.float32, torch.float64)


class Tolerance(NamedTuple):
    """What "agrees" means in one dtype. Pairs are ``(rtol, atol)`` for ``torch.testing.assert_close``."""

    #: results that should agree to round-off after a handful of operations
    close: tuple[float, float]
    #: largest ``|f(g x) - f(x)|`` of an exactly invariant network under a group element ``g``,
    #: relative to the largest ``|f(x)|``: the library's own round-off, ``hamnet.equivariance.ROUND_OFF``
    invariance: float
    #: the same network or energy evaluated another way (another summation order, or in float32
    #: against the float64 computation of the same weights and inputs)
    network: tuple[float, float]
    #: first and second derivatives by double backward: in float32 against the same computation in
    #: float64, in float64 against central finite differences (step 1e-6)
    second_derivative: tuple[float, float]
    #: a logarithm, or its embedding, within 1e-6 of the rotation angle pi, where digits cancel
    wrap: tuple[float, float]
    #: distances from ``torch.cdist``, whose matrix-product form for large sets cancels:
    #: an error of about sqrt(eps) x scale near 0
    search: float


TOLERANCES = {
    torch.float32: Tolerance(close=(1e-5, 1e-5), invariance=ROUND_OFF[torch.float32],
                             network=(1e-3, 1e-4), second_derivative=(1e-3, 2e-5), wrap=(1e-5, 1e-5),
                             search=1e-3),
    torch.float64: Tolerance(close=(1e-10, 1e-12), invariance=ROUND_OFF[torch.float64],
                             network=(1e-10, 1e-12), second_derivative=(1e-6, 1e-10), wrap=(1e-9, 1e-11),
                             search=1e-7),
}


@pytest.fixture(params=DTYPES, ids=lambda dtype: str(dtype).removeprefix("torch."))
def dtype(request) -> torch.dtype:
    """Each precision-sensitive test runs once per dtype of :data:`DTYPES`."""
    return request.param


@pytest.fixture
def generator():
    """A fresh, seeded generator for each test (randomness is never global)."""
    return torch.Generator().manual_seed(1234)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, kind: str = "close") -> None:
    """``torch.testing.assert_close`` with the ``(rtol, atol)`` of ``kind`` (a :class:`Tolerance` field)
    for ``actual``'s dtype."""
    rtol, atol = getattr(TOLERANCES[actual.dtype], kind)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def assert_round_off(moved: torch.Tensor, reference: torch.Tensor) -> None:
    """``moved`` equals ``reference`` to round-off (two tensors already computed; to check a model or an
    energy under random group elements, use ``hamnet.equivariance``): every difference within the ``invariance`` tolerance
    of their dtype times the largest ``|reference|``."""
    scale = TOLERANCES[reference.dtype].invariance * reference.abs().max().item()
    torch.testing.assert_close(moved, reference, rtol=0, atol=scale)
