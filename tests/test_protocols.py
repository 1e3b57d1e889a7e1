"""The benchmark protocols (hamnet.protocols): each reproduces its paper's generator, checked against
independent numpy loops written here, its conservation laws and its clip; and the refusals."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import assert_close

import hamnet.protocols as protocols
from hamnet.diagnostics import energy, relative_change
from hamnet.protocols import PROTOCOLS, Protocol, check_protocol, generate_protocol
from hamnet.simulation import generate
from hamnet.systems import Charged, NBody, Springs

F64 = torch.float64
CHARGED, GRAVITY, SEGNO = PROTOCOLS["egnn-charged5"], PROTOCOLS["segnn-gravity100"], PROTOCOLS["segno-gravity5"]
ALL_PROTOCOLS = "egnn-charged5, segnn-gravity100, segno-gravity5"
#: relative energy change of the softened H over a full gravity trajectory (relative to kinetic plus
#: |potential| energy at the start): leapfrog's error is about C dt^2 with C of order 100 for the
#: collapsing 100-body clusters and the close passes of 5 bodies (2e-4 and 5e-4 measured); no bound
#: this loose would hold for a first-order or non-symplectic scheme, whose error grows along the run
GRAVITY_ENERGY_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def charged():
    return generate_protocol("egnn-charged5", "test", n_systems=8, seed=3)


@pytest.fixture(scope="module")
def gravity():
    return generate_protocol("segnn-gravity100", "test", n_systems=2, seed=5)


@pytest.fixture(scope="module")
def segno():
    return generate_protocol("segno-gravity5", "test", n_systems=6, seed=5)


def energy_and_scale(protocol: Protocol, z: torch.Tensor, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The softened ``H`` along ``z: (B, T, 2, N, 3)``, ``(B, T)``, and its scale per system ``(B,)``:
    kinetic plus |potential| energy at the start, which unlike ``|H|`` cannot be near 0 (a 5-body
    system's can be)."""
    h = energy(protocol.make_system().hamiltonian, z, params)
    kinetic = 0.5 * z[:, 0, 1].square().sum((-2, -1))  # unit masses
    return h, kinetic + (h[:, 0] - kinetic).abs()


# -- independent references: the papers' loops, one system at a time, in numpy ---------------------

def egnn_charged_reference(x, v, charge, steps):
    """EGNN's ChargedParticlesSim loop for one system (``x, v: (N, 3)``): frames every 100 steps, and
    whether any force component exceeded the clip."""
    dt, limit = 1e-3, 100.0
    x, v = x.copy(), v.copy()
    clipped = False

    def kick():
        nonlocal clipped
        diff = x[:, None, :] - x[None, :, :]
        distance = np.sqrt((diff**2).sum(-1))
        np.fill_diagonal(distance, np.inf)
        force = (charge[:, None] * charge[None, :] / distance**3)[:, :, None] * diff
        force = force.sum(1)
        clipped |= bool((np.abs(force) > limit).any())
        v[:] += dt * np.clip(force, -limit, limit)

    frames = [(x.copy(), v.copy())]
    kick()
    for step in range(1, steps + 1):
        x += dt * v
        if step % 100 == 0:
            frames.append((x.copy(), v.copy()))
        kick()
    return frames, clipped


def segnn_gravity_reference(x, v, steps):
    """SEGNN's kick-drift-kick leapfrog for one system of unit masses: frames every 100 steps."""
    dt, softening = 1e-3, 0.1

    def acceleration(x):
        diff = x[None, :, :] - x[:, None, :]  # x_j - x_i
        inverse_cube = ((diff**2).sum(-1) + softening**2) ** -1.5
        return (inverse_cube[:, :, None] * diff).sum(1)

    x, v = x.copy(), v.copy()
    a = acceleration(x)
    frames = [(x.copy(), v.copy())]
    for step in range(1, steps + 1):
        v += a * dt / 2
        x += v * dt
        a = acceleration(x)
        v += a * dt / 2
        if step % 100 == 0:
            frames.append((x.copy(), v.copy()))
    return frames


