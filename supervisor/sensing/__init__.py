"""Sensing: the sampler (the main loop's interface), the ticker (its tick loops in Python
and `_ticker.c` in C) and the layout they share, the discoverer, the probes and rings, and
how memory is measured.
"""

__all__ = [
    "discoverer",
    "layout",
    "measure",
    "probe",
    "ring",
    "sampler",
    "ticker",
]
