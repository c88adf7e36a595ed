"""Sizes, durations and rates as people write them: `200MB`, `1.5GiB`, `80%`, `250us`, `5MB/s`."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024, "ki": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2, "mi": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4, "ti": 1024**4,
}
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "": 1.0,
    "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0,
}
_NUMBER = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Zµ%]*)\s*$")

SIZE_FORM = ("a size with its unit such as 200MB, 1.5GiB, 524288000B, 80% (of the limit) "
             "or off")
DURATION_FORM = "a duration such as 1ms, 250us, 5s, 2min, 12h or 7d"
RATE_FORM = "a rate such as 5MB/s or 300MB/min"
#: The largest size, duration and rate accepted anywhere: beyond them a value is a typo,
#: and a bigger one would overflow the integers and timers it ends up in.
MAX_BYTES = 2**50  # 1 PiB
MAX_SECONDS = 30 * 86400.0
MAX_RATE = 2.0**40  # 1 TiB/s


class Size:
    """A size in bytes, or a share of the memory limit (resolved once the limit is known).

    A plain class rather than a dataclass so that msgspec hands its raw form to our parser.
    """

    __slots__ = ("bytes", "percent")

    def __init__(self, bytes: int | None = None, percent: float | None = None) -> None:
        self.bytes = bytes
        self.percent = percent

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Size) and (self.bytes, self.percent) == (
            other.bytes, other.percent)

    def __hash__(self) -> int:
        return hash((self.bytes, self.percent))

    def __repr__(self) -> str:
        return f"Size({self})"

    def resolve(self, limit: int | None) -> int | None:
        """Return bytes; `off`, or a percentage without a known limit, resolves to None (the
        input is disabled)."""
        if self.percent is None:
            return self.bytes
        return None if limit is None else int(limit * self.percent / 100.0)

    @property
    def off(self) -> bool:
        """True for `off`: neither bytes nor a share."""
        return self.bytes is None and self.percent is None

    def __str__(self) -> str:
        if self.off:
            return "off"
        return f"{self.percent:g}%" if self.percent is not None else _exact(self.bytes or 0)


def parse_size(value: str | int | float) -> Size:
    """Parse `200MB`, `1.5GiB`, `524288000B`, `80%` or `off` (a threshold never reached);
    raise ValueError naming the accepted form. A number without a unit is refused, and so is
    a size above 1 PiB."""
    if isinstance(value, bool) or not isinstance(value, str):
        # A bare number is refused everywhere: `high = 80` or `--high 80` meant 80MB or
        # 80%, hardly 80 bytes.
        raise ValueError(f"expected {SIZE_FORM}, got {_shown(value)} without a unit")
    if value.strip().lower() == "off":
        return Size()
    m = _NUMBER.match(value)
    if not m:
        raise ValueError(f"expected {SIZE_FORM}, got {_shown(value)}")
    number, unit = float(m.group(1)), m.group(2)
    if unit == "%":
        if not 0 < number <= 100:
            raise ValueError(f"expected a share of the limit above 0% and at most 100%, "
                             f"got {_shown(value)}")
        return Size(percent=number)
    if not unit:
        raise ValueError(f"expected {SIZE_FORM}, got {_shown(value)} without a unit")
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"expected {SIZE_FORM}, got unknown unit {_shown(unit)}")
    if not number * factor <= MAX_BYTES:  # also false for inf (400 digits)
        raise ValueError(f"expected a size of at most 1PiB, got {_shown(value)}")
    return Size(bytes=int(number * factor))


def parse_duration(value: str | int | float) -> float:
    """Parse `1ms`, `250us`, `5s` (a bare number is seconds) into seconds, from 0 to 30
    days; raise ValueError naming the accepted form (also for nan and inf)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected {DURATION_FORM}, got {_shown(value)}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _NUMBER.match(value)
        factor = _DURATION_UNITS.get(m.group(2).lower()) if m else None
        if m is None or factor is None:
            raise ValueError(f"expected {DURATION_FORM}, got {_shown(value)}")
        seconds = float(m.group(1)) * factor
    if not 0 <= seconds <= MAX_SECONDS:  # also false for nan and inf
        raise ValueError(f"expected {DURATION_FORM}, at most 30 days, got {_shown(value)}")
    return seconds


def parse_rate(value: str) -> float:
    """Parse `5MB/s` or `300MB/min` (a size without `/...` is per second) into bytes per
    second; raise ValueError naming the accepted form (a bare number has no unit: refused)."""
    if not isinstance(value, str):
        raise ValueError(f"expected {RATE_FORM}, got {_shown(value)} without a unit")
    size, sep, per = value.partition("/")
    try:
        amount = parse_size(size)
        seconds = parse_duration("1" + per.strip()) if sep else 1.0
    except ValueError:
        raise ValueError(f"expected {RATE_FORM}, got {_shown(value)}") from None
    if amount.bytes is None or seconds <= 0:
        raise ValueError(f"expected {RATE_FORM}, got {_shown(value)}")
    rate = amount.bytes / seconds
    if rate > MAX_RATE:
        raise ValueError(f"expected a rate of at most 1TiB/s, got {_shown(value)}")
    return rate


def _shown(value: object) -> str:
    """A value as an error message quotes it: short, and no control character."""
    text = repr(value) if isinstance(value, str) else str(value)
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:60])
    return text + ("..." if len(repr(value)) > 60 else "")


def format_size(n: float) -> str:
    """Human size in decimal units (the MB people write in thresholds), for logs and reports."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1000
    return f"{sign}{n:.1f} TB"


def _exact(n: int) -> str:
    """The shortest exact spelling of a byte count: 50MB, 1GiB, 1500000B -> 1.5MB."""
    for unit, factor in (("GiB", 1024**3), ("GB", 1000**3), ("MiB", 1024**2), ("MB", 1000**2),
                         ("KiB", 1024), ("kB", 1000)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def format_duration(seconds: float) -> str:
    """Human duration for logs: 850us, 12.5ms, 3.2s, 4min."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 1:
        return f"{seconds * 1e3:.3g}ms"
    if seconds < 120:
        return f"{seconds:.3g}s"
    if seconds < 7200:
        return f"{seconds / 60:.3g}min"
    if seconds < 172800:
        return f"{seconds / 3600:.3g}h"
    return f"{seconds / 86400:.3g}d"
