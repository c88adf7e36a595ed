"""Settings: the configuration schema and its sources, its validation, and each worker's
resolved settings (`specs`), which the composition root hands to the layers above.
"""

__all__ = [
    "config",
    "loading",
    "probes",
    "specs",
    "validate",
]
