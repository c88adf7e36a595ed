"""Fuzz configuration from its three sources (command line, MEMWARDEN_* environment, TOML):
every input is a Config or one ConfigError line; nothing else escapes."""

from __future__ import annotations

import json
import os
import tempfile

from hypothesis import given
from hypothesis import strategies as st

from supervisor.settings import config, loading, specs, validate
from tests.fuzz.conftest import COUNTS, fuzz

OPTIONS = [o.replace("-", "_") for o, _, _ in __import__("supervisor.cli").cli.RUN_OPTIONS]
NUMBER = st.one_of(st.integers(-10, 10**6).map(str), st.floats(allow_nan=True).map(repr),
                   st.just("1" * 400), st.sampled_from(["nan", "inf", "1e309", "-0", ".5"]))
UNIT = st.sampled_from(["", "B", "MB", "GiB", "%", "ms", "us", "ns", "s", "h", "min", "MB/s",
                        "x", " ", "\x00"])
TEXT = st.one_of(st.builds(lambda n, u: n + u, NUMBER, UNIT), st.text(max_size=20),
                 st.sampled_from(["KILL", "USR2", "SIGTERM", "0", "64", ":0", "[::1]:0",
                                  "host:99999", "never", "always", "debug"]))


def toml_value(draw) -> str:  # type: ignore[no-untyped-def]
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return json.dumps(draw(TEXT), ensure_ascii=False)
    if kind == 1:
        return draw(st.sampled_from(["nan", "inf", "-inf", "1e309", "0", "-1", "100000000",
                                     "true", "0.0000001", "9" * 30]))
    if kind == 2:
        return "[" + ", ".join(json.dumps(t) for t in draw(st.lists(TEXT, max_size=3))) + "]"
    if kind == 3:
        depth = draw(st.integers(1, 2000))
        return "[" * depth + "]" * depth
    if kind == 4:
        return "{ a = 1, " + json.dumps(draw(st.text(max_size=5))) + " = \"x\\u0000\" }"
    if kind == 5:
        return draw(st.text(max_size=15))  # often not TOML at all
    return str(draw(st.integers()))


@st.composite
def toml_files(draw) -> bytes:  # type: ignore[no-untyped-def]
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    keys = st.sampled_from([*OPTIONS, "command", "bogus", "pressure", "worker"])
    lines = [f"{draw(keys)} = {toml_value(draw)}" for _ in range(draw(st.integers(0, 4)))]
    for _ in range(draw(st.integers(0, 2))):
        lines.append("[[worker]]")
        lines.append(f"name = {json.dumps(draw(st.sampled_from(['a', 'b', 'a b', '', 'x' * 70])))}")
        lines.append(f"command = {toml_value(draw)}")
        for _ in range(draw(st.integers(0, 3))):
            key = draw(st.sampled_from(["replicas", "high", "medium", "critical", "env", "cwd",
                                        "medium_signal", "ready_after", "grace", "restart"]))
            lines.append(f"{key} = {toml_value(draw)}")
    if draw(st.booleans()):
        lines.append("[pressure]")
        key = draw(st.sampled_from(["confirm", "margin", "growth_high", "headroom_medium",
                                    "growth_window", "dwell_high", "x"]))
        lines.append(f"{key} = {toml_value(draw)}")
    if draw(st.booleans()):
        lines.append(f"[profiles.{draw(st.sampled_from(['high', 'normal', 'nope']))}]")
        key = draw(st.sampled_from(["max_objects", "gc_interval_s", "trim_threshold_bytes"]))
        lines.append(f"{key} = {toml_value(draw)}")
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@fuzz
@given(st.dictionaries(st.sampled_from(OPTIONS), TEXT, max_size=4),
       st.dictionaries(st.sampled_from(OPTIONS), TEXT, max_size=4),
       toml_files(), st.one_of(st.none(), st.integers(0, 2**62)))
def test_every_configuration_is_a_config_or_one_line(cli, env, toml, limit) -> None:
    COUNTS["configuration"] += 1
    environ = {"MEMWARDEN_" + k.upper(): v.replace("\x00", "") for k, v in env.items()}
    with tempfile.NamedTemporaryFile(suffix=".toml", delete=False) as f:
        f.write(toml)
    try:
        cfg, origin = loading.load_with_origin({**cli, "command": ["true"]}, environ, f.name)
        specs.specs(cfg)
        assert all("\n" not in w for w in validate.against_limit(cfg, origin, limit))
    except config.ConfigError as e:
        assert "\n" not in str(e) and str(e)
    finally:
        os.unlink(f.name)


GRAMMAR_TEXT = st.one_of(
    st.text(max_size=20),
    st.builds(lambda n, s, u, p: f"{n}{s}{u}{p}", NUMBER, st.sampled_from(["", " ", "\t", "\n"]),
              UNIT, st.sampled_from(["", "/s", "/0s", "/2s", "/.5min", "/ ms", "/x", "//s"])))


@fuzz
@given(GRAMMAR_TEXT)
def test_the_grammar_gives_a_value_or_a_value_error(text) -> None:
    from supervisor.core import units

    COUNTS["units grammar"] += 1
    for parse, spell in ((units.parse_size, str), (units.parse_duration, units.spell_duration),
                         (units.parse_rate, units.spell_rate)):
        try:
            value = parse(text)
        except ValueError as e:
            assert "\n" not in str(e)
            continue
        assert parse(spell(value)) == value  # what is printed reads back the same


@fuzz
@given(st.one_of(st.text(max_size=60), st.builds(
    lambda v, rest: f"application/openmetrics-text; version={v}{rest}", st.text(max_size=8),
    st.text(max_size=20))))
def test_any_accept_header_gets_an_answer(accept) -> None:
    from supervisor.faces import metrics
    from tests.supervisor.test_endpoint import _reply

    COUNTS["metrics accept"] += 1
    body, content_type = metrics.Exposition(lambda: _reply(), metrics.EventCounts()).render(
        accept)
    assert body and content_type
