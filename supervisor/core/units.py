"""Sizes, durations and rates as people write them: `200MB`, `1.5GiB`, `80%`, `250us`, `5MB/s`.

One grammar for all three, exact: a number is a decimal (`2`, `1.5`, `.5`; no sign, no
exponent), optionally followed by spaces and its unit, and its value is computed in exact
fractions before it is rounded once to the float or integer kept. Measured before: `100us`
became 9.999999999999999e-05 s and was refused as below 100us, and `1MB/2s` was read as
one MB per 12 s (the `2` was glued to a `1`).

* size: NUMBER UNIT, UNIT one of `B`, `k`/`kB`/`KiB`/`Ki`, `M`/`MB`/`MiB`/`Mi`, `G`..., `T`...
  (any case; the bare letters and `Ki`... are binary, `kB`, `MB`... decimal); or NUMBER `%`
  (a share of the memory limit); or `off`.
* duration: NUMBER UNIT, UNIT one of `ns`, `us`/`µs`, `ms`, `s`, `m`/`min`, `h`, `d`; a
  number without a unit is seconds.
* rate: SIZE `/` [NUMBER] DURATION-UNIT (`5MB/s`, `300MB/min`, `1MB/2s`, `1MiB / 500ms`),
  or a SIZE alone (per second); the period must be above 0.

What memwarden prints of a setting parses back to the same value: `Size.__str__`,
`spell_duration` and `spell_rate` (property-tested in tests/supervisor/test_units.py).
"""

from __future__ import annotations

import re
from decimal import Context, Decimal
from fractions import Fraction

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024, "ki": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2, "mi": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4, "ti": 1024**4,
}
_DURATION_UNITS = {
    "ns": Fraction(1, 10**9), "us": Fraction(1, 10**6), "µs": Fraction(1, 10**6),
    "ms": Fraction(1, 1000), "s": Fraction(1), "": Fraction(1),
    "m": Fraction(60), "min": Fraction(60), "h": Fraction(3600), "d": Fraction(86400),
}
#: Spaces and tabs only around and inside: a newline is no part of a value.
_NUMBER = re.compile(r"[ \t]*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)[ \t]*([a-zA-Zµ%]*)[ \t]*")
#: A rate's period: an optional number, then a duration unit (`s`, `2s`, `500ms`).
_PERIOD = re.compile(r"[ \t]*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)?[ \t]*([a-zA-Zµ]+)[ \t]*")

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
        if self.percent is not None:  # positional: the grammar has no exponent (1e-05%)
            return _spell(self.percent, lambda t: parse_size(t).percent, [("%", Decimal(1))])
        return _exact(self.bytes or 0)


def _split(text: str, pattern: re.Pattern[str] = _NUMBER) -> tuple[Fraction | None, str] | None:
    """(the exact number, or None when absent; the unit as written), or None if `text` is
    not NUMBER [spaces] UNIT."""
    m = pattern.fullmatch(text)
    if m is None:
        return None
    number = None if m.group(1) is None else Fraction(Decimal(m.group(1)))
    return number, m.group(2)


def _size_value(value: str | int | float) -> Fraction | Size:
    """The exact bytes `value` spells, or a Size for a share or `off`; raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, str):
        # A bare number is refused everywhere: `high = 80` or `--high 80` meant 80MB or
        # 80%, hardly 80 bytes.
        raise ValueError(f"expected {SIZE_FORM}, got {_shown(value)} without a unit")
    if value.strip(" \t").lower() == "off":
        return Size()
    parts = _split(value)
    if parts is None or parts[0] is None:
        raise ValueError(f"expected {SIZE_FORM}, got {_shown(value)}")
    number, unit = parts
    if unit == "%":
        if not 0 < number <= 100:
            raise ValueError(f"expected a share of the limit above 0% and at most 100%, "
                             f"got {_shown(value)}")
        return Size(percent=float(number))
    if not unit:
        raise ValueError(f"expected {SIZE_FORM}, got {_shown(value)} without a unit")
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"expected {SIZE_FORM}, got unknown unit {_shown(unit)}")
    if number * factor > MAX_BYTES:
        raise ValueError(f"expected a size of at most 1PiB, got {_shown(value)}")
    return number * factor


def parse_size(value: str | int | float) -> Size:
    """Parse `200MB`, `1.5GiB`, `524288000B`, `80%` or `off` (a threshold never reached);
    raise ValueError naming the accepted form. A number without a unit is refused, and so is
    a size above 1 PiB; a fraction of a byte is dropped (`1.5B` is 1 byte)."""
    exact = _size_value(value)
    return exact if isinstance(exact, Size) else Size(bytes=int(exact))


def parse_duration(value: str | int | float) -> float:
    """Parse `1ms`, `250us`, `5s` (a bare number is seconds) into seconds, from 0 to 30
    days; raise ValueError naming the accepted form (also for nan and inf)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected {DURATION_FORM}, got {_shown(value)}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        parts = _split(value)
        factor = _DURATION_UNITS.get(parts[1].lower()) if parts else None
        if parts is None or parts[0] is None or factor is None:
            raise ValueError(f"expected {DURATION_FORM}, got {_shown(value)}")
        exact = parts[0] * factor
        seconds = float(exact) if exact <= MAX_SECONDS else float("inf")
    if not 0 <= seconds <= MAX_SECONDS:  # also false for nan and inf
        raise ValueError(f"expected {DURATION_FORM}, at most 30 days, got {_shown(value)}")
    return seconds


