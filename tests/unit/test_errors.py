"""Error codes: what each lets a client conclude, and reading them back from replies."""

from __future__ import annotations

import pytest

from kayit.protocol.errors import ErrorCode, error_code
from kayit.protocol.replies import encode_error
from kayit.protocol.resp import coded_error


def test_definite_failures_and_unknown_outcomes() -> None:
    nothing_done = {code for code in ErrorCode if code.nothing_done}
    assert nothing_done == {
        ErrorCode.BADREQUEST,
        ErrorCode.NOREPLICAS,
        ErrorCode.UNAVAILABLE,
        ErrorCode.NOLEADER,
        # Refusals by the client port: the request never reached the cluster.
        ErrorCode.NOAUTH,
        ErrorCode.WRONGPASS,
        ErrorCode.DENIED,
        ErrorCode.LIMIT,
    }
    assert {code for code in ErrorCode if not code.nothing_done} == {
        ErrorCode.TIMEOUT,
        ErrorCode.INTERNAL,
    }


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_reads_back_from_its_text_reply(code: ErrorCode) -> None:
    text = encode_error(code, "some reason")
    assert error_code(text) is code
    assert error_code(text.rstrip(b"\n")) is code
    assert error_code(text.decode()) is code


@pytest.mark.parametrize(
    "line",
    [b"OK", b"NOT_FOUND", b"ERROR", b"ERROR something went wrong", b"ERROR BADREQUESTX x",
     b"-NOREPLICAS a value, not an error", b"hello ERROR NOREPLICAS", b"",
     "ERROR noreplicas lower case"],
)  # fmt: skip
def test_other_lines_have_no_code(line: bytes | str) -> None:
    assert error_code(line) is None


def test_a_code_alone_with_crlf_is_read() -> None:
    assert error_code(b"ERROR TIMEOUT\r\n") is ErrorCode.TIMEOUT


@pytest.mark.parametrize("code", list(ErrorCode))
def test_resp_errors_lead_with_the_code_except_bad_requests_and_limits(code: ErrorCode) -> None:
    expected = {
        ErrorCode.BADREQUEST: b"-ERR why\r\n",
        ErrorCode.LIMIT: b"-ERR LIMIT why\r\n",  # Redis: -ERR max number of clients reached
    }.get(code, f"-{code.value} why\r\n".encode())
    assert coded_error(code, "why") == expected
