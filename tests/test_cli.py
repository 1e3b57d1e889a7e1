"""The command line: happy paths and one clear line for every bad input."""

import os
import select
import signal
import subprocess
import sys
import time

import pytest

import hamnet.cli
import hamnet.io
from hamnet.cli import main
from hamnet.io import load_trajectories

from problems import run_cli


def test_generate_and_info(tmp_path, capsys):
    out = tmp_path / "s.npz"
    code, stdout, _ = run_cli(["generate", "--n-systems", "3", "--steps", "20", "--seed", "1", "--quiet",
                           "--out", str(out)], capsys)
    assert code == 0 and "3 systems x 21 times" in stdout
    assert load_trajectories(out).z.shape == (3, 21, 2, 6, 2)
    code, stdout, _ = run_cli(["info", str(out)], capsys)
    assert code == 0 and "springs" in stdout and "yoshida8" in stdout


def test_generate_nbody_options(tmp_path, capsys):
    out = tmp_path / "n.npz"
    code, _, _ = run_cli(["generate", "--system", "nbody", "--family", "cluster", "--dim", "3", "--n-particles", "4",
                      "--n-systems", "2", "--steps", "5", "--quiet", "--out", str(out)], capsys)
    assert code == 0
    data = load_trajectories(out)
    assert data.meta["system_settings"]["family"] == "cluster" and data.z.shape[-2:] == (4, 3)


def test_same_seed_same_file_bit_for_bit(tmp_path, capsys):
    paths = [tmp_path / "a.npz", tmp_path / "b.npz"]
    for path in paths:
        assert run_cli(["generate", "--n-systems", "4", "--steps", "10", "--quiet", "--out", str(path)], capsys)[0] == 0
    assert paths[0].read_bytes() == paths[1].read_bytes()


@pytest.mark.parametrize("flags, message", [
    (["--n-systems", "0"], "--n-systems must be at least 1"),
    (["--dt", "0"], "--dt must be a positive finite number"),
    (["--dt", "inf"], "--dt must be a positive finite number"),
    (["--seed", "-1"], "--seed must be between 0 and 2**63 - 1"),
    (["--dt", "-0.01"], "--dt must be a positive finite number"),
    (["--system", "planets"], "unknown system 'planets'"),
    (["--n-particles", "1"], "n_particles must be an integer >= 2"),
    (["--system", "missing.py:Thing"], "system file 'missing.py' does not exist"),
    (["--family", "cluster"], "--family does not apply to the system 'springs'"),
])
def test_generate_bad_input(tmp_path, capsys, flags, message):
    out = tmp_path / "x.npz"
    code, _, err = run_cli(["generate", "--steps", "5", "--quiet", "--out", str(out), *flags], capsys)
    assert code == 1
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists()


