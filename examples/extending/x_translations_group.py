"""A new Lie group: translations along the x axis of the plane. One class, one registration.

The group is one-dimensional (``exp(a)`` moves points by ``a`` along x) and its action is not
transitive: a point's orbit is the horizontal line through it, identified by its y coordinate, which
LieConv then sees as the orbit identifier. A potential invariant to it conserves the x component
of the total momentum. After ``--plugin x_translations_group.py``, ``--group TX`` works everywhere a
built-in group does: training, checkpoints, rollouts.
"""

import torch

from hamnet.groups import LieGroup, register_group


class XTranslations(LieGroup):
    """``g = [[1, 0, a], [0, 1, 0], [0, 0, 1]]`` acting on ``(x, y)`` as ``(x + a, y)``."""

    name = "TX"
    space_dim = 2
    lie_dim = 1
    matrix_size = 3
    orbit_dim = 1

    def hat(self, a):
        algebra = a.new_zeros(*a.shape[:-1], 3, 3)
        algebra[..., 0, 2] = a[..., 0]
        return algebra

    def exp(self, a):
        # hat(a) squares to zero, so the exponential series stops after its linear term
        return torch.eye(3, dtype=a.dtype, device=a.device) + self.hat(a)

    def log(self, g):
        return g[..., 0, 2:3]

    def chart(self, g):
        return g[..., 0, 2:3]  # the only entry of g - I that is not constant

    def section(self, points):
        # the element that carries the orbit's reference point (0, y) to (x, y), and the orbit's y
        return self.exp(points[..., :1]), points[..., 1:]


register_group("TX", XTranslations)
