"""The OpenAPI document states what the handlers enforce, and documents what they answer.

Schemathesis (``tests/integration/test_gateway_schemathesis.py``) explores the whole API; these
pin the cases it once found: the refusals that were schema-valid and the undocumented 503.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from levibot.testing import eventually
from tests.unit.test_gateway_rest import call
from tests.unit.test_gateway_support import running_gateway

pytestmark = pytest.mark.anyio


async def test_document_states_the_constraints_between_fields(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        status, doc = await call(g, "GET", "/openapi.json", None)
        schemas = doc["components"]["schemas"]
        one_of = schemas["PredictRequest"]["oneOf"]
        assert [branch["required"] for branch in one_of] == [["features"], ["values"]]
        any_of = schemas["RiskUpdate"]["anyOf"]
        assert [branch["required"] for branch in any_of] == [["policy"], ["trading_state"]]
        options = schemas["RetrainRequest"]["properties"]["options"]
        assert options["$ref"] == "#/components/schemas/TrainConfig"
        assert schemas["TrainConfig"]["additionalProperties"] is False
        assert "n_estimators" in schemas["TrainConfig"]["properties"]

        # What the document refuses, the handlers refuse, with the rule in the message.
        status, err = await call(g, "POST", "/predict", "read",
                                 json={"features": None, "values": None})  # fmt: skip
        assert (status, err["error"]["code"]) == (422, "invalid_body")
        assert "exactly one of 'features' or 'values'" in err["error"]["message"]
        status, err = await call(g, "PUT", "/risk", json={"policy": None})
        assert (status, err["error"]["code"]) == (422, "invalid_body")
        status, err = await call(g, "POST", "/retrain", json={"options": {"purge": "3"}})
        assert (status, err["error"]["code"]) == (422, "invalid_options")
        assert "$.options.purge" in err["error"]["message"]


async def test_retrain_takes_an_integral_number_for_an_integer_option(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        seen: list[dict[str, Any]] = []
        g.services.trainer = lambda options: seen.append(options)
        status, _ = await call(g, "POST", "/retrain", json={"options": {"purge": 3.0}})
        assert status == 202  # JSON Schema's integer includes 3.0
        await eventually(lambda: seen)
        assert seen == [{"purge": 3}] and isinstance(seen[0]["purge"], int)
        status, err = await call(g, "POST", "/retrain", json={"options": {"purge": 3.5}})
        assert (status, err["error"]["code"]) == (422, "invalid_options")


async def test_telegram_auth_without_a_bot_token_is_a_documented_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEVIBOT__TELEGRAM__TOKEN", raising=False)
    async with running_gateway(tmp_path, telegram_bot_token="") as g:
        status, doc = await call(g, "GET", "/openapi.json", None)
        auth = doc["paths"]["/auth/telegram"]["post"]
        assert {"200", "400", "401", "503"} <= set(auth["responses"])
        assert auth["requestBody"]["content"]["application/json"]["schema"]["required"] == [
            "initData"
        ]
        status, err = await call(g, "POST", "/auth/telegram", None, json={"initData": "x"})
        assert (status, err["error"]["code"]) == (503, "not_configured")
        features = doc["paths"]["/features/{symbol}"]["get"]["responses"]
        assert "503" in features  # the online feature store may be down


async def test_mini_app_assets_are_served_and_documented_by_name(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        status, doc = await call(g, "GET", "/openapi.json", None)
        asset = doc["paths"]["/app/static/{filename}"]["get"]
        assert set(asset["responses"]["200"]["content"]) == {"text/javascript", "text/css"}
        async with g.session.get(g.url + "/app/static/app.js") as r:
            assert r.status == 200 and r.content_type == "text/javascript"
        for name in ("nope.js", "index.html", ".hidden.js"):
            status, err = await call(g, "GET", f"/app/static/{name}", None)
            assert (status, err["error"]["code"]) == (404, "not_found"), name
