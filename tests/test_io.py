"""Trajectory files: round trip, validation messages, atomic writes."""

import errno
import json
import os
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from hamnet import paths
from hamnet.io import SystemUnavailable, Trajectories, TrajectoryFileError, load_trajectories, save_trajectories
from hamnet.paths import atomic_path
from hamnet.simulation import generate
from hamnet.systems import Springs


@pytest.fixture(scope="module")
def data():
    return generate(Springs(n_particles=3), n_systems=4, steps=6, dt=0.01, seed=0)


def test_round_trip(tmp_path, data):
    path = tmp_path / "springs.npz"
    save_trajectories(path, data)
    loaded = load_trajectories(path)
    assert torch.equal(loaded.z, data.z) and torch.equal(loaded.t, data.t)
    assert loaded.params.keys() == data.params.keys()
    assert loaded.meta == {**data.meta, "schema_version": 1}
    assert loaded.system().settings() == Springs(n_particles=3).settings()


def test_readable_with_numpy_alone(tmp_path, data):
    path = tmp_path / "springs.npz"
    save_trajectories(path, data)
    with np.load(path, allow_pickle=False) as archive:
        assert archive["z"].shape == (4, 7, 2, 3, 2)
        assert json.loads(str(archive["meta"]))["schema_version"] == 1


def _write_raw(path, data, **changes):
    arrays = {"t": data.t.numpy(), "z": data.z.numpy(), **{k: v.numpy() for k, v in data.params.items()},
              "meta": np.array(json.dumps({"schema_version": 1, **data.meta}))}
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)


def _nan_z(data):
    z = data.z.numpy().copy()
    z[1, 2, 0, 0, 0] = np.nan
    return z


@pytest.mark.parametrize("change, message", [
    (lambda d: {"z": None}, "missing key 'z'"),
    (lambda d: {"meta": None}, "missing key 'meta'"),
    (lambda d: {"z": d.z.numpy()[:, :, 0]}, "'z' has shape"),
    (lambda d: {"z": d.z.numpy().astype(np.float32)}, "'z' has dtype float32; expected float64"),
    (lambda d: {"z": _nan_z(d)}, "'z' contains NaN or infinite values"),
    (lambda d: {"t": d.t.numpy()[:-1]}, "'t' has shape"),
    (lambda d: {"m": d.params["m"].numpy()[:-1]}, "parameter 'm' has shape"),
    (lambda d: {"k": d.params["k"].numpy()[:, :2]}, "parameter 'k' has shape"),
    (lambda d: {"meta": np.array(json.dumps({"schema_version": 7}))}, "unknown schema version 7"),
    (lambda d: {"meta": np.array("{not json")}, "'meta' is not valid JSON"),
    (lambda d: {"m": -d.params["m"].numpy()}, "masses 'm' must be positive"),
    (lambda d: {"t": 7 * d.t.numpy()}, "'t' is not spaced by meta's dt"),
    (lambda d: {"meta": np.array(json.dumps({**d.meta, "schema_version": 1, "system_settings": [6, 2]}))},
     "system_settings a JSON object"),
])
def test_validation_names_the_problem(tmp_path, data, change, message):
    path = tmp_path / "bad.npz"
    _write_raw(path, data, **change(data))
    with pytest.raises(TrajectoryFileError, match=message):
        load_trajectories(path)


def test_not_a_trajectory_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("hello")
    with pytest.raises(TrajectoryFileError, match="not a .npz trajectory file"):
        load_trajectories(path)
    with pytest.raises(TrajectoryFileError, match="no such file"):
        load_trajectories(tmp_path / "missing.npz")


def test_refuses_to_save_invalid_data(tmp_path, data):
    bad = data.select(slice(None))
    bad.z = bad.z.clone()
    bad.z[0, 0, 0, 0, 0] = float("inf")
    target = tmp_path / "out.npz"
    with pytest.raises(TrajectoryFileError, match="NaN or infinite"):
        save_trajectories(target, bad)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "precious.npz"
    target.write_bytes(b"old contents")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["precious.npz"]


