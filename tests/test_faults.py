"""A fault corpus for every subcommand and the Python API: nothing runs, nothing is lost, nothing is silent.

Each case gives one subcommand (in this process, through ``hamnet.cli.main``) or one API function a
bad input or a fault, under a watchdog, and checks the whole policy at once: the exit status (1 for
errors), exactly one line on stderr (``hamnet: error: ...``) and no traceback, every file that was
there before byte-for-byte unchanged, nothing new left behind (hidden temporaries included) apart
from the outputs a case expects, no code run because a data file names it (such code would write
the file :data:`MARKER`), and no hang. A few real processes take SIGTERM and SIGINT mid-run
(exit 143 and 130). The inputs are tiny and made once per module, then copied into each case's
folder, so a case that destroys an input destroys only its own copy. The corpus also holds what a file
records of where it came from (checkpoint and data by sha256, the kind of data a model was trained on)
and the refusals that rest on it, the flags that mean nothing for what was chosen, and --threads.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from problems import run_cli, watchdog

#: seconds a case may take before the watchdog calls it a hang
WATCHDOG = 20.0
#: what a failed training run may leave: its folder with the last finite checkpoints, and the folder's lock
RUN_FOLDER = ("run", "run/*", "run/.lock")
#: seconds within which an absurd size must be refused (preflight, before allocating)
PREFLIGHT = 5.0
#: the file that code named by a data file or checkpoint would write if it ever ran
MARKER = "CODE-RAN"
#: a shape whose float64 array would take ~116 TiB
TERABYTES = (10**6, 10**6, 2, 4, 2)
#: a process id above Linux's largest (2**22): the writer of a "stale" temporary that is surely dead
DEAD_PID = 99999999
#: the tiny training run of every train case (HLieConv SO2, width 8, depth 1, one epoch of 16 windows); its
#: kernel is unbounded so that the shared checkpoint can still be made to diverge (a bounded potential's
#: force vanishes far from the data, tests/test_kernel_bound.py, and its rollout at dt 1e3 stays finite)
TRAIN = ("--model hlieconv --group SO2 --width 8 --depth 1 --chunk 3 --epochs 1 --batch-size 8 --max-windows 16 "
         "--validation 0.2 --test 0 --kernel-bound none --quiet")
ERROR_PREFIX = "hamnet: error:"
INTERRUPT_PREFIXES = ("hamnet: error:", "hamnet: interrupted", "hamnet: terminated")


# -- shared tiny inputs -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    """A springs file (6 systems, 4 particles, 2D), another with other systems, a 3D nbody file, a checkpoint
    of HLieConv SO2 (width 8, depth 1, one epoch) trained on the first; a 2D nbody file with a checkpoint
    trained on it (its only feature the masses) and a 2D charged file (masses and charges), for data of
    another kind than a model's; and a 6-particle springs file, the shipped models' kind."""
    from hamnet.cli import main
    from hamnet.io import save_trajectories
    from hamnet.simulation import generate
    from hamnet.systems import Charged, NBody, Springs

    folder = tmp_path_factory.mktemp("faults")
    files = {"springs": folder / "springs.npz", "other": folder / "other.npz", "nbody": folder / "nbody3d.npz",
             "nbody2d": folder / "nbody2d.npz", "charged": folder / "charged.npz", "springs6": folder / "springs6.npz"}
    save_trajectories(files["springs"], generate(Springs(n_particles=4), n_systems=6, steps=8, dt=0.01, seed=0))
    save_trajectories(files["other"], generate(Springs(n_particles=4), n_systems=6, steps=8, dt=0.01, seed=9))
    save_trajectories(files["nbody"], generate(NBody(dim=3, n_particles=4), n_systems=3, steps=5, dt=0.01, seed=0))
    save_trajectories(files["nbody2d"], generate(NBody(n_particles=4), n_systems=6, steps=8, dt=0.01, seed=0))
    save_trajectories(files["charged"], generate(Charged(n_particles=4), n_systems=3, steps=5, dt=0.01, seed=0))
    save_trajectories(files["springs6"], generate(Springs(), n_systems=2, steps=5, dt=0.01, seed=0))
    assert main(["train", "--data", str(files["springs"]), "--out", str(folder / "run"), *TRAIN.split()]) == 0
    assert main(["train", "--data", str(files["nbody2d"]), "--out", str(folder / "run-nbody"), *TRAIN.split()]) == 0
    files["ckpt"], files["nbody_ckpt"] = folder / "run" / "best.pt", folder / "run-nbody" / "best.pt"
    return files


def stage(tmp: Path, shared: dict[str, Path], build, monkeypatch) -> dict[str, Path]:
    """Copy the shared inputs into ``tmp``, run the case's builder there and make ``tmp`` the working
    folder (so a stray relative write shows up in its listing). Returns the names the argv uses."""
    names = {"tmp": tmp}
    for name, file in (("springs", "springs.npz"), ("nbody", "nbody3d.npz"), ("ckpt", "model.pt")):
        names[name] = tmp / file
        shutil.copyfile(shared["ckpt" if name == "ckpt" else name], names[name])
    if build is not None:
        names.update(build(tmp, shared))
    monkeypatch.chdir(tmp)
    monkeypatch.delenv("HAMNET_DEBUG", raising=False)
    return names


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``, hidden ones included, links not followed: relative path -> the
    sha256 of a file, ``folder``, ``link -> target``, or ``special`` (never opened: a FIFO would block)."""
    entries = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(root, name)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                kind = f"link -> {os.readlink(path)}"
            elif stat.S_ISDIR(mode):
                kind = "folder"
            elif stat.S_ISREG(mode):
                kind = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                kind = "special"
            entries[path.relative_to(folder).as_posix()] = kind
    return entries


def assert_nothing_lost(before: dict[str, str], after: dict[str, str], allowed: tuple[str, ...]) -> None:
    """Every entry of ``before`` is unchanged in ``after``, and every new entry matches a pattern of
    ``allowed`` (a hidden file only when a pattern names it exactly, like a run folder's lock: a
    temporary left behind is a failure)."""
    changed = sorted(p for p in before if p in after and after[p] != before[p])
    removed = sorted(p for p in before if p not in after)

    def expected(path: str) -> bool:
        hidden = any(part.startswith(".") for part in path.split("/"))
        return path in allowed if hidden else any(fnmatch.fnmatch(path, pattern) for pattern in allowed)

    new = sorted(p for p in after if p not in before and not expected(p))
    assert not (changed or removed or new), f"changed {changed}, removed {removed}, left behind {new}"


def assert_one_line(err: str, prefixes: tuple[str, ...] = (ERROR_PREFIX,)) -> None:
    assert err.startswith(prefixes) and err.count("\n") == 1 and err.endswith("\n"), \
        f"stderr is not one line starting with {' or '.join(prefixes)}: {err[-600:]!r}"


def restore_permissions(folder: Path) -> None:
    for root, folders, _ in os.walk(folder):
        for name in folders:
            Path(root, name).chmod(0o755)


# -- builders: what a case puts in its folder ---------------------------------------------------------
def read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return arrays, json.loads(str(arrays.pop("meta")))


def write_npz(path: Path, arrays: dict, meta: dict | str) -> Path:
    """A .npz as numpy writes it, past hamnet's checks; ``meta`` a dict or raw text. Any suffix."""
    with open(path, "wb") as handle:
        np.savez(handle, meta=np.array(meta if isinstance(meta, str) else json.dumps(meta)), **arrays)
    return path


def variant(name: str, change: Callable[[dict, dict], object]):
    """Builder: the springs file with ``change(arrays, meta)`` applied, as NAME, given to argv as {file}."""
    def build(tmp, shared):
        arrays, meta = read_npz(tmp / "springs.npz")
        change(arrays, meta)
        return {"file": write_npz(tmp / name, arrays, meta)}
    return build


def raw(name: str, content: Callable[[bytes], bytes]):
    """Builder: NAME holding ``content(bytes of the springs file)``, as {file}."""
    def build(tmp, shared):
        (tmp / name).write_bytes(content((tmp / "springs.npz").read_bytes()))
        return {"file": tmp / name}
    return build


def copy_as(name: str, source: str = "springs.npz"):
    """Builder: a copy of a staged input under another name (an input named like an output), as {file}."""
    def build(tmp, shared):
        shutil.copyfile(tmp / source, tmp / name)
        return {"file": tmp / name}
    return build


def symlink(name: str, target: str):
    """Builder: NAME, a symbolic link to the staged input TARGET, as {link}."""
    def build(tmp, shared):
        (tmp / name).symlink_to(tmp / target)
        return {"link": tmp / name}
    return build


def folders(*names: str, files: dict[str, str] | None = None, read_only: str | None = None):
    """Builder: empty folders, files with text in them, and a folder made read-only (the case is
    skipped where that folder stays writable, as for root)."""
    def build(tmp, shared):
        for name in names:
            (tmp / name).mkdir()
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        if read_only is not None:
            (tmp / read_only).mkdir()
            (tmp / read_only).chmod(0o555)
            if os.access(tmp / read_only, os.W_OK):
                pytest.skip("a read-only folder is writable here (running as root)")
        return {}
    return build


def settings(text: str):
    """Builder: the settings file run.toml holding ``text`` (for ``hamnet train --config``)."""
    def build(tmp, shared):
        (tmp / "run.toml").write_text(text)
        return {}
    return build


def plugin(text: str):
    """Builder: a Python file of the user's, as {py} (its path without the .py suffix in {mod})."""
    def build(tmp, shared):
        (tmp / "mine.py").write_text(text)
        return {"py": tmp / "mine.py", "mod": tmp / "mine"}
    return build


def user_system(body: str):
    """Builder: the user's system class ``Mine`` (springs, with ``body`` overriding parts), as {py}."""
    return plugin("import sys\nimport torch\nfrom hamnet.systems import Springs\n\n\nclass Mine(Springs):\n"
                  f"    name = 'mine'\n\n{body}\n")


MARKER_CODE = f"import pathlib\npathlib.Path(__file__).with_name({MARKER!r}).write_text('code ran')\n"


def data_naming_code(tmp, shared):
    """Builder: evil.py, which writes the marker when imported and defines a springs-like system, and
    evil.npz, the springs data whose meta names that file as its system. As {file}."""
    (tmp / "evil.py").write_text(MARKER_CODE + "from hamnet.systems import Springs\n\n\n"
                                 "class Evil(Springs):\n    name = 'evil'\n")
    arrays, meta = read_npz(tmp / "springs.npz")
    meta["system"] = f"{tmp / 'evil.py'}:Evil"
    return {"file": write_npz(tmp / "evil.npz", arrays, meta)}


