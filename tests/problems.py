"""The problems the test suite is built on, defined once (as torchdiffeq's ``tests/problems.py``).

Shapes follow the design: a state is ``z: (B, 2, N, D)`` (positions ``z[:, 0]``, momenta ``z[:, 1]``),
system parameters a dict of ``(B, N)`` tensors, a point cloud ``points: (B, N, D)`` with features
``(B, N, F)``. Everything random comes from the ``generator`` or ``seed`` argument.
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Callable, Iterable, Sequence

import pytest
import torch
from torch import Tensor, nn

from hamnet.groups import SE2, SE3, SO2, SO3, LieGroup, T, Trivial
from hamnet.lieconv import LieResNet
from hamnet.layers import init_parameters
from hamnet.models import ModelConfig, build_model
from hamnet.systems import NBody, Springs

F64 = torch.float64
Params = dict[str, Tensor]

# -- groups -------------------------------------------------------------------------------------

#: groups that act freely on points (no stabilizer): one lift per point, nothing to choose
FREE_GROUPS = (Trivial(2), T(2), T(3), SO2())
#: groups whose action has a stabilizer: exactly invariant with the default (exact) lift, invariant only in
#: distribution with the paper's Monte Carlo lift (``lift="monte-carlo"``), which samples the stabilizer
STABILIZED_GROUPS = (SE2(), SO3(), SE3())
ALL_GROUPS = FREE_GROUPS + STABILIZED_GROUPS


def ids(items: Iterable) -> list[str]:
    """Test ids for parametrizing over groups (or anything with a telling ``repr``)."""
    return [repr(item) for item in items]


def lift_samples(group: LieGroup) -> int | None:
    """Two lift samples where the action has a stabilizer (keeps tests small), else the default (one)."""
    return 2 if group.stabilizer_dim else None


# -- physical systems ---------------------------------------------------------------------------

def sample_batch(system, n_systems: int, generator: torch.Generator) -> tuple[Params, Tensor]:
    """Parameters ``{"m": (B, N), ...}`` and initial states ``z: (B, 2, N, D)`` of ``B = n_systems``, float64."""
    params = system.sample_params(n_systems, generator)
    return params, system.sample_state(params, generator)


def springs_batch(generator: torch.Generator, n_systems: int = 3,
                  n_particles: int = 4) -> tuple[Springs, Params, Tensor]:
    """The paper's springs in 2D: ``(system, params, z)`` with ``params["m"], params["k"]: (B, N)``
    and ``z: (B, 2, N, 2)``, float64, zero total momentum per system."""
    system = Springs(n_particles=n_particles)
    return (system, *sample_batch(system, n_systems, generator))


def two_body_orbit(speed: float = 0.8) -> tuple[NBody, Params, Tensor]:
    """Masses 1 and 0.5 in their centre-of-mass frame, apocentre separation 1 (softening 0.1): the
    default ``speed`` gives an eccentric orbit (pericentre 0.3), ``speed=1`` a milder one.
    Returns ``(system, {"m": (1, 2)}, z: (1, 2, 2, 2))``, float64."""
    system = NBody(n_particles=2, softening=0.1)
    m = torch.tensor([[1.0, 0.5]], dtype=F64)
    q = torch.tensor([[[1 / 3, 0.0], [-2 / 3, 0.0]]], dtype=F64)
    v = speed * torch.tensor([[[0.0, 1 / 3], [0.0, -2 / 3]]], dtype=F64)
    return system, {"m": m}, torch.stack([q, m.unsqueeze(-1) * v], dim=1)


def cast(params: Params, dtype: torch.dtype) -> Params:
    """Every parameter tensor in ``dtype``."""
    return {key: value.to(dtype) for key, value in params.items()}


# -- rigid motions of states ----------------------------------------------------------------------

def rotation(angle: float, dtype: torch.dtype = F64) -> Tensor:
    """The 2D rotation matrix ``(2, 2)`` by ``angle`` (counter-clockwise)."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=dtype)


def transform(z: Tensor, matrix: Tensor, shift: Tensor) -> Tensor:
    """``z: (B, 2, N, D)`` with positions and momenta rotated by ``matrix: (D, D)``, then positions
    shifted by ``shift: (D,)``."""
    return torch.stack([z[:, 0] @ matrix.T + shift, z[:, 1] @ matrix.T], dim=1)


# -- small models -------------------------------------------------------------------------------

#: the gain (see :func:`amplify`) of a LieResNet whose geometric part float32 resolves
SENSITIVE = 1e3


def model_config(name: str, n_particles: int = 4, **settings) -> ModelConfig:
    """A small config (width 8, one block, kernel 8 x 4) for 2D springs with features ``m, k``."""
    base = dict(name=name, n_particles=n_particles, dim=2, feature_keys=("m", "k"), width=8, depth=1,
                kernel_width=8, kernel_channels=4)
    return ModelConfig(**{**base, **settings})


def small_model(name: str, seed: int = 0, dtype: torch.dtype = F64, **settings) -> nn.Module:
    """``build_model(model_config(name, **settings))`` initialised from ``seed``, in ``dtype``."""
    return build_model(model_config(name, **settings), torch.Generator().manual_seed(seed)).to(dtype)