def parse_rate(value: str) -> float:
    """Parse `5MB/s`, `300MB/min` or `1MB/2s` (a size without `/...` is per second) into
    bytes per second; raise ValueError naming the accepted form (a bare number has no unit,
    a period of 0 has no rate: both refused)."""
    if not isinstance(value, str):
        raise ValueError(f"expected {RATE_FORM}, got {_shown(value)} without a unit")
    size, sep, per = value.partition("/")
    try:
        amount = _size_value(size)
    except ValueError:
        raise ValueError(f"expected {RATE_FORM}, got {_shown(value)}") from None
    period = _split(per, _PERIOD) if sep else (Fraction(1), "s")
    factor = _DURATION_UNITS.get(period[1].lower()) if period and period[1] else None
    if isinstance(amount, Size) or period is None or factor is None:
        raise ValueError(f"expected {RATE_FORM}, got {_shown(value)}")
    seconds = (1 if period[0] is None else period[0]) * factor
    if seconds == 0:
        raise ValueError(f"expected {RATE_FORM}, over a period above 0, got {_shown(value)}")
    rate = amount / seconds
    if rate > MAX_RATE:
        raise ValueError(f"expected a rate of at most 1TiB/s, got {_shown(value)}")
    return float(rate)


def _plainer(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """(number, unit) `a` reads better than `b`: a shorter number, or as short without a
    decimal point (1min, not 60s; 100us, not 0.1ms; 1.5s, not 1500ms)."""
    return (len(a[0]), "." in a[0]) < (len(b[0]), "." in b[0])


def _spell(value: float, parse, candidates) -> str:  # type: ignore[no-untyped-def]
    """The plainest text among NUMBER+unit for each (unit, factor) of `candidates` that
    `parse` reads back as exactly `value` (ties: the earlier unit)."""
    if value == 0:  # in the unit of factor 1: 0s, 0B/s
        return "0" + next(unit for unit, factor in candidates if factor == 1)
    best: tuple[str, str] | None = None
    for unit, factor in candidates:
        exact = Decimal(value) / Decimal(factor) if factor != 1 else Decimal(value)
        for digits in range(1, 18):
            number = Context(prec=digits).create_decimal(exact)
            text = f"{number:f}"
            if "." in text:
                text = text.rstrip("0").rstrip(".")
            try:
                ok = parse(text + unit) == value
            except ValueError:
                ok = False
            if ok:
                if best is None or _plainer((text, unit), best):
                    best = text, unit
                break
    if best is None:  # unreachable for values the parsers accept: 17 digits always round-trip
        raise ValueError(f"no exact spelling for {value!r}")
    return best[0] + best[1]


_SPELL_DURATION = [(u, _DURATION_UNITS[u]) for u in ("d", "h", "min", "s", "ms", "us", "ns")]
_SPELL_SIZE = [(u, _SIZE_UNITS[u.lower()]) for u in ("GiB", "GB", "MiB", "MB", "KiB", "kB",
                                                         "B")]


def spell_duration(seconds: float) -> str:
    """A duration as the configuration takes it, exactly: `parse_duration` of the result is
    `seconds` (100us, 1.5s, 7d)."""
    return _spell(seconds, parse_duration, [(u, Decimal(f.numerator) / Decimal(f.denominator))
                                            for u, f in _SPELL_DURATION])


def spell_rate(bytes_per_s: float) -> str:
    """A rate as the configuration takes it, exactly: `parse_rate` of the result is
    `bytes_per_s` (5MB/s, 500kB/s, 83333.3333333333B/s)."""
    return _spell(bytes_per_s, parse_rate, [(f"{u}/s", Decimal(f)) for u, f in _SPELL_SIZE])


def _shown(value: object) -> str:
    """A value as an error message quotes it: short, and no control character."""
    text = repr(value) if isinstance(value, str) else str(value)
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:60])
    return text + ("..." if len(repr(value)) > 60 else "")


def format_size(n: float) -> str:
    """Human size in decimal units (the MB people write in thresholds), for logs and reports.

    Never raises: a figure no machine holds (an int of 400 digits raised OverflowError here;
    nan, inf) is said to be out of range rather than printed.
    """
    if not -1e18 < n < 1e18:  # also false for nan
        return "out of range"
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
