"""Shared test settings: one per-dtype tolerance table and seeded generators."""

import pytest
import torch

# Small tensors are fastest on one thread, and a fixed thread count keeps timings and reductions
# repeatable on any machine (CI has 2 cores; oversubscribing them slows the suite many times over).
torch.set_num_threads(1)

# Tolerances used across the suite, by dtype: (rtol, atol) for comparisons that should agree
# to round-off after a handful of operations.
TOLERANCES = {
    torch.float32: (1e-5, 1e-6),
    torch.float64: (1e-10, 1e-12),
}


@pytest.fixture
def generator():
    """A fresh, seeded generator for each test (randomness is never global)."""
    return torch.Generator().manual_seed(1234)
