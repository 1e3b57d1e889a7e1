"""The demo runs end to end and tells the conservation story (tiny settings)."""

import json

from PIL import Image

from hamnet.cli import main


def test_quick_demo_writes_figures_animation_and_table(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hlieconv-SO2" in printed and "fc-node" in printed and "conservation.png" in printed
    for name in ("conservation.png", "error.png"):
        assert Image.open(out / name).format == "PNG"
    assert Image.open(out / "springs-hlieconv.gif").n_frames == 10
    models = json.loads((out / "summary.json").read_text())["models"]
    # the equivariant Hamiltonian with leapfrog keeps both momenta to round-off; the baseline does not
    so2, baseline = models["hlieconv-SO2"], models["fc-node"]
    assert so2["linear_momentum"] < 1e-12 and so2["angular_momentum"] < 1e-12
    assert baseline["angular_momentum"] > max(1e-8, 1e3 * so2["angular_momentum"])


def test_demo_refuses_a_file_as_folder(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("keep me")
    assert main(["demo", "--quick", "--out", str(target)]) == 1
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_demo_runs_on_the_threads_asked_and_gives_the_callers_count_back(tmp_path, capsys, monkeypatch):
    import torch

    import hamnet.cli

    seen = []

    def failing_demo(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise ValueError("stopped here by the test")

    monkeypatch.setattr(hamnet.cli, "demo", failing_demo)
    before = torch.get_num_threads()
    asked = before + 1  # differs from the caller's count, whatever it is
    assert main(["demo", "--quick", "--threads", str(asked), "--out", str(tmp_path / "demo")]) == 1
    assert seen == [asked] and torch.get_num_threads() == before
    assert main(["demo", "--quick", "--threads", "0", "--out", str(tmp_path / "demo")]) == 1
    assert "--threads" in capsys.readouterr().err and seen == [asked]
