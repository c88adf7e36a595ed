"""The faces: what people and programs outside see and send: the control socket and its
wire format, requests, the status view, the console, the metrics endpoint, the
listeners, sd_notify.
"""

__all__ = [
    "console",
    "control",
    "endpoint",
    "listeners",
    "metrics",
    "requests",
    "sdnotify",
    "view",
]
