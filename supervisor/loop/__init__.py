"""The loop: the arbiter carrying out the policy's actions, the generations' OS handles,
the worker channel, stopping, the event log, the recorder and health.
"""

__all__ = [
    "arbiter",
    "channel",
    "dropped",
    "events",
    "handles",
    "health",
    "readiness",
    "recorder",
    "stopping",
]
