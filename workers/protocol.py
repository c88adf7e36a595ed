"""The worker channel's wire format: JSON lines, one message per line.

This module is the single owner of the channel format. The supervisor and the
snapshot schema import it; it imports only the standard library and msgspec, so
that a worker stays light. `docs/protocol.md` is its prose counterpart.

Evolution rules: a new field always has a default; no field changes type; an
unknown message type or field is ignored by the receiver, never fatal.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Literal

import msgspec

#: Environment variables the supervisor sets for every worker it starts.
ENV_FD = "MEMWARDEN_FD"
ENV_WORKER = "MEMWARDEN_WORKER"
ENV_GENERATION = "MEMWARDEN_GENERATION"
ENV_PROFILE = "MEMWARDEN_PROFILE"
ENV_LIMITS = "MEMWARDEN_LIMITS"
#: Optional: "1" asks the worker for an unasked `report` (id "shutdown") on `shutdown`.
ENV_INVESTIGATE_ON_SHUTDOWN = "MEMWARDEN_INVESTIGATE_ON_SHUTDOWN"

#: Longest line either side accepts; longer lines are discarded up to the next newline.
MAX_LINE = 64 * 1024


class LineSplitter:
    """The channel's framing: a byte stream in, complete lines out (newline removed).

    A line longer than `max_line` is dropped up to the next newline and counted in
    `discarded`; the stream carries on with the line after it. Both ends use this; each
    says in its own log what was dropped (`_discard` is the hook).
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.discarded = 0
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add `data`; return the complete lines it finished."""
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                break
            if self._discarding:
                self._discarding = False
            elif nl - start > self.max_line:
                self._discard()
            else:
                lines.append(bytes(self._buf[start:nl]))
            start = nl + 1
        del self._buf[:start]
        if len(self._buf) > self.max_line and not self._discarding:
            self._discard()
            self._discarding = True
        if self._discarding:
            self._buf.clear()
        return lines

    def _discard(self) -> None:
        self.discarded += 1


#: Everything decoding one untrusted line can raise: msgspec's DecodeError (and its
#: ValidationError), but also UnicodeDecodeError for a string that is not UTF-8 and
#: RecursionError for nesting about 1000 deep, even inside an unknown field.
DECODE_ERRORS: tuple[type[Exception], ...] = (msgspec.DecodeError, UnicodeDecodeError,
                                              RecursionError)


def decode_line(decoder: Any, line: bytes) -> tuple[Any, str | None]:
    """Decode one untrusted line with `decoder`; never raises.

    Returns (message, None), or (None, why) with `why` safe to log (see `escape`): what
    was wrong and the start of the line.
    """
    try:
        return decoder.decode(line), None
    except DECODE_ERRORS as e:
        return None, f"{escape(str(e), 160)} in {escape(line, 80)}"


#: C0 and C1 controls, DEL, the Unicode line separators, and the lone surrogates that
#: stand for bytes that are not UTF-8 (see `escape`).
_UNPRINTABLE = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\udc80-\\udcff\\\\]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code == 0x5C:
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str | bytes | bytearray | memoryview, limit: int = 200) -> str:
    """`text` fit for one log line: control characters, backslashes and bytes that are not
    UTF-8 escaped (`\\x1b`), cut to `limit` characters (then ending in `...`).

    Untrusted text must never forge a log line or send escape sequences to a terminal.
    """
    if isinstance(text, str):
        cut = len(text) > limit
        text = text[:limit]
    else:
        raw = bytes(text[: limit * 4])
        cut = len(text) > len(raw)
        text = raw.decode("utf-8", "surrogateescape")
        cut = cut or len(text) > limit
        text = text[:limit]
    return _UNPRINTABLE.sub(_escape_char, text) + ("..." if cut else "")


class Level(enum.IntEnum):
    """Pressure levels, ordered; on the wire they travel as lowercase names."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> Level:
        """Return the level named `name` (any case); raise ValueError otherwise."""
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(
                f"unknown level {name!r}; expected one of low, medium, high, critical"
            ) from None


LevelName = Literal["low", "medium", "high", "critical"]
ProfileName = Literal["normal", "high", "critical"]

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]

#: The largest figure (bytes, objects, entries) either side accepts from the other: 8 PiB,
#: more than any machine holds, and still exact as a float. A message carrying a larger one
#: (a 400-digit `rss_before` once raised OverflowError in the log line; `objects = 2**70`
#: was recorded and recommended from) is dropped and counted like a malformed line.
MAX_FIGURE = 2**53
#: The longest duration in milliseconds a worker reports (a day): beyond it, not a measurement.
MAX_MS = 86_400_000.0
Figure = Annotated[int, msgspec.Meta(ge=0, le=MAX_FIGURE)]
Delta = Annotated[int, msgspec.Meta(ge=-MAX_FIGURE, le=MAX_FIGURE)]
Millis = Annotated[float, msgspec.Meta(ge=0, le=MAX_MS)]


class Limits(msgspec.Struct, forbid_unknown_fields=False, frozen=True):
    """The limits a generation runs with (what `MEMWARDEN_LIMITS` holds)."""

    max_objects: Annotated[int, msgspec.Meta(ge=1)] = 2000
    max_history: Annotated[int, msgspec.Meta(ge=1)] = 500
    gc_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    trim_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    trim_threshold_bytes: NonNegInt = 200 * 1000 * 1000
    #: `gc.set_threshold` for a Python worker; 0 keeps the interpreter's own value
    #: (threshold0 10,000: measured in `workers/gcwatch.py`).
    gc_threshold0: NonNegInt = 10_000
    gc_threshold1: NonNegInt = 0
    gc_threshold2: NonNegInt = 0