class RunsCode:
    """Unpickling this writes the marker file: what any hostile pickle could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def pickle_npz(tmp, shared):
    """Builder: a trajectory file whose 'z' is an object array, pickled, as {file}."""
    arrays, meta = read_npz(tmp / "springs.npz")
    arrays["z"] = np.array([RunsCode(tmp / MARKER)], dtype=object)
    return {"file": write_npz(tmp / "pickle.npz", arrays, meta)}


def huge_header_npz(tmp, shared):
    """Builder: a trajectory file whose 'z' header claims ~116 TiB (and holds 64 bytes), as {file}."""
    arrays, meta = read_npz(tmp / "springs.npz")
    arrays["meta"] = np.array(json.dumps(meta))
    path = tmp / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in arrays.items():
            buffer = io.BytesIO()
            if name == "z":
                np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False,
                                                              "shape": TERABYTES})
                buffer.write(bytes(64))
            else:
                np.lib.format.write_array(buffer, value, allow_pickle=False)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return {"file": path}


def checkpoint(change: Callable[[dict, Path], object]):
    """Builder: the staged checkpoint's contents with ``change(state, tmp)`` applied, re-saved with
    ``torch.save`` as ckpt-x.pt, given to argv as {file}."""
    def build(tmp, shared):
        state = torch.load(tmp / "model.pt", map_location="cpu", weights_only=True)
        state = change(state, tmp) or state
        torch.save(state, tmp / "ckpt-x.pt")
        return {"file": tmp / "ckpt-x.pt"}
    return build


def _pickle_bomb(state, tmp):
    state["model"] = RunsCode(tmp / MARKER)


def _unregistered_model(state, tmp):
    state["model_config"]["name"] = "made-up-model"


def _settings_say_six(arrays, meta):
    meta["system_settings"]["n_particles"] = 6  # the arrays hold 4


def _nan(arrays, meta):
    arrays["z"][0, 3, 0, 0, 0] = np.nan


def _no_k(arrays, meta):
    del arrays["k"]


def _scaled(arrays, meta):
    arrays["z"] *= 1e30


def _wrong_shape(arrays, meta):
    arrays["z"] = arrays["z"][:, :, :1]


def _negative_dt(arrays, meta):
    meta["dt"] = -0.01


def _corrupt(content: bytes) -> bytes:
    middle = len(content) // 2
    return content[:middle] + bytes(b ^ 0xFF for b in content[middle: middle + 32]) + content[middle + 32:]


def foreign_npz(tmp, shared):
    """Builder: a .npz of someone else's arrays, no meta, as {file}."""
    with open(tmp / "foreign.npz", "wb") as handle:
        np.savez(handle, weights=np.zeros(3), labels=np.arange(3.0))
    return {"file": tmp / "foreign.npz"}


def meta_not_json(tmp, shared):
    arrays, _ = read_npz(tmp / "springs.npz")
    return {"file": write_npz(tmp / "meta.npz", arrays, "{not json")}


def truncated_checkpoint(tmp, shared):
    (tmp / "half.pt").write_bytes((tmp / "model.pt").read_bytes()[:2000])
    return {"file": tmp / "half.pt"}


def rollout_naming_hostile_checkpoint(tmp, shared):
    """Builder: a checkpoint that runs code when unpickled, and roll.npz, a rollout file naming it, as {file}."""
    names = checkpoint(_pickle_bomb)(tmp, shared)
    return variant("roll.npz", lambda arrays, meta: meta.update(checkpoint=str(names["file"])))(tmp, shared)


def user_file_named_like_demo_output(tmp, shared):
    """Builder: the folder mine/ holding the user's own data under a name the demo writes."""
    (tmp / "mine").mkdir()
    shutil.copyfile(tmp / "springs.npz", tmp / "mine" / "springs-train.npz")
    return {}


def fifo(tmp, shared):
    os.mkfifo(tmp / "pipe.npz")
    return {"file": tmp / "pipe.npz"}


def _run_trained_on_changed_data(tmp, shared):
    """Builder: a finished run on data.npz, whose contents are then replaced by other systems."""
    from hamnet.cli import main

    shutil.copyfile(tmp / "springs.npz", tmp / "data.npz")
    assert main(["train", "--data", str(tmp / "data.npz"), "--out", str(tmp / "run"), *TRAIN.split()]) == 0
    shutil.copyfile(shared["other"], tmp / "data.npz")
    return {"file": tmp / "data.npz"}


def weights_finite(tmp: Path, code: int) -> None:
    """Check: every checkpoint a diverged run left holds finite weights only."""
    for path in tmp.glob("run/*.pt"):
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), \
            f"{path.name} holds non-finite weights"


# -- builders and checks: provenance, files used for what they are, models and their data -----------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def chain(*builders):
    """Builder: each of ``builders`` in turn, their names merged (a later one wins)."""
    def build(tmp, shared):
        names = {}
        for builder in builders:
            names.update(builder(tmp, shared))
        return names
    return build


def from_shared(key: str, name: str, as_name: str = "file"):
    """Builder: a copy of the shared input KEY as NAME, given to argv as {AS_NAME}."""
    def build(tmp, shared):
        shutil.copyfile(shared[key], tmp / name)
        return {as_name: tmp / name}
    return build


def hamnet_in(tmp: Path, argv: list) -> None:
    """``hamnet ARGV`` run by a builder from the case folder; it must succeed."""
    from hamnet.cli import main

    before = Path.cwd()
    os.chdir(tmp)
    try:
        assert main([str(arg) for arg in argv]) == 0
    finally:
        os.chdir(before)


def rollout_of(checkpoint: str = "model.pt", name: str = "roll.npz", change: Callable[[dict], object] | None = None):
    """Builder: `hamnet rollout --checkpoint CHECKPOINT` (as given, from the case folder) from the springs file
    into NAME, its meta then changed by ``change(meta)`` where given (a file of an earlier hamnet), as {file}."""
    def build(tmp, shared):
        hamnet_in(tmp, ["rollout", "--checkpoint", checkpoint, "--data", "springs.npz", "--out", name])
        if change is not None:
            arrays, meta = read_npz(tmp / name)
            change(meta)
            write_npz(tmp / name, arrays, meta)
        return {"file": tmp / name}
    return build


def shadowing_file(tmp, shared):
    """Builder: springs-so2, a copy of the staged checkpoint named like the shipped model."""
    shutil.copyfile(tmp / "model.pt", tmp / "springs-so2")
    return {}


def shadow_gone(tmp, shared):
    """Builder: the local file springs-so2, used by a rollout (roll.npz, as {file}) and then removed."""
    names = chain(shadowing_file, rollout_of("springs-so2"))(tmp, shared)
    (tmp / "springs-so2").unlink()
    return names


def checkpoint_replaced(tmp, shared):
    """Builder: roll.npz (as {file}), a rollout of model.pt, whose weights then change (another sha256)."""
    names = rollout_of()(tmp, shared)
    state = torch.load(tmp / "model.pt", map_location="cpu", weights_only=True)
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first] + 1
    torch.save(state, tmp / "model.pt")
    return names


def _fake_rollout(diverged: tuple[int, ...]):
    """A change for :func:`variant`: the springs file as a rollout of a model (not this case's), in which
    the systems ``diverged`` diverged at step 3 (held at step 2 from then on)."""
    def change(arrays, meta):
        meta.update(model="hlieconv SO2", checkpoint="elsewhere.pt", method="leapfrog",
                    diverged=[{"system": b, "step": 3} for b in diverged])
        for b in diverged:
            arrays["z"][b, 3:] = arrays["z"][b, 2]
    return change


def _short_truth(arrays, meta):
    arrays["z"], arrays["t"] = arrays["z"][:, :5], arrays["t"][:5]


def short_truth(tmp, shared):
    """Builder: the springs file cut to its first 4 steps, as {truth}."""
    return {"truth": variant("short.npz", _short_truth)(tmp, shared)["file"]}


def other_truth(tmp, shared):
    """Builder: springs of other systems (other initial states), as {truth}."""
    return from_shared("other", "other.npz", "truth")(tmp, shared)


def _no_checkpoint_sha(meta):
    del meta["checkpoint_sha256"]


def _no_data_record(state, tmp):
    del state["data"]


def nbody_model_and(key: str):
    """Builder: the checkpoint trained on 2D nbody (masses only) as {model}, and the shared file KEY as {file}."""
    return chain(from_shared("nbody_ckpt", "nbody-model.pt", "model"), from_shared(key, f"{key}.npz"))


def read_metrics(tmp: Path) -> dict:
    return json.loads((tmp / "metrics.json").read_text())


def records_shadowing_file(tmp: Path, code: int) -> None:
    """Check: r.npz names the local file as ./springs-so2, with its sha256 and the data's."""
    meta = read_npz(tmp / "r.npz")[1]
    assert meta["checkpoint"] == "./springs-so2" and meta["checkpoint_sha256"] == sha256(tmp / "springs-so2")
    assert meta["pretrained"] is None and meta["data_sha256"] == sha256(tmp / "springs.npz")


def records_pretrained(tmp: Path, code: int) -> None:
    """Check: r.npz names the shipped springs-so2 as pretrained:springs-so2, with its sha256 and version."""
    from hamnet.checkpoint import pretrained_models
    from hamnet.version import __version__

    meta = read_npz(tmp / "r.npz")[1]
    assert meta["checkpoint"] == "pretrained:springs-so2"
    assert meta["checkpoint_sha256"] == sha256(pretrained_models()["springs-so2"])
    assert meta["pretrained"] == {"name": "springs-so2", "hamnet_version": __version__}


def records_sources(read: Callable[[Path], dict]):
    """Check: the record ``read(case folder)`` names the checkpoint and data with their sha256."""
    def check(tmp: Path, code: int) -> None:
        record = read(tmp)
        assert record["checkpoint"] == str(tmp / "model.pt") and record["checkpoint_sha256"] == sha256(tmp / "model.pt")
        assert record["data"] == str(tmp / "springs.npz") and record["data_sha256"] == sha256(tmp / "springs.npz")
    return check


def left_out_diverged(tmp: Path, code: int) -> None:
    assert read_metrics(tmp)["truth_left_out"]["systems"] == [1, 4] and read_metrics(tmp)["n_systems"] == 4


def trained_without_diverged(tmp: Path, code: int) -> None:
    record = json.loads((tmp / "run" / "config.json").read_text())["data"]
    assert record["rollout"] == {"model": "hlieconv SO2", "diverged_left_out": 2}


def scored_steps(steps: int):
    """Check: the rollout file was scored over ``steps`` steps, with its own sha256 recorded."""
    def check(tmp: Path, code: int) -> None:
        metrics = read_metrics(tmp)
        assert metrics["steps"] == steps and len(metrics["rollout_error"]["time"]) == steps + 1
        assert metrics["rollout_sha256"] == sha256(tmp / "roll.npz")
    return check


def recorded_transfer(tmp: Path, code: int) -> None:
    transfer = read_metrics(tmp)["transfer"]
    assert "system 'charged' (trained on 'nbody')" in transfer["differences"]
    assert transfer["trained_on"]["system"] == "nbody"


def same_class_elsewhere(tmp, shared):
    """Builder: other/mine.py, which defines a class Evil too (evil.py's class name in another file), as {py}."""
    (tmp / "other").mkdir()
    (tmp / "other" / "mine.py").write_text("from hamnet.systems import Springs\n\n\nclass Evil(Springs):\n"
                                           "    name = 'evil'\n")
    return {"py": tmp / "other" / "mine.py"}


def _made_by_a_class_named_springs(arrays, meta):
    meta["system"] = "x.py:Springs"


def rollout_on_six_particles(tmp, shared):
    """Builder: r6.npz (as {file}), a rollout with --transfer of the 4-particle model on 6-particle springs."""
    shutil.copyfile(shared["springs6"], tmp / "six.npz")
    hamnet_in(tmp, ["rollout", "--checkpoint", "model.pt", "--data", "six.npz", "--transfer", "--out", "r6.npz"])
    return {"file": tmp / "r6.npz"}


def first_two_rolled_out_and_diverged_in_truth(tmp, shared):
    """Builder: roll.npz (as {file}), a rollout of the first 2 systems of springs, and truth.npz (as {truth}),
    springs as a rollout file in which exactly those 2 systems diverged."""
    hamnet_in(tmp, ["rollout", "--checkpoint", "model.pt", "--data", "springs.npz", "--n-systems", "2",
                    "--out", "roll.npz"])
    return {"file": tmp / "roll.npz", "truth": variant("truth.npz", _fake_rollout((0, 1)))(tmp, shared)["file"]}


