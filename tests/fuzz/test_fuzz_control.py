"""Fuzz the control protocol's decoding: any bytes give a request or a reason, never a raise."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from supervisor.faces import control
from tests.fuzz.conftest import COUNTS, fuzz
from tests.fuzz.test_fuzz_channel import JSON

OPS = st.sampled_from(["status", "stop", "replace", "investigate", "set", "", "\x00", "x"])


@st.composite
def requests(draw) -> bytes:  # type: ignore[no-untyped-def]
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:
        fields = draw(st.dictionaries(st.sampled_from(["worker", "top", "limits", "x"]), JSON,
                                      max_size=4))
        fields["op"] = draw(OPS)
        return json.dumps(fields, allow_nan=True).encode()
    if kind == 2:
        depth = draw(st.integers(1, 3000))
        return b'{"op":"status","x":' + b"{\"a\":" * depth + b"1" + b"}" * depth + b"}"
    return b'{"op":"replace","worker":"' + draw(st.binary(max_size=30)) + b'"}'


@fuzz
@given(requests())
def test_any_request_decodes_or_is_refused_with_a_reason(data) -> None:
    COUNTS["control protocol"] += 1
    request, why = control.decode_request(data)
    assert (request is None) != (why is None)
    if why is not None:
        assert "\n" not in why and "\x1b" not in why


LIMIT_KEYS = st.sampled_from(["max_objects", "max_history", "gc_interval_s", "trim_interval_s",
                              "trim_threshold_bytes", "gc_threshold0", "bogus", ""])
LIMIT_VALUES = st.one_of(st.integers(), st.just(2**63), st.just(int("9" * 4000)), st.floats(),
                         st.just(1e308), st.booleans(), st.none(), st.text(max_size=4))


@fuzz
@given(st.dictionaries(LIMIT_KEYS, LIMIT_VALUES, max_size=4), st.one_of(st.integers(), JSON))
def test_set_and_investigate_send_nothing_the_command_line_would_refuse(limits, top) -> None:
    import msgspec

    from supervisor.settings import validate
    from supervisor.settings.validate import limits_refused
    from workers import protocol

    COUNTS["control set and investigate"] += 1
    for fields in ({"op": "set", "worker": "w", "limits": limits},
                   {"op": "investigate", "worker": "w", "top": top}):
        try:
            line = json.dumps(fields, allow_nan=True).encode()
        except ValueError:  # an integer past Python's 4300 digits
            continue
        request, _ = control.decode_request(line)
        if isinstance(request, control.Investigate):
            assert 1 <= request.top <= 1000
        if isinstance(request, control.Set):
            problem = limits_refused(request.limits)
            if problem is None:
                sent = msgspec.convert(request.limits, protocol.Limits)
                assert validate.limits_problem(sent) is None
            else:
                assert "\n" not in problem and len(problem) < 400
