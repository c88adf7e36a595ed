"""The decision core: levels, lifecycles, policy, restarts; pure functions of their inputs.

No I/O, no clock, no configuration: each call is given the time and the figures, and
returns what to do (`actions`). Everything above may use what `__all__` names.
"""

__all__ = [
    "actions",
    "envelope",
    "exitstatus",
    "identity",
    "lifecycle",
    "policy",
    "pressure",
    "projection",
    "restarts",
    "slope",
    "states",
    "units",
]
