"""Re-render the animations shown in the README.

    python animations/render.py [--demo-output demo-output]

Uses the demo's rollouts (running ``hamnet demo`` into ``--demo-output`` first if they are not
there), so the springs GIFs show exactly the models the demo trained: truth against HLieConv SO(2)
rolled out with leapfrog, and truth against the FC-NODE baseline rolled out with rk4. The N-body
GIF is ground truth from ``hamnet.generate``: light bodies orbiting a heavy one, in 3D.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hamnet.animate import animate
from hamnet.demo import run_demo
from hamnet.io import load_trajectories
from hamnet.simulation import generate
from hamnet.systems import NBody

HERE = Path(__file__).resolve().parent
FRAMES = 80


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-output", default="demo-output")
    args = parser.parse_args(argv)
    demo = Path(args.demo_output)
    if not (demo / "rollout-hlieconv-SO2.npz").exists():
        run_demo(demo, progress=False)
    truth = load_trajectories(demo / "springs-test.npz")
    stride = 10  # 80 frames x 10 steps: the first 8 time units of the 20-unit rollout
    for name, label in (("hlieconv-SO2", "HLieConv SO(2), leapfrog"), ("fc-node", "FC-NODE, rk4")):
        rollout = load_trajectories(demo / f"rollout-{name}.npz")
        animate(rollout, truth, out=HERE / f"springs-{name}.gif", stride=stride, max_frames=FRAMES, trail=6,
                layout="overlay", label=label)
    orbit = generate(NBody(dim=3, family="central", n_particles=4), n_systems=1, steps=1600, dt=0.01, seed=0)
    animate(orbit, out=HERE / "nbody-orbit.gif", stride=20, max_frames=FRAMES, trail=10, label="N-body, 3D (truth)")
    print(f"wrote {', '.join(p.name for p in sorted(HERE.glob('*.gif')))} to {HERE}")


if __name__ == "__main__":
    main()