def small_lieresnet(group: LieGroup, neighbours: int | None = None, width: int = 16, depth: int = 2,
                    dtype: torch.dtype = F64, seed: int = 0, gain: float = 1.0, **settings) -> LieResNet:
    """A LieResNet over ``group`` for two features per point (kernel 16 x 4), initialised from ``seed``.

    ``gain`` amplifies the output of every convolution (:func:`amplify`). At initialisation the part of
    the output that depends on the geometry is ~1e-6 of its value (derivatives ~1e-5), below the
    resolution of float32 and of ``gradcheck``'s default tolerances; :data:`SENSITIVE` makes it, and the
    derivatives, of order 1e-2 to 1.
    """
    model = LieResNet(group, in_features=2, width=width, depth=depth, neighbours=neighbours,
                      kernel_width=16, kernel_channels=4, **settings)
    init_parameters(model, torch.Generator().manual_seed(seed))
    return amplify(model, gain).to(dtype)


def amplify(network: LieResNet, gain: float) -> LieResNet:
    """``network`` (changed in place) with the output of every convolution multiplied by ``gain``."""
    with torch.no_grad():
        for block in network.blocks:
            block.conv.mix.weight.mul_(gain)
    return network


def point_cloud(group: LieGroup, generator: torch.Generator, B: int = 3, N: int = 6,
                dtype: torch.dtype = F64) -> tuple[Tensor, Tensor]:
    """Gaussian ``points: (B, N, D)`` for ``group`` and uniform ``features: (B, N, 2)``."""
    points = torch.randn(B, N, group.space_dim, generator=generator, dtype=dtype)
    features = torch.rand(B, N, 2, generator=generator, dtype=dtype)
    return points, features


# -- derivatives ----------------------------------------------------------------------------------

def double_backward(function: Callable[[Tensor], Tensor], x: Tensor, generator: torch.Generator,
                    ) -> tuple[Tensor, Tensor]:
    """The gradient of ``s(x) = <function(x), w>`` and the Hessian-vector product ``d<ds/dx, v>/dx``,
    by double backward (what Hamiltonian training does), for fixed random ``w`` and ``v``.

    ``x``: any shape; both results are shaped like ``x``. ``w`` and ``v`` are drawn in float32 and
    cast, so the float32 and float64 evaluations of one problem use identical directions.
    """
    x = x.detach().requires_grad_(True)
    out = function(x)
    w = torch.randn(out.shape, generator=generator).to(x.dtype)
    v = torch.randn(x.shape, generator=generator).to(x.dtype)
    (grad,) = torch.autograd.grad((out * w).sum(), x, create_graph=True)
    if not grad.requires_grad:  # function is linear in x
        return grad, torch.zeros_like(x)
    (hvp,) = torch.autograd.grad((grad * v).sum(), x)
    return grad.detach(), hvp


def assert_double_backward_matches_float64(function32: Callable[[Tensor], Tensor],
                                           function64: Callable[[Tensor], Tensor], x: Tensor,
                                           rtol: float, atol: float) -> None:
    """Gradient and Hessian-vector product (see :func:`double_backward`) of ``function32`` at the
    float32 ``x`` agree with those of ``function64`` (the same function with the same weights in
    float64) at the same point, within ``rtol``, ``atol``; both are finite."""
    assert x.dtype == torch.float32
    actual = double_backward(function32, x, torch.Generator().manual_seed(0))
    expected = double_backward(function64, x.double(), torch.Generator().manual_seed(0))
    for a, e in zip(actual, expected):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), e, rtol=rtol, atol=atol)


# -- measuring ----------------------------------------------------------------------------------

def log_log_slope(steps: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of ``log(error)`` against ``log(step)``: the observed convergence order."""
    x, y = torch.tensor(steps, dtype=F64).log(), torch.tensor(errors, dtype=F64).log()
    return float(((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).square().sum())


# -- the command line ---------------------------------------------------------------------------

def run_cli(args: Iterable, capsys) -> tuple[int, str, str]:
    """``hamnet ARGS`` in this process: ``(exit status, stdout, stderr)``; arguments may be paths."""
    from hamnet.cli import main

    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


# -- training that goes off ---------------------------------------------------------------------------
def jump_at(call: int, how: str = "far"):
    """A replacement for ``torch.optim.Adam.step`` whose ``call``-th call (counted from the patch) throws every
    weight far off (``how="far"``: plus 3) or makes them not finite (``"nan"``) after its step."""
    real, calls = torch.optim.Adam.step, [0]

    def step(self, *args, **kwargs):
        real(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == call:
            for group in self.param_groups:
                for weight in group["params"]:
                    weight.data.add_(3.0) if how == "far" else weight.data.fill_(math.nan)
    return step


# -- watching ---------------------------------------------------------------------------------------
class Hung(BaseException):
    """Raised by the watchdog; a BaseException so that no ``except Exception`` in hamnet swallows it."""


@contextlib.contextmanager
def watchdog(seconds: float):
    """Fail the test, instead of hanging the suite, when the block runs longer than ``seconds``."""
    fired = []

    def on_alarm(signum, frame):
        fired.append(True)
        raise Hung

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except BaseException:
        if not fired:  # the alarm's exception, whatever hamnet turned it into, ends in the failure below
            raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if fired:
        pytest.fail(f"no answer within {seconds:g} s: hung, or took on work it should have refused")
