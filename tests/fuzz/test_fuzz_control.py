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