def test_atomic_write_missing_folder(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        with atomic_path(tmp_path / "nope" / "x.npz"):
            pass


# -- data files are data ------------------------------------------------------------------------------
def test_a_file_naming_a_user_system_never_imports_it(tmp_path, data):
    marker = tmp_path / "ran"
    code = tmp_path / "evil.py"
    code.write_text(f"open({str(marker)!r}, 'w').write('ran')\nfrom hamnet.systems import Springs as Evil\n")
    path = tmp_path / "evil.npz"
    save_trajectories(path, Trajectories(data.t, data.z, data.params, {**data.meta, "system": f"{code}:Evil"}))
    loaded = load_trajectories(path)
    with pytest.raises(SystemUnavailable, match=r"never runs code that a data file names.*--true-system"):
        loaded.system()
    assert not marker.exists()
    # named by the user, the same class is trusted and built
    assert loaded.system(f"{code}:Evil").settings() == Springs(n_particles=3).settings() and marker.exists()


def test_a_system_missing_a_parameter_it_needs_is_refused(tmp_path, data):
    path = tmp_path / "no-k.npz"
    save_trajectories(path, Trajectories(data.t, data.z, {"m": data.params["m"]}, data.meta))
    with pytest.raises(ValueError, match="'k'"):
        load_trajectories(path).system()


# -- preflight from headers ---------------------------------------------------------------------------
def test_a_header_claiming_more_data_than_the_file_holds_is_refused_before_loading(tmp_path, data):
    path = tmp_path / "liar.npz"
    _write_raw(path, data)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    # rewrite z's header to claim (10^6, 10^6, 2, 3, 2) float64: about 96 TB
    header = members["z.npy"]
    old_shape = str(tuple(data.z.shape)).encode()
    members["z.npy"] = header.replace(old_shape, b"(1000000, 1000000, 2, 3, 2)".ljust(len(old_shape)), 1)
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with pytest.raises(TrajectoryFileError, match="claims shape .* truncated or corrupt"):
        load_trajectories(path)


# -- atomic writes ------------------------------------------------------------------------------------
def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path, data):
    path = tmp_path / "s.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".s.npz.{int(dead.stdout)}.abc123.tmp"
    stale.write_bytes(b"half a file")
    live = tmp_path / f".s.npz.{os.getpid()}.def456.tmp"  # a live writer's temporary is left alone
    live.write_bytes(b"being written")
    save_trajectories(path, data)
    assert not stale.exists() and live.exists() and load_trajectories(path).n_systems == data.n_systems


def test_a_failed_write_names_the_file_and_leaves_the_old_one(tmp_path, data):
    path = tmp_path / "s.npz"
    save_trajectories(path, data)
    before = path.read_bytes()
    with pytest.raises(OSError, match=f"cannot write {path}: No space left on device"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["s.npz"]


def test_an_archive_entry_that_is_not_an_array_is_refused(tmp_path, data):
    path = tmp_path / "extra.npz"
    _write_raw(path, data)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(TrajectoryFileError, match="holds 'notes.txt', which is not a numpy array"):
        load_trajectories(path)


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raising KeyboardInterrupt for the test, as in a terminal: a process started in the background
    by a non-interactive shell (a CI runner's ``cmd &``) inherits SIGINT ignored, and raising it does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_interrupt_during_a_zip_constructor_arrives_after_it(ctrl_c_raises):
    """SIGTERM landing while zipfile builds an object would leave a half-built ZipFile whose finaliser
    prints a traceback; the writer defers it over the constructor and hands it on right after."""
    seen = []

    def handler(signum, frame):
        seen.append("handler")
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with paths.interrupts_deferred():
            signal.raise_signal(signal.SIGTERM)
            seen.append("block finished")
        seen.append("after")
        assert signal.getsignal(signal.SIGTERM) is handler and seen == ["block finished", "handler", "after"]
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C's default handler raises once the block is done
            with paths.interrupts_deferred():
                signal.raise_signal(signal.SIGINT)
                seen.append("second block finished")
        assert seen[-1] == "second block finished"
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("moment", ["building the archive", "writing an array"])
def test_an_interrupted_write_leaves_no_file_and_no_open_archive(tmp_path, data, monkeypatch, moment, ctrl_c_raises):
    """Ctrl-C while the archive is built (delivered once it is) or while an array is written: the target
    is not created, the temporary is removed, and no zip object is left open for a finaliser to trip
    over (that prints a traceback after the one-line message)."""
    import gc
    import warnings
    import zipfile
    from hamnet import io

    if moment == "building the archive":
        class Interrupted(zipfile.ZipFile):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                signal.raise_signal(signal.SIGINT)
        monkeypatch.setattr(io.zipfile, "ZipFile", Interrupted)
    else:
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt
        monkeypatch.setattr(np.lib.format, "write_array", interrupted)
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(KeyboardInterrupt):
        io.save_trajectories(tmp_path / "out.npz", data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert list(tmp_path.iterdir()) == [] and unraisable == []
