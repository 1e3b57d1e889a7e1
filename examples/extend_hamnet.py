"""Extend hamnet with your own system, group, model and integrator, and use them from the command line.

    python examples/extend_hamnet.py [--out examples-output/extend]

Each file in ``examples/extending/`` holds one class and the one call that registers it:
``morse_system.py`` (a system), ``x_translations_group.py`` (a Lie group), ``pair_potential_model.py``
(a model) and ``suzuki_integrator.py`` (an integrator). ``hamnet ... --plugin FILE.py`` imports such
a file first, and then the new names work like built-in ones: this script generates Morse
trajectories, trains HLieConv over the new group with the new integrator, and the new model, each
to a checkpoint, and rolls both out from their checkpoints, all through the ``hamnet`` command line
(``hamnet.cli.main``, what the ``hamnet`` script runs). A
checkpoint records only the names, so rolling it out without the plugin fails in one line: hamnet
never imports code because a file names it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import hamnet
from hamnet.cli import main as main_cli

PLUGINS = Path(__file__).resolve().parent / "extending"


def hamnet_command(*args: str, plugins: tuple[str, ...] = ()) -> None:
    """``hamnet ARGS --plugin ...``, as typed in a shell (run in this process; a failure raises)."""
    flags = [flag for name in plugins for flag in ("--plugin", str(PLUGINS / name))]
    if main_cli([*args, *flags]) != 0:
        raise RuntimeError(f"hamnet {' '.join(args)} failed")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="examples-output/extend")
    parser.add_argument("--tiny", action="store_true", help="seconds-long settings (used by the tests)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    systems, epochs = ("20", "1") if args.tiny else ("200", "5")
    data, group_run, model_run = out / "morse.npz", out / "runs" / "tx", out / "runs" / "pair"
    common = ("--epochs", epochs, "--width", "16", "--depth", "1", "--batch-size", "50", "--lr", "3e-3", "--quiet")

    hamnet_command("generate", "--system", "morse", "--n-systems", systems, "--steps", "50",
                   "--out", str(data), "--quiet", plugins=("morse_system.py",))
    with_group = ("x_translations_group.py", "suzuki_integrator.py")
    hamnet_command("train", "--data", str(data), "--model", "hlieconv", "--group", "TX", "--method",
                   "suzuki4", "--out", str(group_run), *common, plugins=with_group)
    hamnet_command("train", "--data", str(data), "--model", "pair-potential", "--method", "leapfrog",
                   "--out", str(model_run), *common, plugins=("pair_potential_model.py",))

    drifts = {}
    runs = ((group_run, "suzuki4", with_group), (model_run, "leapfrog", ("pair_potential_model.py",)))
    for run, method, plugins in runs:
        rollout_file = out / f"rollout-{run.name}.npz"
        hamnet_command("rollout", "--checkpoint", str(run / "best.pt"), "--data", str(data), "--method", method,
                       "--steps", "200", "--out", str(rollout_file), plugins=plugins)
        rolled = hamnet.load_trajectories(rollout_file)
        report = hamnet.conservation_report(rolled.z)
        drifts[run.name] = {name: float(values.max()) for name, values in report.items()}
        print(f"{rolled.meta['model']} rolled out with {method}: largest relative change of linear momentum "
              f"{drifts[run.name]['linear_momentum']:.1e}, angular momentum {drifts[run.name]['angular_momentum']:.1e}")

    # a fresh process, where nothing is registered yet: the checkpoint alone must not bring the group in
    refused = subprocess.run([sys.executable, "-m", "hamnet.cli", "rollout", "--checkpoint", str(group_run / "best.pt"),
                              "--data", str(data), "--out", str(out / "refused.npz")], capture_output=True, text=True)
    print(f"without --plugin: exit {refused.returncode}, {refused.stderr.strip()}")
    summary = {"drifts": drifts, "refused_exit": refused.returncode, "refused_message": refused.stderr,
               "refused_file_exists": (out / "refused.npz").exists()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