def records_made_from(tmp: Path, code: int) -> None:
    """Check: the metrics of a rollout file hold what made_from records of the rollout's checkpoint and the data."""
    from hamnet.checkpoint import made_from

    metrics, meta = read_metrics(tmp), read_npz(tmp / "roll.npz")[1]
    expected = made_from(meta, tmp / "springs.npz")
    assert {key: metrics[key] for key in expected} == expected and expected["checkpoint_sha256"] is not None


def _params_unrecorded(state, tmp):
    del state["data"]["params"]


# -- the command-line corpus ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One fault: ``argv`` (formatted with the staged paths, then split on spaces), the builder of its
    inputs, the exit statuses allowed, outputs allowed after exit status 0, leftovers allowed after
    any status, strings stderr must hold (the flag at fault, or a warning on success), strings (formatted
    as ``argv``) that neither stdout nor stderr may hold, an extra check, and its time limit."""

    name: str
    argv: str
    build: Callable[[Path, dict], dict] | None = None
    codes: tuple[int, ...] = (1,)
    outputs: tuple[str, ...] = ()
    leftovers: tuple[str, ...] = ()
    mentions: tuple[str, ...] = ()
    check: Callable[[Path, int], None] | None = None
    seconds: float = WATCHDOG
    absent: tuple[str, ...] = ()


GEN = "generate --quiet"
OUT_NPZ = "--out {tmp}/x.npz"
ROLL = "rollout --checkpoint {ckpt} --data {springs}"
EVAL = "evaluate --checkpoint {ckpt} --data {springs}"
DATA_IS_DATA = (0, 1)  # skip what needs the file's own system, or fail in one line; never run its code
#: a hint naming the code a data file points to as a ready-to-run flag (the case folder holds evil.py)
CODE_AS_A_COMMAND = ("--true-system {tmp}",)
#: the tiny training run of a model that uses no group: TRAIN without --group and --kernel-bound
PLAIN = TRAIN.replace("--model hlieconv --group SO2 ", "").replace("--kernel-bound none ", "")
METRICS = "--out {tmp}/metrics.json"
#: a training command reading the settings file run.toml of the case folder
CONFIG_RUN = "train --data {springs} --out {tmp}/run --config {tmp}/run.toml"
ROLL_FILE = "evaluate --rollout {file}"
LEARNED = "plot conservation {file} --learned-energy"

CASES = [
    # generate: absurd sizes refused before allocating; sub-step counts limited; flags named
    Case("generate-n-systems-1e12", f"{GEN} --n-systems {10**12} {OUT_NPZ}", seconds=PREFLIGHT),
    Case("generate-n-particles-1e9", f"{GEN} --n-particles {10**9} {OUT_NPZ}", seconds=PREFLIGHT),
    Case("generate-steps-1e12", f"{GEN} --steps {10**12} {OUT_NPZ}", seconds=PREFLIGHT),
    Case("generate-dt-1e300", f"{GEN} --n-systems 2 --steps 5 --dt 1e300 {OUT_NPZ}", seconds=PREFLIGHT),
    Case("generate-dt-1e4", f"{GEN} --n-systems 2 --steps 5 --dt 1e4 {OUT_NPZ}", seconds=PREFLIGHT),
    Case("generate-nbody-softening-1e-6", f"{GEN} --system nbody --softening 1e-6 --n-systems 2 --steps 5 {OUT_NPZ}",
         seconds=PREFLIGHT),
    Case("generate-max-substeps-negative", f"{GEN} --n-systems 2 --steps 5 --max-substeps -1 {OUT_NPZ}",
         mentions=("--max-substeps",)),
    Case("generate-seed-2**70", f"{GEN} --n-systems 2 --steps 5 --seed {2**70} {OUT_NPZ}", mentions=("--seed",)),
    Case("generate-n-systems-negative", f"{GEN} --n-systems -3 {OUT_NPZ}", mentions=("--n-systems",)),
    Case("generate-steps-negative", f"{GEN} --steps -1 {OUT_NPZ}", mentions=("--steps",)),
    Case("generate-steps-not-a-number", f"{GEN} --steps ten {OUT_NPZ}", mentions=("--steps",)),
    Case("generate-softening-negative", f"{GEN} --system nbody --softening -1 --n-systems 2 --steps 5 {OUT_NPZ}"),
    Case("generate-unknown-family", f"{GEN} --system nbody --family ring --n-systems 2 --steps 5 {OUT_NPZ}"),
    Case("generate-unknown-system", f"{GEN} --system planets {OUT_NPZ}"),
    Case("generate-out-wrong-suffix", f"{GEN} --n-systems 2 --steps 5 --out {{tmp}}/x.txt"),
    Case("generate-out-no-suffix", f"{GEN} --n-systems 2 --steps 5 --out {{tmp}}/x"),
    Case("generate-out-missing-folder", f"{GEN} --n-systems 2 --steps 5 --out {{tmp}}/missing/x.npz"),
    Case("generate-out-unwritable-folder", f"{GEN} --n-systems 2 --steps 5 --out {{tmp}}/locked/x.npz",
         build=folders(read_only="locked")),
    Case("generate-out-is-a-folder", f"{GEN} --n-systems 2 --steps 5 --out {{tmp}}/x.npz", build=folders("x.npz")),
    Case("generate-out-is-the-system-file", f"{GEN} --n-systems 2 --steps 5 --system {{py}}:Mine --out {{py}}",
         build=user_system("    pass")),
    Case("generate-system-raises-in-init", f"{GEN} --n-systems 2 --steps 5 --system {{py}}:Mine {OUT_NPZ}",
         build=user_system("    def __init__(self, **settings):\n        raise RuntimeError('broken on purpose')")),
    Case("generate-system-sys-exit-3", f"{GEN} --n-systems 2 --steps 5 --system {{py}}:Mine {OUT_NPZ}",
         build=user_system("    def sample_params(self, n_systems, generator):\n        sys.exit(3)")),
    Case("generate-system-settings-not-json", f"{GEN} --n-systems 2 --steps 5 --system {{py}}:Mine {OUT_NPZ}",
         build=user_system("    def settings(self):\n        return {**super().settings(), 'when': object()}")),
    Case("generate-system-class-missing", f"{GEN} --n-systems 2 --steps 5 --system {{py}}:Nope {OUT_NPZ}",
         build=user_system("    pass")),
    Case("generate-plugin-missing", f"{GEN} --n-systems 2 --steps 5 --plugin {{tmp}}/nope.py {OUT_NPZ}"),
    Case("generate-plugin-raises", f"{GEN} --n-systems 2 --steps 5 --plugin {{py}} {OUT_NPZ}",
         build=plugin("raise RuntimeError('plugin broken on purpose')\n")),

    # info: malformed, truncated, foreign, hostile and impossible files
    Case("info-directory", "info {tmp}"),
    Case("info-missing-file", "info {tmp}/none.npz"),
    Case("info-fifo", "info {file}", build=fifo),
    Case("info-empty-file", "info {file}", build=raw("empty.npz", lambda content: b"")),
    Case("info-garbage", "info {file}", build=raw("garbage.npz", lambda content: b"\x00garbage")),
    Case("info-truncated", "info {file}", build=raw("half.npz", lambda content: content[: len(content) // 2])),
    Case("info-corrupt-bytes", "info {file}", build=raw("corrupt.npz", _corrupt)),
    Case("info-foreign-npz", "info {file}", build=foreign_npz),
    Case("info-meta-not-json", "info {file}", build=meta_not_json),
    Case("info-nan", "info {file}", build=variant("nan.npz", _nan)),
    Case("info-wrong-shape", "info {file}", build=variant("shape.npz", _wrong_shape)),
    Case("info-negative-dt", "info {file}", build=variant("dt.npz", _negative_dt)),
    Case("info-pickle-npz", "info {file}", build=pickle_npz),
    Case("info-header-claims-terabytes", "info {file}", build=huge_header_npz, seconds=PREFLIGHT),
    Case("info-data-names-code", "info {file}", build=data_naming_code, codes=DATA_IS_DATA, absent=CODE_AS_A_COMMAND),
    Case("info-settings-contradict-the-arrays", "info {file}", build=variant("sixth.npz", _settings_say_six),
         mentions=("n_particles = 6",)),
    Case("train-settings-contradict-the-arrays", f"train --data {{file}} --out {{tmp}}/run {TRAIN}",
         build=variant("sixth.npz", _settings_say_six), mentions=("n_particles = 6",)),

    # train: divergence, absurd sizes, flags out of range, unknown names, hostile data, run folders
    Case("train-lr-1e6", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --lr 1e6", leftovers=RUN_FOLDER,
         mentions=("lower --lr",), check=weights_finite),
    Case("train-weight-decay-inf", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --weight-decay inf",
         leftovers=RUN_FOLDER, check=weights_finite),
    Case("train-data-scaled-1e30", f"train --data {{file}} --out {{tmp}}/run {TRAIN}",
         build=variant("big.npz", _scaled), leftovers=RUN_FOLDER, check=weights_finite),
    Case("train-width-1e7", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --width {10**7}", seconds=PREFLIGHT),
    Case("train-threads-1e30", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --threads {10**30}",
         mentions=("--threads",)),
    Case("train-seed-2**70", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --seed {2**70}",
         mentions=("--seed",)),
    Case("train-kernel-bound-not-a-number", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --kernel-bound wide",
         mentions=("--kernel-bound",)),
    Case("train-kernel-bound-on-a-model-without-a-kernel",
         f"train --data {{springs}} --out {{tmp}}/run {TRAIN.replace('--group SO2 ', '')} --model hogn --kernel-bound 3",
         mentions=("--kernel-bound",)),
    Case("train-epochs-negative", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --epochs -1",
         mentions=("--epochs",)),
    Case("train-batch-size-negative", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --batch-size -5",
         mentions=("--batch-size",)),
    Case("train-validation-1.5", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --validation 1.5",
         mentions=("--validation",)),
    Case("train-substeps-0", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --substeps 0",
         mentions=("--substeps",)),
    Case("train-substeps-not-a-number", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --substeps many",
         mentions=("--substeps",)),
    Case("train-warmup-1", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --warmup 1", mentions=("--warmup",)),
    Case("train-clip-grad-negative", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --clip-grad -1",
         mentions=("--clip-grad",)),
    Case("train-weight-floor-0", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --weight-floor 0",
         mentions=("--weight-floor",)),
    Case("train-select-steps-without-select-rollout",
         f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --select-steps 5", mentions=("--select-steps",)),
    Case("train-select-rollout-longer-than-the-data",
         f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --select rollout --select-steps 100000",
         mentions=("select_steps",)),
    Case("train-select-rollout-without-validation",
         f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --select rollout --validation 0",
         mentions=("--validation",)),
    Case("train-unknown-model", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --model transformer"),
    Case("train-unknown-group", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --group SU7"),
    Case("train-unknown-method", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --method euler9"),
    Case("train-out-is-the-data", f"train --data {{springs}} --out {{springs}} {TRAIN}"),
    Case("train-data-is-a-directory", f"train --data {{tmp}} --out {{tmp}}/run {TRAIN}"),
    Case("train-data-nan", f"train --data {{file}} --out {{tmp}}/run {TRAIN}", build=variant("nan.npz", _nan)),
    Case("train-data-pickle", f"train --data {{file}} --out {{tmp}}/run {TRAIN}", build=pickle_npz),
    Case("train-data-header-claims-terabytes", f"train --data {{file}} --out {{tmp}}/run {TRAIN}",
         build=huge_header_npz, seconds=PREFLIGHT),
    Case("train-resume-after-data-changed", f"train --data {{file}} --out {{tmp}}/run {TRAIN} --resume",
         build=_run_trained_on_changed_data),

    # train --config: a settings file missing, not TOML, or holding what is no setting (checked whole, flags aside)
    Case("train-config-missing", f"{CONFIG_RUN} {TRAIN}", mentions=("run.toml does not exist",)),
    Case("train-config-is-a-folder", f"train --data {{springs}} --out {{tmp}}/run --config {{tmp}} {TRAIN}",
         mentions=("is a folder",)),
    Case("train-config-not-toml", f"{CONFIG_RUN} {TRAIN}", build=settings("[train]\nepochs = = 3\n"),
         mentions=("not valid TOML", "line 2")),
    Case("train-config-not-text", f"{CONFIG_RUN} {TRAIN}", build=raw("run.toml", lambda content: content[:256]),
         mentions=("not UTF-8",)),
    Case("train-config-unknown-key", f"{CONFIG_RUN} {TRAIN}", build=settings("[train]\nepoch = 3\n"),
         mentions=("[train] has no setting epoch",)),
    Case("train-config-unknown-table", f"{CONFIG_RUN} {TRAIN}", build=settings("[optimiser]\nlr = 0.1\n"),
         mentions=("[optimiser]",)),
    Case("train-config-key-outside-a-table", f"{CONFIG_RUN} {TRAIN}", build=settings("epochs = 3\n"),
         mentions=("epochs outside a table",)),
    Case("train-config-wrong-type", f"{CONFIG_RUN} {TRAIN}", build=settings('[model]\nwidth = "wide"\n'),
         mentions=("[model] field 'width' must be int",)),
    Case("train-config-run-wrong-type", f"{CONFIG_RUN} {TRAIN}", build=settings("[run]\ntensorboard = 1\n"),
         mentions=("[run] field 'tensorboard' must be bool",)),
    Case("train-config-epochs-0", f"{CONFIG_RUN} {TRAIN}", build=settings("[train]\nepochs = 0\n"),
         mentions=("epochs must be at least 1",)),
    Case("train-config-depth-1e5", f"{CONFIG_RUN} {TRAIN.replace('--depth 1 ', '')}",
         build=settings("[model]\ndepth = 100000\n"), mentions=("[model] depth must be between 1 and 1000",)),
    Case("train-config-without-data", "train --config {tmp}/run.toml --quiet",
         build=settings('[run]\nout = "run"\n'), mentions=("--data is required",)),

    # rollout: outputs never destroy inputs; hostile checkpoints; divergence; sizes
    Case("rollout-out-is-the-data", f"{ROLL} --out {{springs}}"),
    Case("rollout-out-is-a-link-to-the-data", f"{ROLL} --out {{link}}", build=symlink("link.npz", "springs.npz")),
    Case("rollout-data-is-a-link-to-the-out", "rollout --checkpoint {ckpt} --data {link} --out {springs}",
         build=symlink("link.npz", "springs.npz")),
    Case("rollout-out-spelled-differently", f"{ROLL} --out {{tmp}}/sub/../springs.npz", build=folders("sub")),
    Case("rollout-out-is-the-checkpoint", f"{ROLL} --out {{ckpt}}"),
    Case("rollout-out-wrong-suffix", f"{ROLL} --out {{tmp}}/r.json"),
    Case("rollout-out-missing-folder", f"{ROLL} --out {{tmp}}/missing/r.npz"),
    Case("rollout-steps-1e12", f"{ROLL} --steps {10**12} --out {{tmp}}/r.npz", seconds=PREFLIGHT),
    Case("rollout-diverges", f"{ROLL} --dt 1e3 --steps 10 --out {{tmp}}/r.npz"),
    Case("rollout-n-systems-negative", f"{ROLL} --n-systems -2 --out {{tmp}}/r.npz", mentions=("--n-systems",)),
    Case("rollout-unknown-method", f"{ROLL} --method euler9 --out {{tmp}}/r.npz"),
    Case("rollout-foreign-checkpoint", "rollout --checkpoint {file} --data {springs} --out {tmp}/r.npz",
         build=checkpoint(lambda state, tmp: {"weights": torch.zeros(3)})),
    Case("rollout-checkpoint-runs-code", "rollout --checkpoint {file} --data {springs} --out {tmp}/r.npz",
         build=checkpoint(_pickle_bomb)),
    Case("rollout-checkpoint-unregistered-model", "rollout --checkpoint {file} --data {springs} --out {tmp}/r.npz",
         build=checkpoint(_unregistered_model)),
    Case("rollout-checkpoint-truncated", "rollout --checkpoint {file} --data {springs} --out {tmp}/r.npz",
         build=truncated_checkpoint),
    Case("rollout-checkpoint-is-a-directory", "rollout --checkpoint {tmp} --data {springs} --out {tmp}/r.npz"),
    Case("rollout-2d-model-on-3d-data", "rollout --checkpoint {ckpt} --data {nbody} --out {tmp}/r.npz"),
    Case("rollout-data-nan", "rollout --checkpoint {ckpt} --data {file} --out {tmp}/r.npz",
         build=variant("nan.npz", _nan)),
    Case("rollout-data-header-claims-terabytes", "rollout --checkpoint {ckpt} --data {file} --out {tmp}/r.npz",
         build=huge_header_npz, seconds=PREFLIGHT),
    Case("rollout-data-names-code", "rollout --checkpoint {ckpt} --data {file} --transfer --out {tmp}/r.npz",
         build=data_naming_code, codes=DATA_IS_DATA, outputs=("r.npz",), absent=CODE_AS_A_COMMAND),

    # evaluate
    Case("evaluate-out-is-the-checkpoint", f"{EVAL} --out {{ckpt}}"),
    Case("evaluate-substeps-0", f"{EVAL} --out {{tmp}}/metrics.json --substeps 0", mentions=("--substeps",)),
    Case("evaluate-out-is-the-data", f"{EVAL} --out {{springs}}"),
    Case("evaluate-out-wrong-suffix", f"{EVAL} --out {{tmp}}/metrics.txt"),
    Case("evaluate-out-missing-folder", f"{EVAL} --out {{tmp}}/missing/metrics.json"),
    Case("evaluate-springs-without-k", "evaluate --checkpoint {ckpt} --data {file} --out {tmp}/metrics.json",
         build=variant("nok.npz", _no_k)),
    Case("evaluate-data-names-code", "evaluate --checkpoint {ckpt} --data {file} --transfer --out {tmp}/metrics.json",
         build=data_naming_code, codes=DATA_IS_DATA, outputs=("metrics.json",), absent=CODE_AS_A_COMMAND),
    Case("evaluate-unknown-method", f"{EVAL} --method euler9 --out {{tmp}}/metrics.json"),
    Case("evaluate-2d-model-on-3d-data", "evaluate --checkpoint {ckpt} --data {nbody} --out {tmp}/metrics.json"),
    Case("evaluate-checkpoint-runs-code", "evaluate --checkpoint {file} --data {springs} --out {tmp}/metrics.json",
         build=checkpoint(_pickle_bomb)),
    Case("evaluate-data-truncated", "evaluate --checkpoint {ckpt} --data {file} --out {tmp}/metrics.json",
         build=raw("half.npz", lambda content: content[: len(content) // 2])),

    # plot
    Case("plot-conservation-data-names-code", "plot conservation {file} --out {tmp}/fig.png", build=data_naming_code,
         codes=DATA_IS_DATA, outputs=("fig.png",), absent=CODE_AS_A_COMMAND),
    Case("plot-conservation-springs-without-k", "plot conservation {file} --out {tmp}/fig.png",
         build=variant("nok.npz", _no_k), codes=DATA_IS_DATA, outputs=("fig.png",)),
    Case("plot-conservation-learned-energy-checkpoint-runs-code", "plot conservation {file} --learned-energy "
         "--out {tmp}/fig.png", build=rollout_naming_hostile_checkpoint, codes=DATA_IS_DATA, outputs=("fig.png",)),
    Case("plot-paths-system-99", "plot paths {springs} --system 99 --out {tmp}/fig.png"),
    Case("plot-paths-system-minus-99", "plot paths {springs} --system -99 --out {tmp}/fig.png"),
    Case("plot-out-wrong-suffix", "plot conservation {springs} --out {tmp}/fig.gif"),
    Case("plot-out-is-the-input", "plot conservation {file} --out {file}", build=copy_as("fig.png")),
    Case("plot-out-missing-folder", "plot conservation {springs} --out {tmp}/missing/fig.png"),
    Case("plot-out-unwritable-folder", "plot conservation {springs} --out {tmp}/locked/fig.png",
         build=folders(read_only="locked")),
    Case("plot-error-truth-of-another-shape", "plot error {springs} --truth {nbody} --out {tmp}/fig.png"),
    Case("plot-input-truncated", "plot conservation {file} --out {tmp}/fig.png",
         build=raw("half.npz", lambda content: content[: len(content) // 2])),
    Case("plot-unknown-kind", "plot histogram {springs} --out {tmp}/fig.png"),
    Case("plot-conservation-systems-6-of-6", "plot conservation {springs} --systems 0 6 --out {tmp}/fig.png",
         mentions=("--systems", "system 6 is out of range", "6 systems")),
    Case("plot-error-systems-negative", "plot error {springs} --truth {springs} --systems -1 --out {tmp}/fig.png",
         mentions=("--systems",)),
    Case("plot-conservation-systems-repeated", "plot conservation {springs} --systems 1 1 --out {tmp}/fig.png",
         mentions=("--systems", "more than once")),
    Case("plot-conservation-systems-not-an-integer", "plot conservation {springs} --systems one --out {tmp}/fig.png",
         mentions=("--systems",)),
    Case("plot-conservation-systems-eleven", "plot conservation {springs} --systems 0 1 2 3 4 5 6 7 8 9 10 "
         "--out {tmp}/fig.png", mentions=("--systems", "at most 10")),
    Case("plot-conservation-systems-beyond-the-truth", "plot conservation {springs} --truth {nbody} --systems 4 "
         "--out {tmp}/fig.png", mentions=("--systems", "nbody3d.npz has 3 systems")),
    Case("plot-paths-with-systems", "plot paths {springs} --systems 0 --out {tmp}/fig.png", mentions=("--systems",)),

    # animate
    Case("animate-fps-1e-300", "animate {springs} --fps 1e-300 --out {tmp}/a.gif", mentions=("--fps",)),
    Case("animate-stride-0", "animate {springs} --stride 0 --out {tmp}/a.gif", mentions=("--stride",)),
    Case("animate-max-frames-0", "animate {springs} --max-frames 0 --out {tmp}/a.gif", mentions=("--max-frames",)),
    Case("animate-trail-negative", "animate {springs} --trail -1 --out {tmp}/a.gif", mentions=("--trail",)),
    Case("animate-system-99", "animate {springs} --system 99 --out {tmp}/a.gif"),
    Case("animate-out-wrong-suffix", "animate {springs} --out {tmp}/a.png"),
    Case("animate-out-is-the-input", "animate {file} --max-frames 2 --out {file}", build=copy_as("a.gif")),
    Case("animate-out-is-the-truth", "animate {springs} --truth {file} --max-frames 2 --out {file}",
         build=copy_as("t.gif")),
    Case("animate-out-missing-folder", "animate {springs} --out {tmp}/missing/a.gif"),
    Case("animate-truth-of-another-shape", "animate {springs} --truth {nbody} --out {tmp}/a.gif"),
    Case("animate-data-names-code", "animate {file} --max-frames 2 --out {tmp}/a.gif", build=data_naming_code,
         codes=DATA_IS_DATA, outputs=("a.gif",), absent=CODE_AS_A_COMMAND),

    # demo: the refusal path only
    Case("demo-out-holds-a-user-file", "demo --quick --quiet --out {tmp}/mine",
         build=folders("mine", files={"mine/notes.txt": "my notes"})),
    Case("demo-out-holds-a-user-file-named-like-its-own", "demo --quick --quiet --out {tmp}/mine",
         build=user_file_named_like_demo_output),
    Case("demo-out-is-a-file", "demo --quick --quiet --out {springs}"),
    Case("demo-seed-2**70", f"demo --quick --quiet --seed {2**70} --out {{tmp}}/new", mentions=("--seed",)),

    # provenance: files record the checkpoint and data they came from; a model named in a file is that model
    Case("rollout-records-its-sources", f"{ROLL} --out {{tmp}}/r.npz", codes=(0,), outputs=("r.npz",),
         check=records_sources(lambda tmp: read_npz(tmp / "r.npz")[1])),
    Case("evaluate-records-its-sources", f"{EVAL} {METRICS}", codes=(0,), outputs=("metrics.json",),
         check=records_sources(read_metrics)),
    Case("plot-learned-energy-of-a-replaced-checkpoint", f"{LEARNED} --out {{tmp}}/fig.png",
         build=checkpoint_replaced, mentions=("sha256", "not the model that made the file")),
    Case("plot-learned-energy-after-the-shadowing-file-is-gone", f"{LEARNED} --out {{tmp}}/fig.png", build=shadow_gone,
         mentions=("./springs-so2",)),
    Case("plot-learned-energy-of-an-earlier-hamnets-rollout", f"{LEARNED} --out {{tmp}}/fig.png",
         build=rollout_of(change=_no_checkpoint_sha), codes=(0,), outputs=("fig.png",), mentions=("unverified",)),
    Case("rollout-local-file-named-like-a-pretrained-model", "rollout --checkpoint springs-so2 --data {springs} "
         "--out {tmp}/r.npz", build=shadowing_file, codes=(0,), outputs=("r.npz",), check=records_shadowing_file),
    Case("rollout-local-folder-named-like-a-pretrained-model", "rollout --checkpoint springs-so2 --data {springs} "
         "--out {tmp}/r.npz", build=folders("springs-so2"), mentions=("pretrained:springs-so2",)),
    Case("rollout-pretrained-prefix-beside-a-local-folder-of-its-name", "rollout --checkpoint pretrained:springs-so2 "
         "--data {file} --out {tmp}/r.npz", build=chain(folders("springs-so2"), from_shared("springs6", "six.npz")),
         codes=(0,), outputs=("r.npz",), check=records_pretrained),

    # files used for what they are: a rollout is no ground truth; a model is not scored on its own output
    Case("train-on-a-rollout-file", f"train --data {{file}} --out {{tmp}}/run {TRAIN}",
         build=variant("roll.npz", _fake_rollout((1, 4))), mentions=("--allow-rollout",)),
    Case("train-on-a-rollout-file-allowed", f"train --data {{file}} --out {{tmp}}/run {TRAIN} --allow-rollout",
         build=variant("roll.npz", _fake_rollout((1, 4))), codes=(0,), outputs=RUN_FOLDER, leftovers=RUN_FOLDER,
         check=trained_without_diverged),
    Case("train-on-a-rollout-file-whose-every-system-diverged", f"train --data {{file}} --out {{tmp}}/run {TRAIN} "
         "--allow-rollout", build=variant("roll.npz", _fake_rollout(tuple(range(6)))), mentions=("every one",)),
    Case("evaluate-against-a-rollout-file", f"evaluate --checkpoint {{ckpt}} --data {{file}} {METRICS}",
         build=variant("roll.npz", _fake_rollout((1, 4))), mentions=("--allow-rollout",)),
    Case("evaluate-against-another-models-rollout-allowed", f"evaluate --checkpoint {{ckpt}} --data {{file}} "
         f"--allow-rollout {METRICS}", build=variant("roll.npz", _fake_rollout((1, 4))), codes=(0,),
         outputs=("metrics.json",), check=left_out_diverged),
    Case("evaluate-a-model-against-its-own-rollout", f"evaluate --checkpoint {{ckpt}} --data {{file}} --allow-rollout "
         f"{METRICS}", build=rollout_of(), mentions=("own output",)),
    Case("evaluate-a-model-against-its-own-rollout-of-an-earlier-hamnet", f"evaluate --checkpoint {{ckpt}} --data "
         f"{{file}} --allow-rollout {METRICS}", build=rollout_of(change=_no_checkpoint_sha), mentions=("own output",)),
    Case("evaluate-a-rollout-file", f"{ROLL_FILE} --data {{springs}} {METRICS}", build=rollout_of(), codes=(0,),
         outputs=("metrics.json",), check=scored_steps(8)),
    Case("evaluate-a-rollout-file-against-shorter-truth", f"{ROLL_FILE} --data {{truth}} {METRICS}",
         build=chain(rollout_of(), short_truth), codes=(0,), outputs=("metrics.json",), check=scored_steps(4)),
    Case("evaluate-a-rollout-file-at-a-shorter-horizon", f"{ROLL_FILE} --data {{springs}} --steps 3 {METRICS}",
         build=rollout_of(), codes=(0,), outputs=("metrics.json",), check=scored_steps(3)),
    Case("evaluate-a-rollout-file-past-its-horizon", f"{ROLL_FILE} --data {{springs}} --steps 20 {METRICS}",
         build=rollout_of(), mentions=("--steps",)),
    Case("evaluate-a-rollout-file-against-other-truth", f"{ROLL_FILE} --data {{truth}} {METRICS}",
         build=chain(rollout_of(), other_truth), mentions=("initial states",)),
    Case("evaluate-a-rollout-file-against-itself", f"{ROLL_FILE} --data {{file}} --allow-rollout {METRICS}",
         build=rollout_of(), mentions=("same file",)),
    Case("evaluate-a-generated-file-as-a-rollout", f"evaluate --rollout {{springs}} --data {{truth}} {METRICS}",
         build=other_truth, mentions=("not a rollout file",)),
    Case("evaluate-a-rollout-file-and-a-checkpoint", f"{ROLL_FILE} --checkpoint {{ckpt}} --data {{springs}} {METRICS}",
         build=rollout_of(), mentions=("--checkpoint",)),
    Case("evaluate-neither-a-rollout-file-nor-a-checkpoint", f"evaluate --data {{springs}} {METRICS}",
         mentions=("--checkpoint", "--rollout")),
    Case("evaluate-a-rollout-file-with-a-method", f"{ROLL_FILE} --data {{springs}} --method rk4 {METRICS}",
         build=rollout_of(), mentions=("--method",)),
    Case("evaluate-a-rollout-file-with-substeps", f"{ROLL_FILE} --data {{springs}} --substeps 4 {METRICS}",
         build=rollout_of(), mentions=("--substeps",)),
    Case("rollout-substeps-0", f"{ROLL} --substeps 0 --out {{tmp}}/r.npz", mentions=("--substeps",)),
    Case("evaluate-a-model-with-steps", f"{EVAL} --steps 3 {METRICS}", mentions=("--steps",)),

    # models know their data: another system, protocol, N, parameters or settings takes --transfer
    Case("evaluate-an-nbody-model-on-charged-data", f"evaluate --checkpoint {{model}} --data {{file}} {METRICS}",
         build=nbody_model_and("charged"), mentions=("--transfer", "system 'charged' (trained on 'nbody')")),
    Case("rollout-an-nbody-model-on-charged-data", "rollout --checkpoint {model} --data {file} --out {tmp}/r.npz",
         build=nbody_model_and("charged"), mentions=("--transfer",)),
    Case("evaluate-an-nbody-model-on-charged-data-as-transfer", f"evaluate --checkpoint {{model}} --data {{file}} "
         f"--transfer {METRICS}", build=nbody_model_and("charged"), codes=(0,), outputs=("metrics.json",),
         check=recorded_transfer),
    Case("rollout-a-pretrained-model-on-another-particle-count", "rollout --checkpoint pretrained:springs-so2 "
         "--data {springs} --out {tmp}/r.npz", mentions=("n_particles 4 (trained on 6)",)),
    Case("rollout-a-checkpoint-that-does-not-record-its-data", "rollout --checkpoint {file} --data {springs} "
         "--out {tmp}/r.npz", build=checkpoint(_no_data_record), codes=(0,), outputs=("r.npz",),
         mentions=("does not record",)),
    Case("evaluate-true-system-nbody-on-springs", f"{EVAL} --true-system nbody {METRICS}", mentions=("wrong physics",)),
    Case("plot-conservation-true-system-nbody-on-springs", "plot conservation {springs} --true-system nbody "
         "--out {tmp}/fig.png", mentions=("wrong physics",)),
    Case("evaluate-true-system-another-class-than-the-datas", f"evaluate --checkpoint {{ckpt}} --data {{file}} "
         f"--transfer --true-system {{py}}:Mine {METRICS}", build=chain(data_naming_code, user_system("    pass")),
         mentions=("wrong physics",)),

    # review fixes: one rule for the system (file and class names), rollouts never truth for figures,
    # evaluate --rollout checks shapes and kept systems first, records made_from, and notes what is unknown
    Case("evaluate-true-system-of-the-same-class-in-another-file", f"evaluate --checkpoint {{ckpt}} --data {{file}} "
         f"--transfer --true-system {{py}}:Evil {METRICS}", build=chain(data_naming_code, same_class_elsewhere),
         mentions=("wrong physics",)),
    Case("evaluate-true-system-registered-for-a-files-class-of-its-name", f"evaluate --checkpoint {{ckpt}} --data "
         f"{{file}} --transfer --true-system springs {METRICS}", build=variant("x.npz", _made_by_a_class_named_springs),
         mentions=("wrong physics",)),
    Case("plot-error-against-a-rollout-file-as-truth", "plot error {springs} --truth {file} --out {tmp}/fig.png",
         build=variant("roll.npz", _fake_rollout(())), mentions=("not ground truth",)),
    Case("plot-error-of-a-rollout-against-itself", "plot error {file} --truth {file} --out {tmp}/fig.png",
         build=rollout_of(), mentions=("not ground truth",)),
    Case("plot-paths-against-a-rollout-file-as-truth", "plot paths {springs} --truth {file} --out {tmp}/fig.png",
         build=variant("roll.npz", _fake_rollout(())), mentions=("not ground truth",)),
    Case("animate-against-a-rollout-file-as-truth", "animate {springs} --truth {file} --max-frames 2 "
         "--out {tmp}/a.gif",
         build=variant("roll.npz", _fake_rollout(())), mentions=("not ground truth",)),
    Case("evaluate-a-rollout-file-against-truth-of-another-particle-count", f"{ROLL_FILE} --data {{springs}} {METRICS}",
         build=rollout_on_six_particles, mentions=("6 particles",)),
    Case("evaluate-a-rollout-file-whose-systems-all-diverged-in-the-truth", f"{ROLL_FILE} --data {{truth}} "
         f"--allow-rollout {METRICS}", build=first_two_rolled_out_and_diverged_in_truth, mentions=("every one",)),
    Case("evaluate-a-rollout-file-records-made-from", f"{ROLL_FILE} --data {{springs}} {METRICS}", build=rollout_of(),
         codes=(0,), outputs=("metrics.json",), check=records_made_from),
    Case("evaluate-a-checkpoint-that-does-not-record-its-datas-params", "evaluate --checkpoint {file} --data {springs} "
         f"{METRICS}", build=checkpoint(_params_unrecorded), codes=(0,), outputs=("metrics.json",),
         mentions=("does not record the params",)),
    Case("evaluate-an-earlier-hamnets-rollout-file", f"{ROLL_FILE} --data {{springs}} {METRICS}",
         build=rollout_of(change=_no_checkpoint_sha), codes=(0,), outputs=("metrics.json",),
         mentions=("does not record its checkpoint's sha256",)),

    # flags mean what they say: given at any value, unused by the model, or beyond the dtype they live in
    Case("generate-protocol-with-system-at-its-default", f"{GEN} --protocol egnn-charged5 --system springs {OUT_NPZ}",
         mentions=("--system",)),
    Case("generate-protocol-with-dt-and-steps-at-their-defaults", f"{GEN} --protocol egnn-charged5 --dt 0.01 "
         f"--steps 500 {OUT_NPZ}", mentions=("--steps, --dt",)),
    Case("generate-protocol-with-dim-at-its-default", f"{GEN} --protocol segno-gravity5 --dim 2 {OUT_NPZ}",
         mentions=("--dim",)),
    Case("generate-split-at-its-default-without-protocol", f"{GEN} --split train --n-systems 2 --steps 5 {OUT_NPZ}",
         mentions=("--split",)),
    Case("train-egnn-h-with-a-group", f"train --data {{springs}} --out {{tmp}}/run --model egnn-h --group SO2 {PLAIN}",
         mentions=("--group",)),
    Case("train-hogn-with-a-lift", f"train --data {{springs}} --out {{tmp}}/run --model hogn --lift exact {PLAIN}",
         mentions=("--lift",)),
    Case("train-fc-hnn-with-neighbours", f"train --data {{springs}} --out {{tmp}}/run --model fc-hnn --neighbours 3 "
         f"{PLAIN}", mentions=("--neighbours",)),
    Case("train-hogn-with-kernel-bound-none", f"train --data {{springs}} --out {{tmp}}/run --model hogn "
         f"--kernel-bound none {PLAIN}", mentions=("--kernel-bound",)),
    Case("train-egnn-h-with-coupling", f"train --data {{springs}} --out {{tmp}}/run --model egnn-h --coupling k "
         f"{PLAIN}", mentions=("--coupling",)),
    Case("train-coupling-of-no-parameter", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --coupling q",
         mentions=("coupling 'q'", "affine", "m, k")),
    Case("train-kernel-bound-1e308", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --kernel-bound 1e308",
         mentions=("--kernel-bound", "float32")),
    Case("train-lr-1e39", f"train --data {{springs}} --out {{tmp}}/run {TRAIN} --lr 1e39",
         mentions=("--lr", "float32")),
    Case("rollout-float32-dt-1e39", f"{ROLL} --dtype float32 --dt 1e39 --steps 2 --out {{tmp}}/r.npz",
         mentions=("--dt", "float32")),
    Case("plot-error-with-learned-energy", "plot error {springs} --truth {springs} --learned-energy "
         "--out {tmp}/fig.png",
         mentions=("--learned-energy",)),
    Case("plot-conservation-with-a-system-index", "plot conservation {springs} --system 0 --out {tmp}/fig.png",
         mentions=("--system",)),

    # --threads on every command
    Case("generate-threads-0", f"{GEN} --threads 0 --n-systems 2 --steps 5 {OUT_NPZ}", mentions=("--threads",)),
    Case("info-threads-0", "info {springs} --threads 0", mentions=("--threads",)),
    Case("rollout-threads-0", f"{ROLL} --threads 0 --out {{tmp}}/r.npz", mentions=("--threads",)),
    Case("evaluate-threads-1e30", f"{EVAL} --threads {10**30} {METRICS}", mentions=("--threads",)),
    Case("plot-threads-0", "plot conservation {springs} --threads 0 --out {tmp}/fig.png", mentions=("--threads",)),
    Case("animate-threads-0", "animate {springs} --threads 0 --out {tmp}/a.gif", mentions=("--threads",)),
    Case("demo-threads-0", "demo --quick --quiet --threads 0 --out {tmp}/new", mentions=("--threads",)),
    Case("pretrained-threads-0", "pretrained --threads 0", mentions=("--threads",)),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_cli_fault(case: Case, shared, tmp_path, capsys, monkeypatch):
    names = stage(tmp_path, shared, case.build, monkeypatch)
    argv = case.argv.format(**names).split()
    capsys.readouterr()
    before = snapshot(tmp_path)
    threads = torch.get_num_threads()
    code, out, err = None, "", ""
    try:
        with watchdog(case.seconds):
            try:
                code, out, err = run_cli(argv, capsys)
            except SystemExit as exit:  # argparse, or a user's sys.exit that got through
                code, err = exit.code, capsys.readouterr().err
            except Exception as error:
                pytest.fail(f"main raised {type(error).__name__}: {str(error)[:300]}")
        after = snapshot(tmp_path)
    finally:
        torch.set_num_threads(threads)
        restore_permissions(tmp_path)
    assert MARKER not in after, "code named by a data file or checkpoint ran"
    assert code in case.codes, f"exit status {code}, expected {case.codes}; stderr: {err[-600:]!r}"
    assert "Traceback" not in err
    if code != 0:
        assert_one_line(err)
    for text in case.mentions:
        assert text in err, f"stderr does not name {text}: {err!r}"
    for text in (text.format(**names) for text in case.absent):
        assert text not in out + err, f"the output holds {text!r}: {(out + err)[-600:]!r}"
    assert_nothing_lost(before, after, case.leftovers + (case.outputs if code == 0 else ()))
    if case.check is not None:
        case.check(tmp_path, code)


# -- the Python API corpus ------------------------------------------------------------------------------
def _model(names):
    from hamnet.checkpoint import model_from_checkpoint

    return model_from_checkpoint(names["ckpt"])[0]


def _load(key: str = "file"):
    def call(names):
        from hamnet.io import load_trajectories

        return load_trajectories(names[key])
    return call


def _generate(system: str, **settings):
    def call(names):
        from hamnet.simulation import generate
        from hamnet.systems import NBody, Springs

        built = NBody(softening=settings["softening"]) if system == "nbody" else Springs()
        run = {"n_systems": 2, "steps": 5, "dt": 0.01, "seed": 0,
               **{key: value for key, value in settings.items() if key != "softening"}}
        return generate(built, **run)
    return call


def _save(target: str, change: Callable[[dict, dict], object] | None = None):
    """Call: save the springs file's contents (changed by ``change``) to TARGET under the case folder."""
    def call(names):
        from hamnet.io import Trajectories, save_trajectories

        arrays, meta = read_npz(names["springs"])
        if change is not None:
            change(arrays, meta)
        params = {k: torch.from_numpy(v) for k, v in arrays.items() if k not in ("t", "z")}
        data = Trajectories(torch.from_numpy(arrays["t"]), torch.from_numpy(arrays["z"]), params, meta)
        return save_trajectories(names["tmp"] / target, data)
    return call