# -- the charged protocol ---------------------------------------------------------------------------

def test_charged_matches_egnn_loop_where_the_clip_is_far(charged):
    compared = 0
    for b in range(charged.n_systems):
        x, v = (charged.z[b, 0, k].numpy() for k in (0, 1))
        frames, clipped = egnn_charged_reference(x, v, charged.params["charge"][b].numpy(), steps=300)
        if clipped:
            continue
        compared += 1
        for k, (x_ref, v_ref) in enumerate(frames):
            assert_close(charged.z[b, k, 0], torch.from_numpy(x_ref))
            assert_close(charged.z[b, k, 1], torch.from_numpy(v_ref))
    assert compared >= 3, "too few unclipped systems to compare; change the seed"


def test_charged_initial_state_follows_egnn(charged):
    z0 = charged.z[:, 0]
    assert set(charged.params["charge"].unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(charged.params["m"], torch.ones(8, 5, dtype=F64))
    torch.testing.assert_close(z0[:, 1].norm(dim=-1), torch.full((8, 5), 0.5, dtype=F64), rtol=0, atol=1e-15)
    assert z0[:, 1].sum(1).norm(dim=-1).max() > 0.1, "EGNN does not remove total momentum"
    assert charged.z.shape == (8, 52, 2, 5, 3) and charged.z.dtype == F64
    assert_close(charged.t, torch.arange(52, dtype=F64) * 0.1)
    assert charged.t[CHARGED.frame_of(CHARGED.start_step)].item() == pytest.approx(3.1)


def test_reflection_at_the_box_is_egnn_clamp():
    x = torch.tensor([[[6.0, -7.0, 1.0]]], dtype=F64)
    v = torch.tensor([[[0.3, -0.2, -0.4]]], dtype=F64)
    x, v = protocols._reflect_into_box(x, v, 5.0)
    assert torch.equal(x, torch.tensor([[[4.0, -3.0, 1.0]]], dtype=F64))
    assert torch.equal(v, torch.tensor([[[-0.3, 0.2, -0.4]]], dtype=F64))


def test_the_clip_acts_on_each_force_component():
    # system 0: two opposite charges 0.05 apart along (1, 1, 1), pulled together with force 400, whose
    # components (231 each) are clipped to 100; system 1: the same pair 2 apart, force 0.25, unclipped
    direction = torch.ones(3, dtype=F64) / math.sqrt(3)
    x = torch.stack([torch.stack([torch.zeros(3, dtype=F64), separation * direction]) for separation in (0.05, 2.0)])
    charge = torch.tensor([[1.0, -1.0]] * 2, dtype=F64)
    coupling = charge.unsqueeze(-1) * charge.unsqueeze(-2)
    x, v = x.transpose(1, 2).contiguous(), torch.zeros(2, 3, 2, dtype=F64)  # coordinate-major (b, D, N)
    forces = protocols._PairForces(x, coupling, softening=0.0)
    clipped = protocols._clipped_kick(x, v, forces, dt=1e-3)
    assert clipped.tolist() == [True, False]
    pull_on_first = torch.stack([direction / 0.05**2, direction / 2.0**2])  # towards the other particle
    assert torch.equal(v[0, :, 0], torch.full((3,), 1e-3 * 100.0, dtype=F64))
    assert torch.equal(v[0, :, 1], -v[0, :, 0])
    assert_close(v[1, :, 0], 1e-3 * pull_on_first[1])
    assert (1e-3 * pull_on_first[0] > v[0, :, 0]).all()


def test_clipped_systems_and_kicks_are_counted(monkeypatch):
    # system 0 starts with a +- pair 0.05 apart (clipped from the first kick), system 1 with five
    # like charges at least 2 apart that only repel (never clipped)
    spread = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 2], [2, 2, 2]], dtype=F64)
    close = spread.clone()
    close[1] = torch.tensor([0.05, 0, 0], dtype=F64)
    charge = torch.tensor([[1.0, -1, 1, -1, 1], [1.0, 1, 1, 1, 1]], dtype=F64)
    x, v = torch.stack([close, spread]), torch.zeros(2, 5, 3, dtype=F64)
    v[0, 0, 1] = 0.5  # a near miss, not a head-on collision
    sampled = (x, v, {"m": torch.ones(2, 5, dtype=F64), "charge": charge})
    monkeypatch.setitem(protocols._SAMPLERS, "egnn-charged5", lambda protocol, n, generator: sampled)
    data = generate_protocol("egnn-charged5", "valid", n_systems=2)
    assert torch.equal(data.z[:, 0, 0], x) and torch.isfinite(data.z).all()
    assert data.meta["clipped_systems"] == 1
    # the capped pull keeps the pair within 0.1 of each other (checked at the frames), close enough
    # that every one of system 0's kicks is clipped; none of system 1's is
    assert (data.z[0, :, 0, 1] - data.z[0, :, 0, 0]).norm(dim=-1).max() < 0.1
    assert data.meta["clipped_kicks_fraction"] == 0.5


