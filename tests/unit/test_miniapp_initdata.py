"""initData verification against independently computed vectors (Telegram's Web App spec)."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import quote, urlencode

import pytest
from aiogram.utils.web_app import check_webapp_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.miniapp.initdata import InitDataError, sign, verify_init_data

TOKEN = "5768337691:AAH5YkoiEuPk8-FZa32hStHTqXiLPtAEhx8"
NOW = 1_700_000_000
USER = {"id": 279058397, "first_name": "Vladislav", "username": "vdkfrost", "language_code": "ru"}


def reference_init_data(fields: dict[str, str], token: str = TOKEN) -> str:
    """Sign ``fields`` the way the spec reads, written out independently of the code under test."""
    secret = hmac.new(key=b"WebAppData", msg=token.encode("utf-8"), digestmod=hashlib.sha256)
    check = "\n".join(f"{key}={fields[key]}" for key in sorted(fields))
    digest = hmac.new(secret.digest(), check.encode("utf-8"), hashlib.sha256).hexdigest()
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in fields.items()) + (
        f"&hash={digest}"
    )


def fields(**overrides: str) -> dict[str, str]:
    base = {
        "query_id": "AAHdF6IQAAAAAN0XohDhrOrc",
        "user": json.dumps(USER, ensure_ascii=False, separators=(",", ":")),
        "auth_date": str(NOW - 60),
    }
    base.update(overrides)
    return base


def test_genuine_init_data_is_accepted_and_parsed() -> None:
    init = verify_init_data(reference_init_data(fields()), TOKEN, now=NOW)
    assert init.user_id == 279058397
    assert init.user["username"] == "vdkfrost"
    assert init.auth_date == NOW - 60
    assert init.fields["query_id"] == "AAHdF6IQAAAAAN0XohDhrOrc"


def test_signing_helper_agrees_with_aiogram_and_the_reference() -> None:
    data = sign(fields(), TOKEN)
    assert check_webapp_signature(TOKEN, data)
    assert check_webapp_signature(TOKEN, reference_init_data(fields()))
    assert verify_init_data(data, TOKEN, now=NOW).user_id == USER["id"]


def test_unicode_and_reserved_characters_in_values_verify() -> None:
    user = {**USER, "first_name": "Zoë & 李 = ok\nnewline"}
    f = fields(user=json.dumps(user, ensure_ascii=False), start_param="ref=a&b")
    init = verify_init_data(reference_init_data(f), TOKEN, now=NOW)
    assert init.user["first_name"] == "Zoë & 李 = ok\nnewline"
    assert init.fields["start_param"] == "ref=a&b"


@pytest.mark.parametrize(
    ("init_data", "code"),
    [
        ("", "missing"),
        ("query_id=1&auth_date=2&user=%7B%7D", "missing_hash"),
        ("no-equals-sign-here", "malformed"),
        ("a=1&a=2&hash=00", "duplicate_field"),
        ("x=" + "a" * 5000, "malformed"),
    ],
)
def test_malformed_init_data_is_refused_with_a_code(init_data: str, code: str) -> None:
    with pytest.raises(InitDataError) as err:
        verify_init_data(init_data, TOKEN, now=NOW)
    assert err.value.code == code


def test_tampered_field_breaks_the_hash() -> None:
    data = reference_init_data(fields())
    forged = data.replace("279058397", "1001")
    with pytest.raises(InitDataError, match="does not match") as err:
        verify_init_data(forged, TOKEN, now=NOW)
    assert err.value.code == "bad_hash"


def test_data_signed_for_another_bot_is_refused() -> None:
    data = reference_init_data(fields(), token="1111:another-bot")
    with pytest.raises(InitDataError) as err:
        verify_init_data(data, TOKEN, now=NOW)
    assert err.value.code == "bad_hash"


def test_duplicate_hash_field_is_refused() -> None:
    data = reference_init_data(fields())
    with pytest.raises(InitDataError) as err:
        verify_init_data(data + "&hash=" + "0" * 64, TOKEN, now=NOW)
    assert err.value.code == "duplicate_field"


def test_stale_init_data_is_refused_and_the_boundary_is_accepted() -> None:
    data = reference_init_data(fields(auth_date=str(NOW - 3600)))
    assert verify_init_data(data, TOKEN, max_age_s=3600, now=NOW).auth_date == NOW - 3600
    with pytest.raises(InitDataError, match="old") as err:
        verify_init_data(data, TOKEN, max_age_s=3599, now=NOW)
    assert err.value.code == "stale"


def test_auth_date_in_the_future_is_refused() -> None:
    data = reference_init_data(fields(auth_date=str(NOW + 3600)))
    with pytest.raises(InitDataError) as err:
        verify_init_data(data, TOKEN, now=NOW)
    assert err.value.code == "stale"


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"auth_date": "yesterday"}, "missing_auth_date"),
        ({"user": "{not json"}, "bad_user"),
        ({"user": '{"first_name": "no id"}'}, "bad_user"),
        ({"user": "[1, 2]"}, "bad_user"),
    ],
)
def test_signed_but_invalid_fields_are_refused(overrides: dict[str, str], code: str) -> None:
    data = reference_init_data(fields(**overrides))
    with pytest.raises(InitDataError) as err:
        verify_init_data(data, TOKEN, now=NOW)
    assert err.value.code == code


def test_signed_init_data_without_auth_date_is_refused() -> None:
    f = fields()
    del f["auth_date"]
    with pytest.raises(InitDataError) as err:
        verify_init_data(reference_init_data(f), TOKEN, now=NOW)
    assert err.value.code == "missing_auth_date"


_values = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=60, deadline=None)
@given(extra=st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), _values, max_size=4))
def test_any_signed_fields_verify_and_any_changed_value_does_not(extra: dict[str, str]) -> None:
    extra = {k: v for k, v in extra.items() if k not in {"hash", "user", "auth_date"}}
    f = fields(**extra)
    data = urlencode({**f, "hash": hmac_hex(f)})
    assert verify_init_data(data, TOKEN, now=NOW).fields == f
    for key in f:
        changed = {**f, key: f[key] + "x"}
        forged = urlencode({**changed, "hash": hmac_hex(f)})
        with pytest.raises(InitDataError):
            verify_init_data(forged, TOKEN, now=NOW)


def hmac_hex(f: dict[str, str]) -> str:
    secret = hmac.new(b"WebAppData", TOKEN.encode(), hashlib.sha256).digest()
    check = "\n".join(f"{k}={f[k]}" for k in sorted(f))
    return hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()
