"""The `memwarden` command line. Only this module exits the process or prints usage."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from supervisor import __version__
from supervisor.core.units import DURATION_FORM, format_duration, format_size, parse_duration
from supervisor.settings import config, loading, validate
from workers.protocol import escape

if TYPE_CHECKING:
    import logging


# `logging` and everything that runs supervision are imported where they are used:
# `memwarden status --check` is a probe, and costs less without them (scripts/bench_probe.py).


def _log() -> logging.Logger:
    import logging

    return logging.getLogger("memwarden.cli")

# (option, metavar, help) for every `run` option; defaults come from config.Config.
RUN_OPTIONS: list[tuple[str, str | None, str]] = [
    ("interval", "DURATION", "sampling interval"),
    ("measure", "HOW", "what thresholds compare: cgroup (each generation in its own cgroup: "
     "what the kernel charges it), pss (the tree's RSS corrected for shared pages), rss, or "
     "auto (cgroup where memwarden may create one, else pss)"),
    ("discover-interval", "DURATION", "how often each worker's process tree is rediscovered"),
    ("ring", "DURATION", "length of the in-memory flight recorder per worker"),
    ("medium", "SIZE", "tree RSS from which the worker is told to trim (size or %% of limit)"),
    ("high", "SIZE", "tree RSS from which a replacement starts with the HIGH profile"),
    ("critical", "SIZE", "tree RSS from which a replacement starts with the CRITICAL profile"),
    ("limit", "SIZE", "memory limit (default: the cgroup's limit, when there is one)"),
    ("growth-medium", "RATE", "floor: slower growth never raises MEDIUM, whatever it projects"),
    ("growth-high", "RATE", "floor: slower growth never raises HIGH, whatever it projects"),
    ("growth-window", "DURATION", "growth is judged over this window, from one window after "
     "ready on; each third of it must grow that fast"),
    ("cooldown", "DURATION", "minimum time between replacements of one worker"),
    ("cooldown-max", "DURATION", "longest cooldown: it doubles after a generation that reached "
     "HIGH within twice its cooldown"),
    ("grace", "DURATION", "time between TERM and KILL when stopping a worker"),
    ("critical-grace", "DURATION", "the same, when retiring under CRITICAL pressure"),
    ("restart", "POLICY", "restart a worker that exits by itself: never, on-failure or always"),
    ("restart-budget", "N", "restarts allowed within --restart-window before giving up"),
    ("restart-window", "DURATION", "window for --restart-budget"),
    ("backoff-initial", "DURATION", "delay before the first restart; doubles each time"),
    ("backoff-max", "DURATION", "longest delay between restarts"),
    ("ready-after", "DURATION", "a worker that does not speak the channel is ready after this"),
    ("ready-timeout", "DURATION", "a replacement not ready by then is a failed start"),
    ("ready-tcp", "HOST:PORT", "ready once a connection to this address is accepted"),
    ("ready-http", "URL", "ready once this http:// URL on this machine answers 2xx or 3xx"),
    ("ready-exec", "CMD", "ready once this command exits 0"),
    ("ready-file", "PATH", "ready once this file exists, newer than the generation"),
    ("on-baseline-high", "ACTION", "continue or exit (status 3) when fresh generations are "
     "already above HIGH when they become ready"),
    ("baseline-generations", "N", "with --on-baseline-high exit: how many such generations in "
     "a row"),
    ("medium-signal", "SIG", "signal sent to workers under MEDIUM pressure (e.g. USR2)"),
    ("oom-score-adj", "N", "oom_score_adj for workers, so the kernel picks them, not memwarden"),
    ("own-oom-score-adj", "N", "memwarden's own oom_score_adj; -1000: the kernel never picks "
     "it (needs CAP_SYS_RESOURCE; left as it is otherwise)"),
    ("snapshots", "DIR", "directory for JSONL snapshots ('' to write none, '-' for standard "
     "output)"),
    ("snapshot-file-size", "SIZE", "size at which a snapshot file is closed and the next begun"),
    ("snapshot-files", "N", "snapshot files of this host kept in the directory"),
    ("snapshot-max-age", "DURATION", "snapshot files older than this are removed"),
    ("sample-period", "DURATION", "period of the per-worker summary records"),
    ("metrics", "HOST:PORT", "serve Prometheus metrics on this address (:PORT: this machine "
     "only)"),
    ("control", "PATH", "control socket for memwarden status/replace/stop ('' for none; "
     "default: memwarden-UID/control.sock in $XDG_RUNTIME_DIR or /tmp)"),
    ("log-level", "LEVEL", "debug, info, warning or error"),
    ("log-format", "FORMAT", "text (lines for people) or json (one object per line, for a "
     "log pipeline)"),
]
#: The commands that talk to a running memwarden over its control socket.
CONTROL_COMMANDS = ("status", "top", "investigate", "set", "replace", "stop")


def _default(name: str) -> str:

    attr = name.replace("-", "_")
    defaults = config.Config()
    value = getattr(getattr(defaults, config.NESTED[attr]) if attr in config.NESTED
                    else defaults, attr)
    if value is None:
        return "none"
    if isinstance(value, config.Duration):
        return format_duration(float(value))
    if isinstance(value, config.Rate):
        return f"{format_size(value)}/s".replace(" ", "")
    return str(value)


def _refresh(text: str) -> float:
    """`memwarden top --interval`: a duration like every other option's, 100ms to 1h."""

    try:
        value = parse_duration(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"expected {DURATION_FORM}, from 100ms to 1h, got "
                                         f"{text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of refreshes from 1, got {text!r}")
    return int(text)