# -- the gravity protocols: SEGNN's generator at 100 bodies from step 3000, and at 5 from step 0 -----

#: each gravity set's fixture, and how many steps of it the numpy loop checks (all of the 5-body one)
GRAVITY_SETS = pytest.mark.parametrize("fixture, steps", [("gravity", 100), ("segno", SEGNO.steps)],
                                       ids=["segnn-gravity100", "segno-gravity5"])


@GRAVITY_SETS
def test_gravity_matches_segnn_loop(request, fixture, steps):
    data = request.getfixturevalue(fixture)
    for b in range(data.n_systems):
        x, v = (data.z[b, 0, k].numpy() for k in (0, 1))
        for k, (x_ref, v_ref) in enumerate(segnn_gravity_reference(x, v, steps=steps)):
            assert_close(data.z[b, k, 0], torch.from_numpy(x_ref))
            assert_close(data.z[b, k, 1], torch.from_numpy(v_ref))


@GRAVITY_SETS
def test_gravity_conserves_softened_energy_and_momentum(request, fixture, steps):
    data = request.getfixturevalue(fixture)
    system = data.system()
    assert isinstance(system, NBody) and system.softening == 0.1 and system.n_particles == data.z.shape[-2]
    h, scale = energy_and_scale(PROTOCOLS[data.meta["protocol"]["name"]], data.z, data.params)
    drift = relative_change(h, scale)
    assert drift.max() < GRAVITY_ENERGY_TOLERANCE
    assert drift.max() > 1e-8, "a leapfrog at dt = 1e-3 cannot conserve this H to round-off"
    momentum = data.z[:, :, 1].sum(-2)  # unit masses
    assert momentum.abs().max() < 1e-12 * data.z[:, 0, 1].abs().sum(1).max()


