"""hamnet: learned Hamiltonian dynamics with Lie-group-equivariant networks.

The public API is what this module re-exports; everything else may change.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
