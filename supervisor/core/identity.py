"""A generation's identity: which worker, which of its generations.

One type for every place that names a generation, so that the log, the records, the
control socket, the sampler's watches and the replay spell it the same way: `worker#n`.
"""

from __future__ import annotations

from typing import NamedTuple


class GenerationId(NamedTuple):
    """Generation `number` (from 1) of the worker named `worker`."""

    worker: str
    number: int

    def __str__(self) -> str:
        return f"{self.worker}#{self.number}"

    @classmethod
    def parse(cls, text: str) -> GenerationId | None:
        """The identity `str` spelled, or None for text that is not one (`worker#n`, n ≥ 1)."""
        worker, sep, number = text.rpartition("#")
        if not sep or not worker or not number.isascii() or not number.isdigit() \
                or int(number) < 1:
            return None
        return cls(worker, int(number))


__all__ = ["GenerationId"]