@pytest.mark.parametrize("protocol", [GRAVITY, SEGNO], ids=["segnn-gravity100", "segno-gravity5"])
def test_gravity_initial_state_follows_segnn(protocol):
    # 20,000 draws of each: a variance is then known to about 0.01, and the bounds are 5 of those
    n = protocol.n_particles
    x, v, params = protocols._sample_segnn_gravity(protocol, 20_000 // (3 * n), torch.Generator().manual_seed(1))
    assert torch.equal(params["m"], torch.ones(x.shape[:2], dtype=F64))
    assert abs(x.var().item() - 1) < 0.05, "positions ~ N(0, 1) per coordinate, unscaled"
    assert x.mean(1).norm(dim=-1).min() > 1e-3, "positions are not recentred"
    assert v.sum(1).abs().max() < 1e-12, "the mean velocity is removed"
    assert abs(v.var().item() - (1 - 1 / n)) < 0.05, "velocities ~ N(0, 1) per coordinate minus their mean"
    assert v.norm(dim=-1).std() > 0.3, "speeds are not normalised (SEGNN's generator ignores its speed)"


@pytest.mark.parametrize("protocol", [GRAVITY, SEGNO], ids=["segnn-gravity100", "segno-gravity5"])
def test_gravity_energy_error_is_second_order(protocol):
    # the same initial states over 1000 steps at dt and dt / 2 (a shortened protocol, frames at equal times)
    short = dataclasses.replace(protocol, start_step=0, horizons=(1000,))
    halved = dataclasses.replace(short, dt=protocol.dt / 2, frame_steps=2 * protocol.frame_steps, horizons=(2000,))
    x, v, params = protocols._sample_segnn_gravity(protocol, 2, torch.Generator().manual_seed(11))
    errors = []
    for shortened in (short, halved):
        z, _ = protocols._simulate(shortened, x, v, params, progress=False)
        h, scale = energy_and_scale(protocol, z, params)
        errors.append(relative_change(h, scale).max().item())
    assert 3 < errors[0] / errors[1] < 5.5, errors


def test_segno_gravity_is_segnn_generator_at_5_bodies_from_step_0():
    renamed = dataclasses.replace(GRAVITY, name=SEGNO.name, paper=SEGNO.paper, n_particles=5, start_step=0)
    assert renamed == SEGNO, "only the name, the paper, the body count and the start step may differ"
    assert protocols._SAMPLERS["segno-gravity5"] is protocols._SAMPLERS["segnn-gravity100"]
    assert protocols._INTEGRATORS["segno-gravity5"] is protocols._INTEGRATORS["segnn-gravity100"]
    assert "SEGNO" in SEGNO.paper and "ICLR 2024" in SEGNO.paper


def test_segno_gravity_starts_from_the_sampled_state(segno):
    x, v, params = protocols._sample_segnn_gravity(SEGNO, 6, torch.Generator().manual_seed(5))
    start = segno.z[:, SEGNO.frame_of(SEGNO.start_step)]
    assert torch.equal(start[:, 0], x) and torch.equal(start[:, 1], v)
    assert torch.equal(segno.params["m"], params["m"])
    assert start[:, 1].sum(1).abs().max() < 1e-15 * start[:, 1].abs().sum(1).max(), "zero total momentum"
    assert not torch.equal(segno.z[:, 1], start), "frame 1 is 100 steps on"
    assert segno.z.shape == (6, 21, 2, 5, 3) and segno.z.dtype == F64
    assert_close(segno.t, torch.arange(21, dtype=F64) * 0.1)


# -- both -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["egnn-charged5", "segno-gravity5"])
def test_same_seed_same_bits_whatever_the_chunking(monkeypatch, name):
    first = generate_protocol(name, "train", n_systems=5, seed=7)
    monkeypatch.setattr(protocols, "PAIR_CHUNK_BYTES", 2 * 3 * 5 * 5 * 8)  # two systems of 5 bodies a chunk
    again = generate_protocol(name, "train", n_systems=5, seed=7)
    other = generate_protocol(name, "train", n_systems=5, seed=8)
    assert torch.equal(first.z, again.z) and first.params.keys() == again.params.keys()
    assert all(torch.equal(first.params[key], again.params[key]) for key in first.params)
    assert first.meta == again.meta
    assert not torch.equal(first.z, other.z)


def test_meta_records_the_protocol_and_rebuilds_the_system(charged):
    meta = charged.meta
    assert meta["protocol"] == {"name": "egnn-charged5", "split": "test", "seed": 3, "inner_dt": 1e-3,
                                "frame_steps": 100, "integrator": CHARGED.integrator, "start_step": 3100,
                                "horizons": [1000, 1500, 2000]}
    assert meta["dt"] == pytest.approx(0.1) and meta["steps"] == 51 and meta["seed"] == 3
    assert meta["system_settings"] == CHARGED.make_system().settings()
    system = charged.system()
    assert isinstance(system, Charged) and system.softening == 0.0 and system.dim == 3
    assert check_protocol(charged, "egnn-charged5", "charged.npz") is CHARGED


def test_meta_records_the_segno_gravity_protocol(segno):
    meta = segno.meta
    assert meta["protocol"] == {"name": "segno-gravity5", "split": "test", "seed": 5, "inner_dt": 1e-3,
                                "frame_steps": 100, "integrator": "kick-drift-kick leapfrog", "start_step": 0,
                                "horizons": [1000, 1500, 2000]}
    assert meta["dt"] == pytest.approx(0.1) and meta["steps"] == 20
    assert "clipped_systems" not in meta and "clipped_kicks_fraction" not in meta
    assert meta["system_settings"] == SEGNO.make_system().settings()
    assert check_protocol(segno, "segno-gravity5", "segno.npz") is SEGNO


def test_protocol_steps_and_frames():
    assert (CHARGED.steps, CHARGED.n_frames, GRAVITY.steps, GRAVITY.n_frames) == (5100, 52, 5000, 51)
    assert [GRAVITY.frame_of(GRAVITY.start_step + h) for h in GRAVITY.horizons] == [40, 45, 50]
    assert CHARGED.frame_of(0) == 0 and CHARGED.not_hamiltonian and not GRAVITY.not_hamiltonian
    for step in (50, -100, 5200, 3100.0, True):
        with pytest.raises(ValueError, match="egnn-charged5 stores steps 0, 100, ..., 5100; step"):
            CHARGED.frame_of(step)
    assert isinstance(CHARGED, Protocol) and dict(CHARGED.splits) == {"train": 3000, "valid": 2000, "test": 2000}


def test_segno_gravity_steps_frames_and_splits():
    assert (SEGNO.start_step, SEGNO.steps, SEGNO.n_frames, SEGNO.n_particles) == (0, 2000, 21, 5)
    assert [SEGNO.frame_of(SEGNO.start_step + h) for h in SEGNO.horizons] == [10, 15, 20]
    assert SEGNO.frame_dt == pytest.approx(0.1) and not SEGNO.not_hamiltonian
    assert dict(SEGNO.splits) == {"train": 3000, "valid": 2000, "test": 2000}
    for step in (50, 2100, 1000.0):
        with pytest.raises(ValueError, match="^segno-gravity5 stores steps 0, 100, ..., 2000; step") as error:
            SEGNO.frame_of(step)
        _one_line(error)


# -- refusals ---------------------------------------------------------------------------------------

def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_check_protocol_refuses_other_sets(charged, gravity):
    springs = generate(Springs(), n_systems=1, steps=2, dt=0.1, seed=0)
    remedy = ("generate it with `hamnet generate --protocol egnn-charged5 --split SPLIT` "
              "(hamnet.protocols.generate_protocol('egnn-charged5', split) in Python)")
    with pytest.raises(ValueError) as error:
        check_protocol(springs, "egnn-charged5", "springs.npz")
    assert _one_line(error) == f"springs.npz was not made by a benchmark protocol; {remedy}"
    with pytest.raises(ValueError) as error:
        check_protocol(gravity, "egnn-charged5", "gravity.npz")
    assert _one_line(error) == f"gravity.npz holds the 'segnn-gravity100' set, not 'egnn-charged5'; {remedy}"
    short = dataclasses.replace(charged, t=charged.t[:42], z=charged.z[:, :42])
    with pytest.raises(ValueError) as error:
        check_protocol(short, "egnn-charged5", "short.npz")
    assert _one_line(error).startswith("short.npz stops at step 4100, before step 5100 (3100 plus the longest "
                                       "horizon, 2000) that egnn-charged5 needs;")
    with pytest.raises(ValueError, match=f"unknown protocol 'charged'; choose one of {ALL_PROTOCOLS}"):
        check_protocol(charged, "charged", "charged.npz")


def test_check_protocol_keeps_the_two_gravity_sets_apart(gravity, segno):
    for data, made, asked in ((segno, "segno-gravity5", "segnn-gravity100"), (gravity, "segnn-gravity100",
                                                                             "segno-gravity5")):
        with pytest.raises(ValueError) as error:
            check_protocol(data, asked, "data.npz")
        assert _one_line(error) == (f"data.npz holds the {made!r} set, not {asked!r}; generate it with `hamnet "
                                    f"generate --protocol {asked} --split SPLIT` (hamnet.protocols.generate_protocol"
                                    f"({asked!r}, split) in Python)")
    short = dataclasses.replace(segno, t=segno.t[:16], z=segno.z[:, :16])
    with pytest.raises(ValueError) as error:
        check_protocol(short, "segno-gravity5", "short.npz")
    assert _one_line(error).startswith("short.npz stops at step 1500, before step 2000 (0 plus the longest "
                                       "horizon, 2000) that segno-gravity5 needs;")


@pytest.mark.parametrize("arguments, message", [
    (("egnn-charged", "train"), f"unknown protocol 'egnn-charged'; choose one of {ALL_PROTOCOLS}"),
    (("egnn-charged5", "training"), "unknown split 'training'; choose one of train, valid, test"),
    (("egnn-charged5", "train", 0), "n_systems must be a positive integer, got 0"),
    (("egnn-charged5", "train", 2.5), "n_systems must be a positive integer, got 2.5"),
    (("egnn-charged5", "train", True), "n_systems must be a positive integer, got True"),
    (("egnn-charged5", "train", 2, "1"), "seed must be a non-negative integer below 2\\*\\*63, got '1'"),
    (("egnn-charged5", "train", 2, -1), "seed must be a non-negative integer below 2\\*\\*63, got -1"),
], ids=["protocol", "split", "zero-systems", "fractional-systems", "bool-systems", "string-seed", "negative-seed"])
def test_generate_protocol_refuses_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=f"^{message}$") as error:
        generate_protocol(*arguments)
    _one_line(error)


