"""Animations: the expected number of frames and size, and one clear line for every bad input."""

import logging
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageSequence

from hamnet import systems
from hamnet import animate as animate_module
from hamnet.animate import ANIMATION_DPI, animate, frame_steps
from hamnet.io import Trajectories, save_trajectories
from hamnet.rollouts import rollout
from hamnet.simulation import generate

from problems import run_cli


def make_pair(dim=2):
    truth = generate(systems.Springs(n_particles=3, dim=dim), n_systems=2, steps=20, dt=0.01, seed=0)
    z = rollout(truth.system(), truth.z[:, 0], truth.params, steps=20, dt=0.01, method="leapfrog")
    return truth, Trajectories(truth.t, z, truth.params, {**truth.meta, "model": "true springs", "method": "leapfrog"})


@pytest.fixture(scope="module")
def pair():
    return make_pair()


def frames_and_size(path):
    with Image.open(path) as image:
        assert image.format == "GIF"
        return sum(1 for _ in ImageSequence.Iterator(image)), image.size, image.info["duration"]


@pytest.mark.parametrize("layout, stride, max_frames, expected, inches", [
    ("side-by-side", 3, 200, 7, (9.0, 5.0)),  # times 0, 3, ..., 18 of 21
    ("overlay", 1, 5, 5, (5.0, 5.6)),
])
def test_gif_frames_and_size(tmp_path, pair, layout, stride, max_frames, expected, inches):
    truth, prediction = pair
    out = tmp_path / "a.gif"
    written = animate(prediction, truth, out=out, fps=10, stride=stride, max_frames=max_frames, trail=3,
                      layout=layout, system_index=1)
    n_frames, size, duration = frames_and_size(out)
    assert written == n_frames == expected
    assert size == (round(inches[0] * ANIMATION_DPI), round(inches[1] * ANIMATION_DPI))
    assert duration == 100


def test_3d_without_truth_is_projected(tmp_path):
    _, prediction = make_pair(dim=3)
    out = tmp_path / "b.gif"
    assert animate(prediction, out=out, stride=5) == 5
    assert frames_and_size(out)[0] == 5


def test_frames_differ_as_particles_move(tmp_path, pair):
    out = tmp_path / "c.gif"
    animate(pair[1], out=out, stride=10, trail=0)
    with Image.open(out) as image:
        frames = [frame.convert("RGB").tobytes() for frame in ImageSequence.Iterator(image)]
    assert len(frames) == 3 and len(set(frames)) == 3


def test_five_dimensional_system_is_refused(tmp_path):
    t = torch.linspace(0, 1, 4, dtype=torch.float64)
    fake = Trajectories(t, torch.zeros(1, 4, 2, 3, 5, dtype=torch.float64),
                        {"m": torch.ones(1, 3, dtype=torch.float64)}, {"system": "custom"})
    with pytest.raises(ValueError, match=r"5-dimensional \(D = 5\); hamnet draws 2D and 3D systems only"):
        animate(fake, out=tmp_path / "d.gif")
    assert list(tmp_path.iterdir()) == []


def test_mp4_without_ffmpeg_is_a_clear_error(tmp_path, pair, monkeypatch):
    monkeypatch.setattr(animate_module.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="needs ffmpeg on PATH"):
        animate(pair[1], out=tmp_path / "e.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_mp4_with_ffmpeg(tmp_path, pair):
    out = tmp_path / "f.mp4"
    assert animate(pair[1], pair[0], out=out, stride=5) == 5
    assert out.read_bytes()[4:8] == b"ftyp"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_mp4_ffmpeg_failure_is_one_line_and_leaves_nothing(tmp_path, pair, monkeypatch):
    writer = animate_module.FFMpegWriter
    monkeypatch.setattr(animate_module, "FFMpegWriter", lambda fps, **_: writer(fps=fps, codec="no-such-codec"))
    with pytest.raises(OSError, match="^ffmpeg failed writing the .mp4: [^\n]+$"):
        animate(pair[1], out=tmp_path / "f.mp4", stride=5)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fps, duration", [(6, 170), (3, 330), (7.5, 130), (0.5, 2000), (250, 10)])
def test_gif_frame_duration_is_the_period_rounded_to_hundredths(tmp_path, pair, fps, duration):
    out = tmp_path / "h.gif"
    animate(pair[1], out=out, fps=fps, max_frames=2, trail=0)
    assert frames_and_size(out)[2] == duration


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("failing_frame", [0, 2])
def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, pair, monkeypatch, error, failing_frame):
    out = tmp_path / "i.gif"
    out.write_bytes(b"an older animation")
    show, shown = animate_module._Scene.show, []

    def failing_show(scene, index, time):
        if len(shown) == failing_frame:
            raise error("stopped")
        shown.append(index)
        show(scene, index, time)

    monkeypatch.setattr(animate_module._Scene, "show", failing_show)
    with pytest.raises(error, match="stopped"):
        animate(pair[1], out=out, max_frames=4)
    assert list(tmp_path.iterdir()) == [out] and out.read_bytes() == b"an older animation"