def build_parser(*, analyze_arguments: bool = True,
                 run_arguments: bool = True) -> argparse.ArgumentParser:
    """The whole parser; `analyze_arguments=False` skips importing the analysis code for `run`
    and the control commands, `run_arguments=False` the options of `run` (and so the
    configuration's code) for the control commands."""
    parser = argparse.ArgumentParser(
        prog="memwarden",
        description="Memory-pressure-aware process supervisor.",
        epilog="Every run option also reads from MEMWARDEN_<NAME> (e.g. MEMWARDEN_HIGH=200MB) and "
        "from the --config TOML file; the command line wins over the environment, which wins "
        "over the file.",
    )
    parser.add_argument("--version", action="version", version=f"memwarden {__version__}")
    sub = parser.add_subparsers(dest="action", metavar="COMMAND")

    run = sub.add_parser(
        "run", help="start a worker and supervise it",
        usage="memwarden run [OPTIONS] -- CMD [ARG...]",
        description="Start CMD (or the [[worker]] entries of --config) and supervise it: "
        "sample its process tree's memory, tell it to trim, replace it before it hits the "
        "limit, forward signals, reap zombies, exit with its status.",
    )
    run.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                     help="TOML configuration file (default: $MEMWARDEN_CONFIG or none)")
    for name, metavar, text in RUN_OPTIONS if run_arguments else ():
        default = "" if "default:" in text else f" (default: {_default(name)})"
        run.add_argument(f"--{name}", metavar=metavar, default=argparse.SUPPRESS,
                         help=text + default)
    run.add_argument("--listen", metavar="HOST:PORT", action="append", default=argparse.SUPPRESS,
                     help="bind this address once and hand it to every generation as "
                     "LISTEN_FDS, fd 3 on (repeatable; default: none)")
    run.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS,
                     help="classify and record everything, act on nothing (default: off)")
    run.add_argument("--investigate-on-retire", action="store_true", default=argparse.SUPPRESS,
                     help="ask each retired generation for a leak report before TERM "
                     "(default: off)")
    run.add_argument("--realtime", action="store_true", default=argparse.SUPPRESS,
                     help="run the sampling thread SCHED_FIFO (needs CAP_SYS_NICE): steadier "
                     "ticks on a busy machine (default: off)")
    run.add_argument("--no-subreaper", dest="subreaper", action="store_false",
                     default=argparse.SUPPRESS,
                     help="do not adopt orphaned descendants (default: adopt them)")

    analyze = sub.add_parser(
        "analyze", help="turn snapshot files into a verdict",
        description="Read snapshot files (files, directories, globs, .gz) and report per "
        "worker and generation: growth, leak verdict, time to the limit, replacements.",
    )
    _control_parsers(sub)
    sub.add_parser(
        "completion", help="print a shell completion script",
        description="Print a completion script for bash or zsh, generated from these options: "
        "memwarden completion bash > /etc/bash_completion.d/memwarden",
    ).add_argument("shell", choices=("bash", "zsh"))
    if not analyze_arguments:
        return parser
    # deferred: start-up cost of the client commands
    from snapshots import cli as snapshots_cli
    snapshots_cli.add_arguments(analyze)
    analyze.add_argument("--replay", action="store_true",
                         help="run the pressure classifier of --config over the recorded samples")
    analyze.add_argument("--config", metavar="FILE", help="configuration for --replay")
    return parser