@pytest.mark.parametrize("system", [Charged(dim=3, softening=0.0), NBody(softening=0.0)], ids=["charged", "nbody"])
def test_zero_softening_has_no_timescale_to_generate_with(system):
    with pytest.raises(ValueError, match="with softening 0 \\(the unsoftened 1/r law\\) has no shortest timescale to "
                                         "choose a step from: use a positive --softening") as error:
        generate(system, n_systems=2, steps=3, dt=0.1, seed=0)
    _one_line(error)
    with pytest.raises(ValueError, match="softening must be a non-negative finite number"):
        type(system)(softening=-0.1)


def test_zero_softening_force_is_the_unsoftened_law_and_minus_the_gradient():
    system = Charged(n_particles=5, dim=3, softening=0.0)
    params = system.sample_params(3, torch.Generator().manual_seed(2))
    q = torch.randn(3, 5, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    c = params["charge"]
    diff = q.unsqueeze(2) - q.unsqueeze(1)
    distance = diff.norm(dim=-1) + torch.eye(5, dtype=F64)  # the self-pair has diff = 0
    expected = ((c.unsqueeze(2) * c.unsqueeze(1) / distance**3).unsqueeze(-1) * diff).sum(2)
    force = system.forces(q, params)
    assert torch.isfinite(force).all() and torch.isfinite(system.potential(q, params)).all()
    assert_close(force, expected)
    q = q.requires_grad_(True)
    (gradient,) = torch.autograd.grad(system.potential(q, params).sum(), q)
    assert_close(force, -gradient)