def _checkpoint(key: str = "file"):
    def call(names):
        from hamnet.checkpoint import model_from_checkpoint

        return model_from_checkpoint(names[key])
    return call


def _train(**settings):
    def call(names):
        from hamnet.models import ModelConfig
        from hamnet.training import TrainConfig, train

        model = ModelConfig(name="hlieconv", group="SO2", n_particles=4, dim=2, feature_keys=("m", "k"), width=8,
                            depth=1)
        config = TrainConfig(model=model, epochs=1, batch_size=8, max_windows=16, validation=0.2, test=0.0, chunk=3,
                             **settings)
        return train(config, names.get("file", names["springs"]), names["tmp"] / "run")
    return call


def _fit(**settings):
    def call(names):
        from hamnet.fitting import fit

        tiny = {"width": 8, "depth": 1, "epochs": 1, "batch_size": 8, "max_windows": 16}
        return fit(names["springs"], run_dir=names["tmp"] / "run", **{**tiny, **settings})
    return call


def _rollout(steps: int, dt: float):
    def call(names):
        from hamnet.io import load_trajectories
        from hamnet.rollouts import rollout

        data = load_trajectories(names["springs"])
        return rollout(_model(names), data.z[:, 0], data.params, steps, dt)
    return call


def _rollout_with(change: Callable):
    """``rollout`` of the staged model from the springs file's first states, ``(z0, params)`` changed first."""
    def call(names):
        from hamnet.io import load_trajectories
        from hamnet.rollouts import rollout

        data = load_trajectories(names["springs"])
        z0, params = change(data.z[:, 0], data.params)
        return rollout(_model(names), z0, params, 3, 0.01)
    return call