class _Msg(msgspec.Struct, tag_field="type", omit_defaults=True):
    pass


# supervisor -> worker


class Pressure(_Msg, tag="pressure"):
    """The worker's level changed (sent on MEDIUM and above, and on the way back to LOW)."""

    level: LevelName
    rss: NonNegInt
    limit: NonNegInt | None = None
    metric: str = ""
    threshold: float | None = None


class SetLimits(_Msg, tag="limits"):
    """New limits apply from now on (a live change of profile)."""

    profile: ProfileName
    limits: Limits


class Investigate(_Msg, tag="investigate"):
    """Ask the worker for a leak report; it answers with a `report` carrying the same id."""

    id: str
    top: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20


class Shutdown(_Msg, tag="shutdown"):
    """The worker is being retired; TERM follows, KILL after `grace_s`."""

    grace_s: NonNegFloat = 10.0
    reason: str = ""


# worker -> supervisor


class Ready(_Msg, tag="ready"):
    """The worker has loaded its state and is doing useful work."""

    pid: Figure = 0


class Stats(_Msg, tag="stats"):
    """Periodic counters from the worker's own view of its memory."""

    objects: Figure = 0
    history: Figure = 0
    blocks: Figure = 0
    gc_collections: Figure = 0
    gc_pause_ms: Millis = 0.0
    rss: Figure = 0
    stores: dict[str, Figure] = {}
    #: Bytes held by the stores that know their size (vector stores, stream buffers).
    store_bytes: dict[str, Figure] = {}
    #: Lines from the supervisor the worker dropped (malformed, unknown or too long).
    dropped: Figure = 0


class Trimmed(_Msg, tag="trimmed"):
    """What a trim dropped and what it gave back."""

    dropped: Figure
    rss_before: Figure
    rss_after: Figure
    ms: Millis
    reason: str = ""


class Report(_Msg, tag="report"):
    """Answer to `investigate`: a leak investigator report, and what it cost."""

    id: str
    ms: Millis = 0.0
    growth: dict[str, Delta] = {}
    largest: list[dict[str, object]] = []
    objects_per_mb: Annotated[float, msgspec.Meta(ge=0, le=MAX_FIGURE)] | None = None
    duplicates: list[str] = []
    error: str = ""
    #: GC-tracked objects, `sys.getallocatedblocks()` and RSS when the report was made.
    objects: Figure = 0
    blocks: Figure = 0
    rss: Figure = 0
    #: With a rate-limit refusal (`error` set): seconds until an investigation is possible.
    retry_after_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_MS / 1000)] = 0.0
    #: The worker's state by kind: `{"store", "shape", "count", "bytes"}`, largest first.
    shapes: list[dict[str, object]] = []
    #: The longest containers inside the state, with where they are:
    #: `{"where", "type", "len", "bytes", "grew"}` (`grew`: since the previous report).
    arrays: list[dict[str, object]] = []
    #: Entries per registered store now, and their change since the previous report.
    stores: dict[str, Figure] = {}
    store_growth: dict[str, Delta] = {}
    #: One paragraph for people: what the figures point at, and where to look next.
    finding: str = ""


def shown(value: object, limit: int = 40) -> str:
    """Any decoded value, as a message may quote it: escaped, cut to `limit`, and never
    raising (`repr` of an integer of more than 4300 digits raises ValueError)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        return escape(repr(value), limit)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__}"


#: A report's free-form entries: the keys that must be figures, and those that must be text.
_ENTRY_FIGURES = {"shapes": ("count", "bytes"), "arrays": ("len", "bytes", "grew"),
                  "largest": ("len", "bytes")}
_ENTRY_TEXTS = {"shapes": ("store", "shape"), "arrays": ("where", "type"),
                "largest": ("type",)}


def report_problem(report: Report) -> str | None:
    """What makes `report` unfit to print or record, or None: an entry of `shapes`, `arrays`
    or `largest` whose figure is not an integer within `MAX_FIGURE` (`count: "many"`, a
    list, 400 digits once made `memwarden investigate` fail with "internal error") or whose
    name is not text. The reason is safe to log."""
    for field, figures in _ENTRY_FIGURES.items():
        for i, entry in enumerate(getattr(report, field)):
            for key in figures:
                value = entry.get(key, 0)
                if isinstance(value, bool) or not isinstance(value, int) \
                        or not -MAX_FIGURE <= value <= MAX_FIGURE:
                    return f"{field}[{i}].{key} is not a figure: {shown(value)}"
            for key in _ENTRY_TEXTS[field]:
                if not isinstance(entry.get(key, ""), str):
                    return f"{field}[{i}].{key} is not text: {shown(entry[key])}"
    return None


ToWorker = Pressure | SetLimits | Investigate | Shutdown
FromWorker = Ready | Stats | Trimmed | Report

__all__ = [
    "DECODE_ERRORS",
    "ENV_FD",
    "ENV_GENERATION",
    "ENV_INVESTIGATE_ON_SHUTDOWN",
    "ENV_LIMITS",
    "ENV_PROFILE",
    "ENV_WORKER",
    "MAX_FIGURE",
    "MAX_LINE",
    "FromWorker",
    "Investigate",
    "Level",
    "LevelName",
    "Limits",
    "LineSplitter",
    "Pressure",
    "ProfileName",
    "Ready",
    "Report",
    "SetLimits",
    "Shutdown",
    "Stats",
    "ToWorker",
    "Trimmed",
    "decode_line",
    "escape",
    "report_problem",
    "shown",
]