def _control_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def add(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--control", metavar="PATH", default=None,
                       help="the running memwarden's control socket "
                       "(default: $MEMWARDEN_CONTROL or the default path)")
        return p

    status = add("status", "show the supervised workers")
    status.add_argument("--json", action="store_true", help="print the answer as JSON")
    status.add_argument(
        "--check", nargs="?", const="ready", choices=("ready", "live"), default=None,
        help="exit 0 when memwarden is ready (every worker has a ready generation) or, with "
        "'live', when its sampler ticks; 1: no memwarden answers, 3: not ready, 4: not live")
    top = add("top", "show the workers, refreshed")
    top.add_argument("--interval", type=_refresh, default=1.0, metavar="DURATION",
                     help="refresh period, 100ms to 1h (default: 1s)")
    top.add_argument("--count", type=_count, default=None, metavar="N",
                     help="refresh N times, then exit (default: until interrupted)")
    add("investigate", "ask a worker for a leak report").add_argument("worker")
    p = add("set", "change a worker's limits live, e.g. max_objects=500")
    p.add_argument("worker")
    p.add_argument("limits", nargs="+", metavar="KEY=VALUE")
    add("replace", "start a new generation, retire the old one once it is ready"
        ).add_argument("worker")
    add("stop", "stop every worker gracefully and exit")


def _control(args: argparse.Namespace) -> int:
    # deferred: start-up cost of the client commands
    from supervisor.faces import console, control

    path = args.control or os.environ.get("MEMWARDEN_CONTROL") or control.default_path()
    action = args.action
    if action == "set":
        limits, problem = _limits(args.limits)
        if problem:
            print(f"memwarden set: {problem}", file=sys.stderr)
            return 2
        request: control.Request = control.Set(args.worker, limits)
    elif action in ("status", "top"):
        request = control.Status()
    elif action == "stop":
        request = control.Stop()
    elif action == "replace":
        request = control.Replace(args.worker)
    else:
        request = control.Investigate(args.worker)
    try:
        if action == "top":
            return console.top(lambda: control.ask(path, request), args.interval, args.count)
        reply = control.ask(path, request)
    except control.NotOurs as e:
        print(f"memwarden {action}: refusing {path}: {e.strerror}", file=sys.stderr)
        return console.EXIT_NO_ANSWER
    except OSError as e:
        print(f"memwarden {action}: no memwarden answers at {path} ({e.strerror or e}); "
              "is it running, with --control pointing there?", file=sys.stderr)
        return console.EXIT_NO_ANSWER
    if action == "status" and args.check:
        status, line = console.check(reply, args.check)
        print(line)
        return status
    if action == "status" and args.json:
        print(msgspec.json.encode(reply).decode())
        return 0
    if action != "status":
        print(reply.message)
        return 0 if reply.ok else 1
    print("\n".join(console.render(reply)))
    return 0