def test_writer_failing_after_writing_its_file_leaves_nothing(tmp_path, pair, monkeypatch):
    out = tmp_path / "j.gif"
    out.write_bytes(b"an older animation")
    finish = animate_module.PillowWriter.finish

    def finish_then_fail(writer):
        finish(writer)
        assert Path(writer.outfile).stat().st_size > 0
        raise OSError("disk full")

    monkeypatch.setattr(animate_module.PillowWriter, "finish", finish_then_fail)
    with pytest.raises(OSError, match="disk full"):
        animate(pair[1], out=out, max_frames=3)
    assert list(tmp_path.iterdir()) == [out] and out.read_bytes() == b"an older animation"


@pytest.mark.parametrize("settings, message", [
    ({"fps": 0}, "fps must be between 0.02 and 1000, got 0"),
    ({"fps": 1e-300}, "fps must be between 0.02 and 1000"),
    ({"stride": 0}, "stride must be a positive integer"),
    ({"max_frames": 0}, "max_frames must be a positive integer"),
    ({"trail": -1}, "trail must be a non-negative integer"),
    ({"layout": "grid"}, "unknown layout 'grid'"),
    ({"system_index": 2}, "system index 2 is out of range"),
])
def test_bad_settings(tmp_path, pair, settings, message):
    with pytest.raises(ValueError, match=message):
        animate(pair[1], out=tmp_path / "g.gif", **settings)
    assert list(tmp_path.iterdir()) == []


# -- frames over the whole rollout, and a truth that ends early -----------------------------------------
def record_frames(monkeypatch):
    """Spy on every frame drawn: (time step, [is each layer's particles visible], clock text, and whether
    the side-by-side truth panel says the truth has ended: None where it has no such line)."""
    show, seen = animate_module._Scene.show, []

    def recording_show(scene, index, time):
        show(scene, index, time)
        seen.append((index, [layer.particles.get_visible() for layer in scene.layers], scene.clock.get_text(),
                     None if scene.ended is None else scene.ended.get_visible()))

    monkeypatch.setattr(animate_module._Scene, "show", recording_show)
    return seen


def test_frame_steps_spread_evenly_to_the_last_step():
    steps = frame_steps(10001, None, 200)
    gaps = set(int(gap) for gap in torch.tensor(steps).diff())
    assert len(steps) == 200 and steps[0] == 0 and steps[-1] == 10000 and gaps <= {50, 51}
    assert frame_steps(21, None, 200) == list(range(21))  # no more steps than frames: every step
    assert frame_steps(21, 4, 200) == [0, 4, 8, 12, 16, 20]
    assert frame_steps(21, 4, 3) == [0, 4, 8]  # an explicit stride may stop early


def test_default_frames_cover_the_whole_rollout(tmp_path, pair, monkeypatch, caplog):
    seen = record_frames(monkeypatch)
    caplog.set_level(logging.INFO, logger="hamnet.animate")
    out = tmp_path / "whole.gif"
    assert animate(pair[1], out=out, max_frames=5, trail=2) == 5
    assert [index for index, *_ in seen] == [0, 5, 10, 15, 20] and seen[-1][2].endswith("t = 0.200")
    assert frames_and_size(out)[0] == 5
    [note] = [record.getMessage() for record in caplog.records]
    assert "note: whole.gif shows 5 of the 21 time steps, spread evenly over t = 0 to 0.2" in note


def test_a_stride_that_stops_early_says_so(tmp_path, pair, caplog):
    caplog.set_level(logging.INFO, logger="hamnet.animate")
    assert animate(pair[1], out=tmp_path / "early.gif", stride=2, max_frames=3) == 3
    [note] = [record.getMessage() for record in caplog.records]
    assert "covers t = 0 to 0.04 of a rollout to t = 0.2" in note


