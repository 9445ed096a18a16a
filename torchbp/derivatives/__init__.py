"""Each layer type's equations, one file per type: forward maths, what is saved, the input VJP
(BP2's analogue), the parameter VJPs (BP3's and BP4's), the JVP and ``samples()`` for the tests.

This package imports torch only. ``torchbp.functional`` turns each type into an autograd
Function; ``torchbp.nn`` wraps it in a module.
"""

from .base import Derivatives, Sample

__all__ = ["Derivatives", "Sample"]
