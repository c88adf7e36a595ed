"""`memwarden analyze PATH...`: argument parsing and the run that prints or writes the report.

Exit status: 0 when the report was produced and no `--fail-on` condition holds; 1 when one
holds (for CI); 2 when the snapshots cannot be read as asked (no such path, no snapshot files,
no file readable, an unknown major format version) or an option is wrong. A file that cannot
be read is said on stderr (and in `read.problems`) while the others are analysed.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile

import msgspec

from snapshots import reader
from snapshots.analysis import Options, analyze
from snapshots.recommend import MARGIN
from snapshots.report import VERDICTS
from snapshots.series import LEVELS
from snapshots.verdict import Gate
from workers.protocol import escape

log = logging.getLogger("memwarden.snapshots.cli")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
FAIL_ON = ("suspected", "likely", "confirmed", "medium", "high", "critical")
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|min|m|h|d)?\s*$")
_UNITS = {"ms": 1e-3, "s": 1.0, None: 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """Parse `500ms`, `1s`, `5min`, `2h`, `1d` (a bare number is seconds) for argparse."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive duration such as 1s, 30s, 5min or 24h, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def percent(text: str) -> float:
    """Parse `1%` or `0.01` into a fraction for argparse."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share such as 1% or 0.01, got {text!r}"
                                         ) from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 100%], got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `memwarden analyze` to `parser`."""
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="snapshot files, directories or glob patterns (.jsonl, .jsonl.gz); "
                        "'-' reads a log stream from standard input (kubectl logs POD | "
                        "memwarden analyze -)")
    parser.add_argument("--format", choices=("text", "json", "html"), default="text",
                        help="report format (default: text)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the report to FILE instead of standard output")
    parser.add_argument("--fail-on", choices=FAIL_ON, metavar="LEVEL",
                        help="exit 1 when a worker's leak verdict reaches LEVEL (suspected, "
                        "likely, confirmed) or its pressure reached LEVEL (medium, high, "
                        "critical)")
    parser.add_argument("--window", type=duration, default=1.0, metavar="DURATION",
                        help="resampling window (default: 1s; widened for very long records)")
    parser.add_argument("--horizon", type=duration, default=24 * 3600.0, metavar="DURATION",
                        help="growth that reaches the limit within this time matters "
                        "(default: 24h)")
    parser.add_argument("--share-per-hour", type=percent, default=0.01, metavar="SHARE",
                        help="growth above this share of the limit per hour matters "
                        "(default: 1%%)")
    parser.add_argument("--margin", type=percent, default=MARGIN, metavar="SHARE",
                        help="safety margin of the recommended limit and thresholds "
                        "(default: 15%%, as Kubernetes' VPA recommender)")


def failed(verdict: str, max_level: str, fail_on: str | None) -> bool:
    """Whether the `--fail-on` condition holds for the report's worst verdict and level."""
    if fail_on is None:
        return False
    if fail_on in VERDICTS:
        return VERDICTS.index(verdict) >= VERDICTS.index(fail_on)  # type: ignore[arg-type]
    return LEVELS.index(max_level) >= LEVELS.index(fail_on)


def write_output(data: bytes, path: str | None, who: str) -> bool:
    """Write a report to `path`, or to standard output; False (said on stderr) on failure."""
    try:
        if path:
            with open(path, "wb") as f:
                f.write(data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    except OSError as e:
        print(f"{who}: cannot write {path or 'the report'}: {e.strerror}", file=sys.stderr)
        return False
    return True


def run(args: argparse.Namespace) -> int:
    """Analyse `args.paths`, print or write the report; return the exit status."""
    if "-" not in args.paths:
        return _run(args, args.paths)
    if sys.stdin.isatty():
        print("memwarden analyze: '-' reads snapshot records from standard input, which is a "
              "terminal; pipe them in: kubectl logs POD | memwarden analyze -", file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="memwarden-analyze-") as spooled:
        try:
            found = reader.spool(sys.stdin.buffer, spooled)
        except OSError as e:
            print(f"memwarden analyze: cannot read standard input: {e.strerror or e}",
                  file=sys.stderr)
            return EXIT_USAGE
        if not found:
            print("memwarden analyze: no snapshot records on standard input (lines with "
                  "{\"kind\":\"header\"...}, as --snapshots - writes them)", file=sys.stderr)
            return EXIT_USAGE
        paths = [p for path in args.paths for p in (found if path == "-" else [path])]
        return _run(args, paths)


def _run(args: argparse.Namespace, paths: list[str]) -> int:
    options = Options(window_s=args.window,
                      gate=Gate(horizon_s=args.horizon, share_per_h=args.share_per_hour),
                      margin=args.margin)
    try:
        result = analyze(paths, options)
    except reader.SnapshotError as e:
        print(f"memwarden analyze: {e}", file=sys.stderr)
        return EXIT_USAGE
    unreadable = [p for p in result.report.read.problems if reader.UNREADABLE in p]
    for problem in unreadable:  # also in the report, first of `read.problems`
        print(f"memwarden analyze: {escape(problem, 1000)}", file=sys.stderr)
    if unreadable and not result.report.read.files:
        return EXIT_USAGE
    if args.format == "json":
        data = msgspec.json.format(msgspec.json.encode(result.report), indent=2) + b"\n"
    elif args.format == "html":
        from snapshots import html  # only the HTML report needs it

        data = html.render(result).encode()
    else:
        from snapshots import text

        data = (text.render(result.report) + "\n").encode()
    if not write_output(data, args.output, "memwarden analyze"):
        return EXIT_USAGE
    rep = result.report
    if failed(rep.verdict, rep.max_level, args.fail_on):
        print(f"memwarden analyze: --fail-on {args.fail_on}: verdict {rep.verdict}, "
              f"max level {rep.max_level}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry of `python -m snapshots` (the same as `memwarden analyze`)."""
    parser = argparse.ArgumentParser(prog="python -m snapshots",
                                     description="Analyse memwarden snapshots.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


__all__ = ["EXIT_FAIL", "EXIT_OK", "EXIT_USAGE", "add_arguments", "failed", "main", "run"]