def _limits(items: list[str]) -> tuple[dict[str, int | float], str | None]:
    """`KEY=NUMBER` arguments of `memwarden set` as limits, or a one-line problem."""

    limits: dict[str, int | float] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            return {}, f"expected KEY=NUMBER such as max_objects=500, got '{escape(item, 60)}'"
        if key not in validate.LIMIT_NAMES:
            return {}, (f"unknown limit '{escape(key, 60)}'; known: "
                        f"{', '.join(validate.LIMIT_NAMES)}")
        try:
            limits[key] = int(text) if text.strip().isdigit() else float(text)
        except ValueError:
            return {}, f"expected KEY=NUMBER such as max_objects=500, got '{escape(item, 60)}'"
    problem = validate.limits_refused(limits)  # the bounds any client of the socket gets
    if problem:
        return {}, problem
    return limits, None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `memwarden` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    # `run` and the control commands skip the analysis code: `status --check` is a probe.
    control = argv[:1] in ([c] for c in CONTROL_COMMANDS)
    parser = build_parser(analyze_arguments=not control and argv[:1] != ["run"],
                          run_arguments=not control)
    args = parser.parse_args(argv)
    if args.action == "run":
        return _run(args, command)
    if args.action == "completion":
        # deferred: start-up cost of the client commands
        from supervisor import completion
        print(completion.SHELLS[args.shell](parser), end="")
        return 0
    if args.action in CONTROL_COMMANDS:
        try:
            return _control(args)
        except KeyboardInterrupt:  # the way out of `memwarden top`
            return 0
        except BrokenPipeError:  # `memwarden status | head -1`: the reader has all it wants
            _quiet_stdout()
            return 0
    if args.action == "analyze":
        if args.replay:
            # deferred: start-up cost of the client commands
            from supervisor import replay
            return replay.run(args)
        # deferred: start-up cost of the client commands
        from snapshots import cli as snapshots_cli
        return snapshots_cli.run(args)
    parser.print_help()
    return 2


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush finds no broken pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _run(args: argparse.Namespace, command: list[str]) -> int:

    given = {k: v for k, v in vars(args).items() if k not in ("action", "config")}
    if command:
        given["command"] = command
    try:
        cfg, origin = loading.load_with_origin(given, file=getattr(args, "config", None))
        if not cfg.command and not cfg.worker:
            raise config.ConfigError(
                "no command given: memwarden run [OPTIONS] -- CMD [ARG...] "
                "(or [[worker]] entries in --config)")
    except (config.ConfigError, ValueError) as e:
        _say(str(e))  # before the log's format is known: one plain line
        return 2
    # deferred: start-up cost of the client commands
    from supervisor.loop.events import setup_logging

    setup_logging(cfg.log_level, cfg.log_format)
    try:
        from supervisor import app  # deferred: start-up of the client commands
        from supervisor.settings import validate  # deferred: start-up of the client commands
        assembly = app.assemble(cfg)  # resolves signal names and per-worker values
        warnings = validate.against_limit(cfg, origin, assembly.limit)
        warnings += app.probe_warnings(assembly)
        listeners = app.open_listeners(assembly)
        sockets = app.open_sockets(cfg)
    except (config.ConfigError, ValueError) as e:
        if cfg.log_format == "json":
            _log().error("%s", escape(str(e), 1000))
        else:
            _say(str(e))
        return 2
    for warning in warnings:
        _log().warning("%s", escape(warning, 1000))
    try:
        return app.supervise(assembly, sockets, listeners)
    except config.ConfigError as e:  # a --measure that is not possible here
        _say(str(e))
        return 2


def _say(text: str) -> None:
    """One line on stderr; what came from outside cannot break it into more (or colour it)."""

    print(f"memwarden: {escape(text, 1000)}", file=sys.stderr)