@pytest.mark.parametrize("layout", ["side-by-side", "overlay"])
def test_a_shorter_truth_is_shown_while_it_lasts(tmp_path, pair, monkeypatch, caplog, layout):
    truth, prediction = pair
    short = Trajectories(truth.t[:11], truth.z[:, :11], truth.params, truth.meta)  # to t = 0.1 of 0.2
    seen = record_frames(monkeypatch)
    out = tmp_path / "short.gif"
    assert animate(prediction, short, out=out, trail=3, layout=layout) == 21  # the whole rollout, every step
    assert [index for index, *_ in seen] == list(range(21))
    for index, (truth_visible, prediction_visible), clock, ended in seen:
        assert prediction_visible and truth_visible == (index <= 10)
        assert ("truth ended at t = 0.1" in clock) == (index > 10)
        assert ended == (None if layout == "overlay" else index > 10)
    assert frames_and_size(out)[0] == 21
    [warning] = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warning.startswith("note: the truth ends at t = 0.1, before the animated rollout (to t = 0.2)")


def test_a_truth_that_lasts_draws_no_note(tmp_path, pair, caplog):
    caplog.set_level(logging.INFO, logger="hamnet.animate")
    assert animate(pair[1], pair[0], out=tmp_path / "full.gif") == 21
    assert caplog.records == []


# -- the command line --------------------------------------------------------------------------------
def test_cli_animate(tmp_path, pair, capsys):
    truth_file, rollout_file, out = tmp_path / "truth.npz", tmp_path / "rollout.npz", tmp_path / "movie.gif"
    save_trajectories(truth_file, pair[0])
    save_trajectories(rollout_file, pair[1])
    code, stdout, _ = run_cli(["animate", rollout_file, "--truth", truth_file, "--out", out, "--fps", "5",
                           "--stride", "4", "--max-frames", "4", "--layout", "overlay", "--system", "1"], capsys)
    assert code == 0 and "4 frames" in stdout
    assert frames_and_size(out)[:2] == (4, (round(5.0 * ANIMATION_DPI), round(5.6 * ANIMATION_DPI)))


def test_cli_animate_covers_a_long_rollout_and_a_short_truth(tmp_path, pair, capsys, caplog):
    truth, prediction = pair
    truth_file, rollout_file, out = tmp_path / "truth.npz", tmp_path / "rollout.npz", tmp_path / "movie.gif"
    save_trajectories(truth_file, Trajectories(truth.t[:8], truth.z[:, :8], truth.params, truth.meta))
    save_trajectories(rollout_file, prediction)
    caplog.set_level(logging.INFO, logger="hamnet.animate")
    code, stdout, _ = run_cli(["animate", rollout_file, "--truth", truth_file, "--max-frames", "6", "--out", out],
                              capsys)
    assert code == 0 and "6 frames" in stdout and frames_and_size(out)[0] == 6
    notes = [record.getMessage() for record in caplog.records]
    assert len(notes) == 2 and "shows 6 of the 21 time steps" in notes[0]
    assert "the truth ends at t = 0.07" in notes[1]


def test_cli_animate_bad_input(tmp_path, pair, capsys):
    good, text, empty = tmp_path / "good.npz", tmp_path / "text.npz", tmp_path / "empty.npz"
    save_trajectories(good, pair[1])
    text.write_text("not a trajectory")
    truth = pair[0]
    save_trajectories(empty, Trajectories(truth.t[:1], truth.z[:, :1], truth.params, truth.meta))
    cases = [
        (["animate", text, "--out", tmp_path / "a.gif"], "not a .npz trajectory file"),
        (["animate", good, "--out", tmp_path / "a.avi"], "unsupported animation format '.avi'; use one of .gif, .mp4"),
        (["animate", empty, "--out", tmp_path / "a.gif"], "rollout is empty"),
        (["animate", good, "--stride", "0", "--out", tmp_path / "a.gif"], "--stride must be at least 1"),
        (["animate", good, "--max-frames", "-3", "--out", tmp_path / "a.gif"], "--max-frames must be at least 1"),
    ]
    before = set(tmp_path.iterdir())
    for args, message in cases:
        code, _, err = run_cli(args, capsys)
        assert code == 1, args
        assert err.count("\n") == 1 and err.startswith("hamnet: error:") and message in err, err
    assert set(tmp_path.iterdir()) == before