def _evaluate(names):
    from hamnet.evaluation import evaluate
    from hamnet.io import load_trajectories

    return evaluate(_model(names), load_trajectories(names["file"]))


def _true_system(names):
    from hamnet.io import load_trajectories

    return load_trajectories(names["file"]).system()


def _animate(**settings):
    def call(names):
        from hamnet.animate import animate
        from hamnet.io import load_trajectories

        return animate(load_trajectories(names["springs"]), None, out=names["tmp"] / "a.gif", **settings)
    return call


def _plot_population(plot: str, **settings):
    def call(names):
        from hamnet.io import load_trajectories
        from hamnet import plots

        data = load_trajectories(names["springs"])
        if plot == "error":
            return plots.plot_error([data], data, out=names["tmp"] / "fig.png", **settings)
        return plots.plot_conservation([data], out=names["tmp"] / "fig.png", **settings)
    return call


def _plot_paths(names):
    from hamnet.io import load_trajectories
    from hamnet.plots import plot_paths

    return plot_paths(load_trajectories(names["springs"]), None, out=names["tmp"] / "fig.png", system_index=99)


def _predicted_with_checkpoint(names):
    """predicted_trajectories(checkpoint=...): gone, since sources (made_from) records a checkpoint with its sha256."""
    from hamnet.checkpoint import model_from_checkpoint
    from hamnet.io import load_trajectories
    from hamnet.rollouts import predicted_trajectories

    model, state = model_from_checkpoint(names["ckpt"])
    predicted_trajectories(model, load_trajectories(names["springs"]), model_config=state["model_config"],
                           checkpoint=str(names["ckpt"]))