def test_generate_a_benchmark_protocol(tmp_path, capsys):
    """``--protocol`` writes the peers' benchmark set: their system, their frames, and the protocol in meta."""
    out = tmp_path / "charged.npz"
    code, stdout, _ = run_cli(["generate", "--protocol", "egnn-charged5", "--split", "test", "--n-systems", "3",
                               "--seed", "7", "--quiet", "--out", out], capsys)
    assert code == 0 and "3 systems x 52 times" in stdout
    data = load_trajectories(out)
    assert data.meta["protocol"]["name"] == "egnn-charged5" and data.meta["protocol"]["split"] == "test"
    assert data.z.shape == (3, 52, 2, 5, 3) and set(data.params["charge"].unique().tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("flags, message", [
    (["--protocol", "qm9"], "unknown protocol 'qm9'; choose one of egnn-charged5, segnn-gravity100"),
    (["--protocol", "egnn-charged5", "--system", "nbody"], "fixes the system, its steps and dt; drop --system"),
    (["--protocol", "egnn-charged5", "--steps", "10", "--dt", "0.1"], "drop --steps, --dt"),
    (["--protocol", "egnn-charged5", "--n-systems", "0"], "--n-systems must be at least 1"),
    (["--split", "test"], "--split applies only with --protocol"),
])
def test_generate_protocol_bad_input(tmp_path, capsys, flags, message):
    out = tmp_path / "x.npz"
    code, _, err = run_cli(["generate", "--quiet", "--out", out, *flags], capsys)
    assert code == 1 and err.count("\n") == 1 and message in err and not out.exists()


def test_generate_unwritable_output(tmp_path, capsys):
    code, _, err = run_cli(["generate", "--out", str(tmp_path / "no" / "x.npz")], capsys)
    assert code == 1 and "does not exist" in err


def test_broken_user_system_file(tmp_path, capsys):
    bad = tmp_path / "mine.py"
    bad.write_text("import nonexistent_module_xyz\n")
    code, _, err = run_cli(["generate", "--system", f"{bad}:Mine", "--out", str(tmp_path / "x.npz")], capsys)
    assert code == 1 and "failed to import" in err and err.count("\n") == 1


def test_info_on_malformed_file(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00garbage")
    code, _, err = run_cli(["info", str(bad)], capsys)
    assert code == 1 and "not a .npz trajectory file" in err and err.count("\n") == 1


def test_console_script_exit_status(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hamnet.cli", "generate", "--n-systems", "0", "--out",
                             str(tmp_path / "x.npz")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("hamnet: error:") and "Traceback" not in result.stderr


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for flag in ("--system", "--n-systems", "--steps", "--dt", "--seed", "--out", "--n-particles", "--dim",
                 "--family", "--softening", "--quiet"):
        assert flag in text


# -- one line, or the traceback on request ------------------------------------------------------------
def test_debug_shows_the_traceback_instead_of_one_line(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a .npz trajectory file"):
        main(["info", str(bad), "--debug"])
    monkeypatch.setenv("HAMNET_DEBUG", "1")
    with pytest.raises(ValueError, match="not a .npz trajectory file"):
        main(["info", str(bad)])


def test_an_unexpected_failure_is_one_line_that_offers_debug(tmp_path, capsys, monkeypatch):
    def broken(path):
        raise RuntimeError("something hamnet did not expect\nwith a second line")

    monkeypatch.setattr(hamnet.cli, "load_trajectories", broken)
    code, _, err = run_cli(["info", tmp_path / "x.npz"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("hamnet: error: RuntimeError: something hamnet did not expect with a second line")
    assert "--debug" in err and hamnet.io.load_trajectories is not broken


def test_user_code_calling_sys_exit_is_reported_not_obeyed(tmp_path, capsys):
    quitter = tmp_path / "quitter.py"
    quitter.write_text("import sys\nfrom hamnet.systems import Springs\n\nclass Quitter(Springs):\n"
                       "    def sample_params(self, n, generator):\n        sys.exit(3)\n")
    code, _, err = run_cli(["generate", "--system", f"{quitter}:Quitter", "--n-systems", "2", "--steps", "2",
                            "--out", tmp_path / "q.npz"], capsys)
    assert code == 1 and err.count("\n") == 1 and "sys.exit(3)" in err
    assert not (tmp_path / "q.npz").exists()


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    out = tmp_path / "long.npz"
    process = subprocess.Popen([sys.executable, "-m", "hamnet.cli", "generate", "--system", "nbody", "--n-systems",
                                "10", "--steps", "100000", "--out", str(out)], stderr=subprocess.PIPE)
    err = _read_until(process, b"system-step", seconds=60)  # the progress bar: the integration has begun
    process.send_signal(signal.SIGTERM)
    err += process.communicate(timeout=60)[1]
    last = err.decode().replace("\r", "\n").strip().splitlines()[-1]  # after the cut-off progress bar
    assert process.returncode == 143 and last.endswith("hamnet: terminated; files being written were not replaced")
    assert list(tmp_path.iterdir()) == []


def _read_until(process, marker: bytes, seconds: float) -> bytes:
    """What ``process`` wrote to stderr until ``marker`` appeared (or it exited, or time ran out)."""
    seen, deadline = b"", time.monotonic() + seconds
    while marker not in seen and process.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], 0.1)
        if ready:
            seen += os.read(process.stderr.fileno(), 4096)
    return seen
