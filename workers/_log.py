"""A logger that imports `logging` on its first message.

`logging` costs about 1 MB and 4 ms to import. Most programs import it anyway, but a
worker that does not should not pay for it through `import workers`; the library logs
only on rare events (a malformed message, a failed callback).
"""

from __future__ import annotations

from typing import Any


class LazyLogger:
    """Stands for `logging.getLogger(name)`; every attribute is the real logger's."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import logging

        return getattr(logging.getLogger(self._name), attr)


def get_logger(name: str) -> Any:
    """Return a logger for `name` that defers importing `logging` until it is used."""
    return LazyLogger(name)