@dataclass(frozen=True)
class ApiCase:
    """One fault of the Python API: ``call(names)`` must raise one of ``raises`` with a one-line message
    (or, with ``may_succeed``, return), leaving every file as it was (``leftovers`` apart)."""

    name: str
    call: Callable[[dict], object]
    build: Callable[[Path, dict], dict] | None = None
    raises: tuple[type, ...] = (ValueError,)
    may_succeed: bool = False
    leftovers: tuple[str, ...] = ()
    seconds: float = WATCHDOG


#: a file problem is ValueError or OSError; a size that cannot fit is refused as MemoryError (preflight)
FILE_ERRORS = (ValueError, OSError, MemoryError)
API_CASES = [
    ApiCase("load-garbage", _load(), raw("garbage.npz", lambda content: b"\x00garbage")),
    ApiCase("load-directory", _load("tmp"), raises=FILE_ERRORS),
    ApiCase("load-truncated", _load(), raw("half.npz", lambda content: content[: len(content) // 2])),
    ApiCase("load-pickle-npz", _load(), pickle_npz),
    ApiCase("load-nan", _load(), variant("nan.npz", _nan)),
    ApiCase("load-header-claims-terabytes", _load(), huge_header_npz, raises=FILE_ERRORS, seconds=PREFLIGHT),
    ApiCase("save-nan", _save("x.npz", _nan)),
    ApiCase("save-into-missing-folder", _save("missing/x.npz"), raises=FILE_ERRORS),
    ApiCase("save-onto-a-folder", _save("x.npz"), folders("x.npz"), raises=FILE_ERRORS),
    ApiCase("checkpoint-runs-code", _checkpoint(), checkpoint(_pickle_bomb)),
    ApiCase("checkpoint-foreign", _checkpoint(), checkpoint(lambda state, tmp: {"weights": torch.zeros(3)})),
    ApiCase("checkpoint-unregistered-model", _checkpoint(), checkpoint(_unregistered_model)),
    ApiCase("checkpoint-truncated", _checkpoint(), truncated_checkpoint),
    ApiCase("checkpoint-directory", _checkpoint("tmp"), raises=FILE_ERRORS),
    ApiCase("generate-n-systems-1e12", _generate("springs", n_systems=10**12), raises=FILE_ERRORS, seconds=PREFLIGHT),
    ApiCase("generate-steps-1e12", _generate("springs", steps=10**12), raises=FILE_ERRORS, seconds=PREFLIGHT),
    ApiCase("generate-dt-1e300", _generate("springs", dt=1e300), seconds=PREFLIGHT),
    ApiCase("generate-dt-1e4", _generate("springs", dt=1e4), seconds=PREFLIGHT),
    ApiCase("generate-nbody-softening-1e-6", _generate("nbody", softening=1e-6), seconds=PREFLIGHT),
    ApiCase("train-lr-1e6", _train(lr=1e6), leftovers=RUN_FOLDER),
    ApiCase("train-weight-decay-inf", _train(weight_decay=math.inf), leftovers=RUN_FOLDER),
    ApiCase("train-data-scaled-1e30", _train(), variant("big.npz", _scaled), leftovers=RUN_FOLDER),
    ApiCase("fit-unknown-setting", _fit(widht=8), raises=(TypeError,)),
    ApiCase("fit-group-of-another-dimension", _fit(group="SO3")),
    ApiCase("rollout-diverges", _rollout(steps=10, dt=1e3)),
    ApiCase("rollout-steps-1e12", _rollout(steps=10**12, dt=0.01), raises=FILE_ERRORS, seconds=PREFLIGHT),
    ApiCase("evaluate-springs-without-k", _evaluate, variant("nok.npz", _no_k)),
    ApiCase("evaluate-data-names-code", _evaluate, data_naming_code, may_succeed=True),
    ApiCase("system-of-data-naming-code", _true_system, data_naming_code),
    ApiCase("animate-fps-1e-300", _animate(fps=1e-300)),
    ApiCase("animate-stride-0", _animate(stride=0)),
    ApiCase("plot-paths-system-99", _plot_paths),
    ApiCase("plot-conservation-systems-99", _plot_population("conservation", systems=[0, 99])),
    ApiCase("plot-error-systems-negative", _plot_population("error", systems=[-1])),
    ApiCase("plot-error-band-reversed", _plot_population("error", band=(90, 10))),
    ApiCase("predicted-trajectories-checkpoint-keyword", _predicted_with_checkpoint, raises=(TypeError,)),
    ApiCase("train-config-epochs-2.5", _train(epochs=2.5), raises=(TypeError,)),
    ApiCase("train-config-lr-a-string", _train(lr="1e-3"), raises=(TypeError,)),
    ApiCase("train-config-validation-windows-0", _train(validation_windows=0)),
    ApiCase("rollout-params-of-other-systems", _rollout_with(lambda z0, params: (z0, {k: v[:1] for k, v in
                                                                                    params.items()}))),
    ApiCase("rollout-z0-numpy", _rollout_with(lambda z0, params: (z0.numpy(), params)), raises=(TypeError,)),
    ApiCase("load-settings-contradict-the-arrays", _load(), variant("sixth.npz", _settings_say_six)),
]


@pytest.mark.parametrize("case", API_CASES, ids=[case.name for case in API_CASES])
def test_api_fault(case: ApiCase, shared, tmp_path, monkeypatch):
    names = stage(tmp_path, shared, case.build, monkeypatch)
    before = snapshot(tmp_path)
    error = None
    try:
        with watchdog(case.seconds):
            try:
                case.call(names)
            except Exception as caught:
                error = caught
        after = snapshot(tmp_path)
    finally:
        restore_permissions(tmp_path)
    assert MARKER not in after, "code named by a data file or checkpoint ran"
    expected = " or ".join(kind.__name__ for kind in case.raises)
    if error is None:
        assert case.may_succeed, f"no error raised; expected {expected}"
    else:
        assert isinstance(error, case.raises), f"raised {type(error).__name__}: {str(error)[:300]}; expected {expected}"
        message = str(error).strip()
        assert message and "\n" not in message, f"not a one-line message: {message[:600]!r}"
    assert_nothing_lost(before, after, case.leftovers)
    weights_finite(tmp_path, 1)


# -- provenance, intent and threads: cases that need more than one command ---------------------------------
def test_a_local_file_named_like_a_pretrained_model_is_said_aloud(shared, tmp_path, capsys, monkeypatch, caplog):
    """`--checkpoint springs-so2` with a file of that name here uses the file, and says so in a warning that
    names the shipped model unambiguously; `./springs-so2` names the file without a warning."""
    names = stage(tmp_path, shared, shadowing_file, monkeypatch)
    for spec, warned in (("springs-so2", True), ("./springs-so2", False)):
        caplog.clear()
        code, _, err = run_cli(["rollout", "--checkpoint", spec, "--data", names["springs"], "--out", "r.npz"], capsys)
        assert code == 0, err
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert bool(warnings) == warned and all("pretrained:springs-so2" in w for w in warnings), warnings
        assert all(w.startswith("hamnet: warning: ") for w in warnings), warnings  # as rollout's own warnings
        assert read_npz(tmp_path / "r.npz")[1]["checkpoint_sha256"] == sha256(tmp_path / "springs-so2")


def test_a_resume_of_the_same_data_at_a_new_path_continues(shared, tmp_path, capsys, monkeypatch):
    """The data of a run is its bytes: moved to another path (same sha256), a resume goes on; the run's
    records then name the new path."""
    from hamnet.training import TrainConfig, train

    monkeypatch.delenv("HAMNET_DEBUG", raising=False)
    data, moved, run = tmp_path / "data.npz", tmp_path / "moved.npz", tmp_path / "run"
    shutil.copyfile(shared["springs"], data)
    flags = TRAIN.replace("--epochs 1", "--epochs 2").split()
    assert run_cli(["train", "--data", data, "--out", run, *flags], capsys)[0] == 0  # the command's own config,
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["train_config"])
    shutil.rmtree(run)
    train(config, str(data), run, stop_after_epochs=1)  # then epoch 1 alone of the same run
    data.rename(moved)
    with watchdog(WATCHDOG):
        code, _, err = run_cli(["train", "--data", moved, "--out", run, *flags, "--resume"], capsys)
    assert code == 0, err
    assert _epochs(run) == [1, 2] and torch.load(run / "last.pt", weights_only=True)["data"]["path"] == str(moved)


def test_checkpoints_record_their_data_and_starting_point(shared, tmp_path, capsys, monkeypatch):
    """A checkpoint records its data's sha256 and kind (system, protocol, dimension, particle count,
    parameters, settings), and a run started with --init-from the checkpoint it started from."""
    monkeypatch.delenv("HAMNET_DEBUG", raising=False)
    record = torch.load(shared["ckpt"], weights_only=True)["data"]
    assert record["sha256"] == sha256(shared["springs"])
    assert {key: record[key] for key in ("system", "protocol", "dim", "n_particles", "params")} == \
        {"system": "springs", "protocol": None, "dim": 2, "n_particles": 4, "params": ["k", "m"]}
    assert record["system_settings"] == {"n_particles": 4, "dim": 2}
    bound = torch.load(shared["ckpt"], weights_only=True)["model_config"]["kernel_bound"]
    flags = TRAIN.replace("--kernel-bound none", "" if bound is None else f"--kernel-bound {bound}").split()
    code, _, err = run_cli(["train", "--data", shared["springs"], "--out", tmp_path / "run", *flags,
                            "--init-from", shared["ckpt"]], capsys)
    assert code == 0, err
    started = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["init_from"]
    assert started == {"checkpoint": str(shared["ckpt"]), "checkpoint_sha256": sha256(shared["ckpt"]),
                       "pretrained": None}


def _nan_from_the_start(forward):
    return lambda self, z, params: forward(self, z, params) * math.nan


@pytest.mark.parametrize("kernel_bound, patch, cause, undoing", [
    (1e308, False, "the kernel bound 1e+308 is beyond float32's range", {}),
    (None, True, "before any optimiser step (or with every step since undone), so the learning rate is not the cause", {}),
    (None, True, "before any optimiser step (or with every step since undone), so the learning rate is not the cause", {"rollback": 10.0}),
    (None, True, "before any optimiser step (or with every step since undone), so the learning rate is not the cause", {"rollback_train": 3.0}),
])
def test_a_divergence_names_its_likely_cause(shared, tmp_path, monkeypatch, kernel_bound, patch, cause, undoing):
    """A loss that is not finite at the first batch, before any step, is not blamed on the learning rate:
    a kernel bound beyond the dtype's range is named, or the initial model on this data. Undoing epochs
    does not hide it (from the initial weights every epoch would be undone)."""
    from hamnet.loss import WindowLoss
    from hamnet.models import ModelConfig
    from hamnet.training import TrainConfig, TrainingDiverged, train

    if patch:
        monkeypatch.setattr(WindowLoss, "forward", _nan_from_the_start(WindowLoss.forward))
    model = ModelConfig(name="hlieconv", group="SO2", n_particles=4, dim=2, width=8, depth=1, kernel_bound=kernel_bound)
    config = TrainConfig(model=model, epochs=2, batch_size=8, max_windows=16, validation=0.2, test=0.0, chunk=3,
                         kernel_bound_factor=None, **undoing)
    with pytest.raises(TrainingDiverged) as raised:
        train(config, shared["springs"], tmp_path / "run")
    assert cause in str(raised.value) and "--lr" not in str(raised.value), str(raised.value)


def test_a_run_undone_back_to_its_initial_weights_that_stays_not_finite_blames_them(shared, tmp_path, monkeypatch):
    """Epoch 1 takes a step, then its loss stops being finite and it is undone, back to the initial weights;
    epoch 2's first loss is not finite from those: the divergence names the initial weights, not the learning
    rate (the schedule has moved on, Adam's steps were undone)."""
    from hamnet.loss import WindowLoss
    from hamnet.models import ModelConfig
    from hamnet.training import TrainConfig, TrainingDiverged, train

    forward, adam_step, stepped = WindowLoss.forward, torch.optim.Adam.step, []

    def step(self, *args, **kwargs):
        stepped.append(True)
        return adam_step(self, *args, **kwargs)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    monkeypatch.setattr(WindowLoss, "forward", lambda self, z, params: forward(self, z, params) * (
        math.nan if stepped else 1.0))  # finite until Adam's first step, then never again
    model = ModelConfig(name="hlieconv", group="SO2", n_particles=4, dim=2, width=8, depth=1)
    config = TrainConfig(model=model, epochs=3, batch_size=8, max_windows=16, validation=0.2, test=0.0, chunk=3,
                         kernel_bound_factor=None, rollback=10.0)  # two batches an epoch
    with pytest.raises(TrainingDiverged) as raised:
        train(config, shared["springs"], tmp_path / "run")
    assert "before any optimiser step" in str(raised.value) and "--lr" not in str(raised.value), str(raised.value)
    assert "epoch 2, batch 1" in str(raised.value)


#: each command with inputs that stop it right after its plugins ran (files that do not exist, a bad seed)
STOPPED_AFTER_PLUGINS = {
    "generate": "generate --system none --out x.npz", "info": "info none.npz",
    "train": "train --data none.npz --out run", "rollout": "rollout --checkpoint none.pt --data none.npz --out r.npz",
    "evaluate": "evaluate --checkpoint none.pt --data none.npz --out m.json",
    "plot": "plot conservation none.npz --out fig.png", "animate": "animate none.npz --out a.gif",
    "demo": "demo --quick --seed -1 --out new", "pretrained": "pretrained none",
    "import": "import none.npz --out x.npz",
}


@pytest.mark.parametrize("command", STOPPED_AFTER_PLUGINS)
def test_every_command_runs_on_one_thread_unless_told(tmp_path, capsys, monkeypatch, command):
    """--threads on every command, one thread by default (the demo's measurement, hamnet.cli_common.DEFAULT_THREADS):
    a plugin, imported once the command's threads are set, records them; the caller's count comes back."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HAMNET_DEBUG", raising=False)
    caller = torch.get_num_threads()
    for run, extra in enumerate(([], ["--threads", "3"])):
        plugin_file = tmp_path / f"count{run}.py"  # a file is imported once per process: one per run
        plugin_file.write_text("import pathlib, torch\npathlib.Path('threads.txt').open('a').write("
                               "f'{torch.get_num_threads()}\\n')\n")
        code, _, err = run_cli([*STOPPED_AFTER_PLUGINS[command].split(), "--plugin", plugin_file, *extra], capsys)
        assert code == 1 and err.count("\n") == 1 and torch.get_num_threads() == caller
    assert (tmp_path / "threads.txt").read_text().split() == ["1", "3"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["count0.py", "count1.py", "threads.txt"]


def test_hints_never_spell_out_a_command_naming_a_data_files_code(shared, tmp_path, monkeypatch):
    """A file made by a user's system class says how to name it (--true-system PATH.py:CLASS), never with
    the path it records: that code is the user's to read and vouch for."""
    from hamnet.io import SystemUnavailable, load_trajectories

    names = stage(tmp_path, shared, data_naming_code, monkeypatch)
    with pytest.raises(SystemUnavailable) as raised:
        load_trajectories(names["file"]).system()
    message = str(raised.value)
    assert "--true-system PATH.py:CLASS" in message and f"--true-system {tmp_path}" not in message
    assert MARKER not in snapshot(tmp_path)


# -- run folders: in use, killed --------------------------------------------------------------------------
def start_hamnet(args: list, cwd: Path) -> subprocess.Popen:
    """``python -m hamnet.cli ARGS`` as a real process (one thread, no --debug), with Ctrl-C's default action
    even where the tests run in the background of a non-interactive shell (which starts them with SIGINT
    ignored, and a child inherits an ignored signal; a handled one becomes the default action at exec)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HAMNET_DEBUG", None)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen([sys.executable, "-m", "hamnet.cli", *map(str, args)], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, seconds: float = 60.0) -> None:
    """Poll (every millisecond) until ``condition()``; fail if the process ends or time runs out first."""
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"hamnet ended (status {process.returncode}) before the moment to signal it: "
                        f"{process.stderr.read()[-600:]!r}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"the moment to signal hamnet did not come within {seconds:g} s")
        time.sleep(0.001)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_train_on_a_folder_in_use_fails(shared, tmp_path, capsys, monkeypatch):
    """While one `train` works in a run folder, a second one (resuming it) fails in one line."""
    data = tmp_path / "springs.npz"
    shutil.copyfile(shared["springs"], data)
    run = tmp_path / "run"
    flags = f"{TRAIN} --epochs 5000".split()
    first = start_hamnet(["train", "--data", data, "--out", run, *flags], tmp_path)
    try:
        wait_for(lambda: (run / "last.pt").exists(), first)
        monkeypatch.delenv("HAMNET_DEBUG", raising=False)
        with watchdog(WATCHDOG):
            code, _, err = run_cli(["train", "--data", data, "--out", run, *flags, "--resume"], capsys)
    finally:
        stop(first)
    assert code == 1 and "Traceback" not in err
    assert_one_line(err)


def _stale_temporary(folder: Path, name: str) -> Path:
    """A temporary that a writer killed mid-write (SIGKILL) would leave beside ``name``."""
    stale = folder / f".{name}.{DEAD_PID}.killed.tmp"
    stale.write_bytes(b"half a checkpoint")
    return stale


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _hidden(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir() if path.name.startswith(".")}


def test_a_run_folder_killed_before_its_first_checkpoint_is_accepted(shared, tmp_path, capsys, monkeypatch):
    """A run killed after writing config.json and its first metrics line, mid-way through writing its
    first checkpoint, left nothing worth keeping: the same `train` run again into that folder succeeds."""
    data, run = tmp_path / "springs.npz", tmp_path / "run"
    shutil.copyfile(shared["springs"], data)
    argv = ["train", "--data", data, "--out", run, *TRAIN.split()]
    assert run_cli(argv, capsys)[0] == 0
    for name in ("best.pt", "last.pt"):  # back to the moment of the kill
        (run / name).unlink()
    _stale_temporary(run, "best.pt")
    hidden = _hidden(run)
    monkeypatch.delenv("HAMNET_DEBUG", raising=False)
    with watchdog(WATCHDOG):
        code, _, err = run_cli(argv, capsys)
    assert code == 0, f"exit status {code}: {err[-600:]!r}"
    assert (run / "last.pt").is_file() and _epochs(run) == [1]
    assert _hidden(run) <= hidden, f"temporaries left: {sorted(_hidden(run) - hidden)}"


def test_a_run_folder_killed_mid_epoch_resumes(shared, tmp_path, capsys, monkeypatch):
    """A run killed while writing epoch 2 (a metrics line cut short, a checkpoint temporary left behind)
    is finished by `train --resume`, which leaves no temporary of its own."""
    from hamnet.training import TrainConfig, train

    data, run = tmp_path / "springs.npz", tmp_path / "run"
    shutil.copyfile(shared["springs"], data)
    argv = ["train", "--data", data, "--out", run, *TRAIN.replace("--epochs 1", "--epochs 2").split()]
    assert run_cli(argv, capsys)[0] == 0  # the command's own config, then epoch 1 alone of the same run:
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["train_config"])
    epoch_two = (run / "metrics.jsonl").read_text().splitlines()[1]
    shutil.rmtree(run)
    train(config, str(data), run, stop_after_epochs=1)
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write(epoch_two[: len(epoch_two) // 2])
    _stale_temporary(run, "last.pt")
    hidden = _hidden(run)
    capsys.readouterr()
    monkeypatch.delenv("HAMNET_DEBUG", raising=False)
    with watchdog(WATCHDOG):
        code, _, err = run_cli([*argv, "--resume"], capsys)
    assert code == 0, f"exit status {code}: {err[-600:]!r}"
    assert _epochs(run) == [1, 2] and torch.load(run / "last.pt", weights_only=True)["epoch"] == 2
    assert _hidden(run) <= hidden, f"temporaries left: {sorted(_hidden(run) - hidden)}"


# -- signals: real processes -------------------------------------------------------------------------------
#: springs with these sizes make a ~150 MB file: the write takes long enough to be caught mid-way
BIG_GENERATE = ["--n-systems", "400", "--steps", "2000", "--quiet"]


def _generate_and_signal(tmp: Path, sig: int, moment: str) -> tuple[subprocess.Popen, str, Path]:
    """Start `generate` of a ~150 MB file into tmp/out and send ``sig`` while it works (just after its
    plugin ran) or while it writes (once a hidden temporary appears in tmp/out)."""
    out = tmp / "out"
    out.mkdir()
    (tmp / "ready.py").write_text(f"import pathlib\npathlib.Path({str(tmp / 'started')!r}).touch()\n")
    process = start_hamnet(["generate", "--plugin", tmp / "ready.py", *BIG_GENERATE, "--out", out / "big.npz"], tmp)
    try:
        if moment == "working":
            wait_for(lambda: (tmp / "started").exists(), process)
            time.sleep(0.3)
        else:
            wait_for(lambda: any(p.name.startswith(".") for p in out.iterdir()), process)
        process.send_signal(sig)
        _, err = process.communicate(timeout=60)
    finally:
        stop(process)
    return process, err, out


@pytest.mark.slow  # seconds of subprocesses or 10,000 steps: `make test-slow` (and CI) run it
@pytest.mark.parametrize("sig, moment, codes", [
    (signal.SIGTERM, "working", (143, 1)),
    (signal.SIGTERM, "writing", (143, 1)),
    (signal.SIGINT, "writing", (130,)),
], ids=["sigterm-working", "sigterm-writing", "sigint-writing"])
def test_generate_signalled(tmp_path, sig, moment, codes):
    process, err, out = _generate_and_signal(tmp_path, sig, moment)
    assert process.returncode in codes, f"exit status {process.returncode}, expected {codes}; stderr {err[-600:]!r}"
    assert "Traceback" not in err
    assert_one_line(err, INTERRUPT_PREFIXES)
    assert sorted(p.name for p in out.iterdir()) == [], "an output or temporary file was left behind"


def _counting(monkeypatch, module, name: str, calls: list) -> None:
    """Replace ``module.name`` by a wrapper that appends its first argument (as a resolved path) to ``calls``."""
    original = getattr(module, name)

    def counted(first, *args, **kwargs):
        calls.append(Path(first).resolve() if not isinstance(first, dict) else first.get("checkpoint"))
        return original(first, *args, **kwargs)
    monkeypatch.setattr(module, name, counted)


def test_evaluate_rollout_and_learned_energy_hash_and_load_each_file_once(shared, tmp_path, capsys, monkeypatch):
    """`evaluate --rollout` hashes the rollout and the truth once each; `plot conservation --learned-energy`
    of two rollouts of one checkpoint hashes and loads that checkpoint once."""
    import hamnet.checkpoint
    import hamnet.cli_rollout

    names = stage(tmp_path, shared, chain(rollout_of(name="r1.npz"), rollout_of(name="r2.npz")), monkeypatch)
    before = snapshot(tmp_path)
    hashed, loaded = [], []
    for module in (hamnet.checkpoint, hamnet.cli_rollout):
        _counting(monkeypatch, module, "file_sha256", hashed)
    _counting(monkeypatch, hamnet.checkpoint, "model_from_checkpoint", loaded)
    code, _, err = run_cli(["evaluate", "--rollout", "r1.npz", "--data", names["springs"], "--out", "m.json"], capsys)
    assert code == 0, err
    assert sorted(map(str, hashed)) == sorted(str(tmp_path / name) for name in ("r1.npz", "springs.npz")), hashed
    hashed.clear()
    code, _, err = run_cli(["plot", "conservation", "r1.npz", "r2.npz", "--learned-energy", "--out", "f.png"], capsys)
    assert code == 0, err
    assert hashed == [tmp_path / "model.pt"] and len(loaded) == 1, (hashed, loaded)
    assert_nothing_lost(before, snapshot(tmp_path), ("m.json", "f.png"))
