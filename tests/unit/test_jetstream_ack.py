"""Reading a JetStream publish ack (``_jspub.outcome``): the replies of the JetStream wire API
(ADR-0002 and the server's ``JSPubAckResponse``), and what must not pass for an ack."""

from __future__ import annotations

import nats.js.errors
import pytest

from levibot.bus._jspub import outcome


@pytest.mark.parametrize(
    "data",
    [
        b'{"stream":"ORDERS","seq":5}',
        b'{"stream":"ORDERS","seq":5,"duplicate":true}',
        b'{"stream":"ORDERS","domain":"hub","seq":5}',
        b'{"stream":"error","seq":1}',  # a stream named "error" is still an ack
    ],
)
def test_an_ack_is_success(data: bytes) -> None:
    assert outcome(data, None) is None


def test_a_stream_error_is_raised_as_its_code_says() -> None:
    full = b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}'
    exc = outcome(full, None)
    assert isinstance(exc, nats.js.errors.ServiceUnavailableError)
    assert exc.err_code == 10077 and "maximum messages" in str(exc)
    wrong = b'{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"}}'
    assert isinstance(outcome(wrong, None), nats.js.errors.BadRequestError)


def test_the_no_responders_status_means_no_stream() -> None:
    assert isinstance(outcome(b"", {"Status": "503"}), nats.js.errors.NoStreamResponseError)


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        (b"", {"Status": "408", "Description": "Request Timeout"}),
        (b"", None),
        (b'{"error": oops', None),
        (b'\xff"error"\xfe', None),
        (b'["error"]', None),
        (b'{"error":"not an object"}', None),
        (b'{"error":{"description":"no code"}}', None),
        (b'{"error":{"code":500,"unknown_field":1}}', None),
        (b'{"nothing":"error"}', None),
    ],
)
def test_anything_else_is_an_error_not_an_ack(data: bytes, headers: dict[str, str] | None) -> None:
    exc = outcome(data, headers)
    assert isinstance(exc, nats.js.errors.APIError)
