"""REST behaviour: commands on the bus, read models, validation errors, jobs, OpenAPI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from levibot.messages import (
    ActivateModel,
    Features,
    OrderDenied,
    PortfolioSnapshot,
    Position,
    SetKillSwitch,
    SetRiskPolicy,
    SetTradingState,
    StartStrategy,
    StopStrategy,
    SubmitOrder,
    TradingState,
)
from levibot.testing import eventually
from sidecars.gateway.auth import AuditLog
from tests.unit.test_gateway_support import Harness, running_gateway
from tests.unit.test_gateway_ws import signal

pytestmark = pytest.mark.anyio


async def call(
    g: Harness, method: str, path: str, scope: str | None = "admin", **kw: Any
) -> tuple[int, Any]:
    headers = g.h(scope) if scope else {}
    async with g.session.request(method, g.url + path, headers=headers, **kw) as r:
        text = await r.text()
        return r.status, json.loads(text) if r.content_type == "application/json" else text


async def test_admin_commands_are_published_and_audited(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        assert (await call(g, "POST", "/killswitch", json={"on": True}))[0] == 202
        status, body = await call(
            g, "PUT", "/risk", json={"policy": "aggressive", "trading_state": "halted"}
        )
        assert status == 202 and [c["command"] for c in body["commands"]] == [
            "SetRiskPolicy", "SetTradingState"]  # fmt: skip
        assert (await call(g, "POST", "/strategies/ema_cross/start"))[0] == 202
        assert (await call(g, "POST", "/strategies/ema_cross/stop"))[0] == 202
        (kill,) = g.ctx.of_type(SetKillSwitch)
        assert kill.on is True and kill.issued_by == f"gateway:{g.key_ids['admin']}"
        assert len(kill.command_id) == 32
        assert g.ctx.of_type(SetRiskPolicy)[0].policy == "aggressive"
        assert g.ctx.of_type(SetTradingState)[0].state is TradingState.HALTED
        assert g.ctx.of_type(StartStrategy)[0].strategy == "ema_cross"
        assert g.ctx.of_type(StopStrategy)[0].strategy == "ema_cross"
        status, risk = await call(g, "GET", "/risk", "read")
        assert (risk["kill_switch"], risk["trading_state"], risk["policy"]) == (
            True, "halted", "aggressive")  # fmt: skip
        actions = [e.action for e in AuditLog(tmp_path / "audit.jsonl").read()]
        assert actions == ["killswitch.set", "risk.update", "strategy.start", "strategy.stop"]
        assert oct((tmp_path / "audit.jsonl").stat().st_mode & 0o777) == "0o600"


async def test_manual_order_goes_to_risk_and_its_state_is_followed(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        status, body = await call(
            g,
            "POST",
            "/orders",
            "trade",
            json={"symbol": "BTCUSDT", "side": "buy", "quantity": 0.5},
        )
        assert status == 202
        (cmd,) = g.ctx.of_type(SubmitOrder)
        assert (cmd.symbol, cmd.side, cmd.quantity) == ("BTCUSDT", "buy", 0.5)
        coid = body["client_order_id"]
        assert coid == f"manual-{cmd.command_id}"
        status, order = await call(g, "GET", f"/orders/{coid}", "read")
        assert status == 200 and order["status"] == "submitted"
        await g.actor.handle(
            OrderDenied(
                ts_event=5,
                ts_init=5,
                symbol="BTCUSDT",
                client_order_id=coid,
                strategy="manual",
                code="KILL_SWITCH",
                reason="kill switch on",
            )
        )
        status, order = await call(g, "GET", f"/orders/{coid}", "read")
        assert order["status"] == "denied" and order["code"] == "KILL_SWITCH"
        status, risk = await call(g, "GET", "/risk", "read")
        assert risk["recent_denials"] == {"KILL_SWITCH": 1}
        status, err = await call(g, "GET", "/orders/unknown", "read")
        assert status == 404 and err["error"]["code"] == "order_not_found"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{nope", 400, "malformed_json"),
        (b"", 400, "missing_body"),
        (b'{"symbol": "BTCUSDT"}', 422, "invalid_body"),
        (b'{"symbol": "BTCUSDT", "side": "hold"}', 422, "invalid_body"),
        (b'{"symbol": "BTCUSDT", "side": "buy", "quantity": -1}', 422, "invalid_body"),
        (b'{"symbol": "BTC/USDT", "side": "buy"}', 422, "invalid_body"),
        (b'{"symbol": "BTCUSDT", "side": "buy", "extra": 1}', 422, "invalid_body"),
        (b"[]", 422, "invalid_body"),
    ],
)
async def test_bad_order_bodies_get_a_clear_4xx_and_publish_nothing(
    tmp_path: Path, body: bytes, status: int, code: str
) -> None:
    async with running_gateway(tmp_path) as g:
        got, err = await call(g, "POST", "/orders", "trade", data=body)
        assert (got, err["error"]["code"]) == (status, code)
        assert err["error"]["message"]
        assert g.ctx.published == []


async def test_read_models_answer_features_signals_and_portfolio(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        assert (await call(g, "GET", "/features/BTCUSDT", "read"))[0] == 404
        await g.actor.handle(
            Features(
                ts_event=9,
                ts_init=9,
                symbol="BTCUSDT",
                schema_hash="h",
                values=(1.5, 2.5),
                price=100.0,
            )
        )
        status, feats = await call(g, "GET", "/features/BTCUSDT", "read")
        assert status == 200 and feats["source"] == "memory"
        assert list(feats["features"]["features"].values()) == [1.5, 2.5]
        for n in range(5):
            await g.actor.handle(signal("ETHUSDT" if n % 2 else "BTCUSDT", n))
        status, sig = await call(g, "GET", "/signals/recent?limit=2&symbol=BTCUSDT", "read")
        assert [s["ts_event"] for s in sig["signals"]] == [2, 4]
        assert (await call(g, "GET", "/signals/recent?limit=zero", "read"))[0] == 400
        pos = Position(symbol="BTCUSDT", quantity=2.0, avg_price=100.0, last_price=110.0,
                       unrealized_pnl=20.0)  # fmt: skip
        await g.actor.handle(PortfolioSnapshot(
            ts_event=1, ts_init=1, cash=500.0, equity=720.0, realized_pnl=0.0,
            unrealized_pnl=20.0, fees=0.0, positions=(pos,)))  # fmt: skip
        status, summary = await call(g, "GET", "/portfolio/summary", "read")
        assert summary["open_positions"] == 1 and summary["gross_exposure"] == 220.0
        assert summary["snapshot"]["equity"] == 720.0


async def test_predict_without_an_active_model_is_409_and_bad_vectors_422(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        status, err = await call(g, "POST", "/predict", "read", json={"values": [1.0, 2.0]})
        assert (status, err["error"]["code"]) == (409, "no_active_model")
        status, err = await call(g, "POST", "/predict", "read", json={})
        assert (status, err["error"]["code"]) == (422, "invalid_body")
        status, err = await call(g, "POST", "/models/activate", json={"model_id": "ghost"})
        assert (status, err["error"]["code"]) == (404, "model_not_found")
        assert g.ctx.of_type(ActivateModel) == []


async def test_retrain_runs_in_a_job_and_reports_its_result(tmp_path: Path) -> None:
    import threading

    async with running_gateway(tmp_path) as g:
        seen: list[Any] = []

        def trainer(options: dict[str, Any]) -> dict[str, Any]:
            seen.append((options, threading.current_thread().name))
            return {"model_id": "m-1"}

        g.services.trainer = trainer
        status, job = await call(g, "POST", "/retrain", json={"options": {"n_estimators": 5}})
        assert status == 202 and job["status"] in ("queued", "running", "succeeded")

        jobs = g.services.jobs
        await eventually(lambda: jobs.get(job["job_id"]).status == "succeeded")
        status, state = await call(g, "GET", f"/retrain/{job['job_id']}")
        assert status == 200 and state["status"] == "succeeded"
        assert state["result"] == {"model_id": "m-1"}
        assert seen[0][0] == {"n_estimators": 5} and seen[0][1].startswith("gateway-job")
        status, err = await call(g, "POST", "/retrain", json={"options": {"bogus": 1}})
        assert (status, err["error"]["code"]) == (422, "invalid_options")
        assert (await call(g, "GET", "/retrain/nope"))[0] == 404


async def test_probes_metrics_and_unknown_routes(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        assert (await call(g, "GET", "/health", None)) == (200, {"status": "ok"})
        status, ready = await call(g, "GET", "/ready", None)
        assert status == 200 and ready["ready"] is True
        status, text = await call(g, "GET", "/metrics", None)
        assert status == 200 and "gateway_ws_clients 0" in text
        status, err = await call(g, "GET", "/nowhere", None)
        assert (status, err["error"]["code"]) == (404, "not_found")
        status, err = await call(g, "DELETE", "/health", None)
        assert (status, err["error"]["code"]) == (405, "method_not_allowed")


async def test_openapi_document_and_app_routes_agree_both_ways(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        status, doc = await call(g, "GET", "/openapi.json", None)
        assert status == 200 and doc["openapi"].startswith("3.")
        documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
        assert g.actor._runner is not None
        app = g.actor._runner.app
        served = {
            (r.method, r.resource.canonical)
            for r in app.router.routes()
            if r.resource is not None and r.method != "HEAD"
        }
        assert documented == served
        assert '"op":"subscribe"' in doc["info"]["description"].replace(" ", "")
        for path, ops in doc["paths"].items():
            for op in ops.values():
                for response in op["responses"].values():
                    for media in response.get("content", {}).values():
                        ref = media["schema"].get("$ref")
                        if ref:
                            assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"], path


async def test_predict_and_models_use_the_registry_active_model(tmp_path: Path) -> None:
    import numpy as np

    from levibot.ml.registry import ModelRegistry
    from levibot.ml.scorer import Scorer
    from levibot.ml.testing import make_model, synthetic_rows

    registry = ModelRegistry(tmp_path / "models", schema_hash="feedface")
    card, _ = make_model(tmp_path / "m", model_id="m1", schema_hash="feedface", schema_size=6,
                         columns=(4, 1), trees=5, rows=300)  # fmt: skip
    registry.register(tmp_path / "m")
    registry.activate("m1")
    row = [float(v) for v in synthetic_rows(1, 6, seed=9)[0]]
    want = float(Scorer.from_registry(registry).predict(np.asarray(row))[0])
    async with running_gateway(tmp_path) as g:
        status, got = await call(g, "POST", "/predict", "read", json={"values": row})
        assert status == 200 and got["model_id"] == "m1"
        assert got["probability"] == pytest.approx(want, abs=1e-6)
        assert got["confidence"] == pytest.approx(abs(want - 0.5) * 2)
        by_name = {name: row[i] for name, i in zip(card.features, card.feature_indices,
                                                    strict=True)}  # fmt: skip
        status, named = await call(g, "POST", "/predict", "read", json={"features": by_name})
        assert status == 200 and named["probability"] == pytest.approx(want, abs=1e-6)
        status, err = await call(g, "POST", "/predict", "read", json={"values": row[:5]})
        assert (status, err["error"]["code"]) == (422, "wrong_length")
        status, err = await call(g, "POST", "/predict", "read", json={"features": {"x": 1.0}})
        assert (status, err["error"]["code"]) == (422, "missing_features")
        status, models = await call(g, "GET", "/models", "read")
        assert models["active"] == "m1" and [m["model_id"] for m in models["models"]] == ["m1"]
        status, accepted = await call(
            g, "POST", "/models/activate", json={"model_id": "m1", "role": "shadow"}
        )
        assert status == 202
        (cmd,) = g.ctx.of_type(ActivateModel)
        assert (cmd.model_id, cmd.role, cmd.command_id) == ("m1", "shadow", accepted["command_id"])


async def test_get_risk_reports_the_risk_engines_own_status_once_heard(tmp_path: Path) -> None:
    from levibot.messages import RiskStatus

    async with running_gateway(tmp_path) as g:
        assert (await call(g, "GET", "/risk", "read"))[1]["source"] == "commanded"
        await g.actor.handle(
            RiskStatus(
                ts_event=9, ts_init=9, kill_switch=True, trading_state=TradingState.HALTED,
                policy="conservative", equity=9_000.0, peak_equity=10_000.0, drawdown=0.1,
                day_trades=2, day_realized_pnl=-5.0,
            )
        )  # fmt: skip
        status, risk = await call(g, "GET", "/risk", "read")
        assert status == 200 and risk["source"] == "risk"
        assert (risk["kill_switch"], risk["trading_state"], risk["policy"]) == (
            True, "halted", "conservative")  # fmt: skip
        assert (risk["equity"], risk["drawdown"]) == (9_000.0, 0.1)


def test_a_body_nested_thousands_deep_is_malformed_json_not_a_500() -> None:
    from typing import Any

    from sidecars.gateway.errors import ApiError, decode_body

    # 100,000 deep: past msgspec's recursion bound on every Python levibot runs on (3.11's
    # recursion limit of 1,000; 3.12+'s C recursion limit, 10,000 on 3.13, under which 5,000
    # deep decodes fine).
    deep = b'{"options": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ApiError) as err:
        decode_body(deep, dict[str, Any])
    assert (err.value.status, err.value.code) == (400, "malformed_json")
    assert "nested too deeply" in err.value.message


async def test_a_strategy_starts_with_its_own_parameters(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        body = {"params": {"fast": 10, "slow": 30}}
        status, _ = await call(g, "POST", "/strategies/ema_cross/start", json=body)
        assert status == 202
        (cmd,) = g.ctx.of_type(StartStrategy)
        assert cmd.params == {"fast": 10.0, "slow": 30.0}
        status, err = await call(g, "POST", "/strategies/ema_cross/start", json={"params": 1})
        assert (status, err["error"]["code"]) == (422, "invalid_body")


async def test_activating_goes_through_the_promotion_gate_and_moves_the_pointer(
    tmp_path: Path,
) -> None:
    from levibot.features import SCHEMA
    from levibot.ml.registry import ModelRegistry
    from levibot.ml.testing import make_model

    registry = ModelRegistry(tmp_path / "models")
    for mid, passed in (("good", True), ("weak", False)):
        card, _ = make_model(
            tmp_path / mid, model_id=mid, schema_hash=SCHEMA.hash,
            schema_size=len(SCHEMA.names), columns=(1, 2), trees=3, rows=300,
        )  # fmt: skip
        verdict = {"passed": passed, "why": "out-of-sample net return -0.1 does not beat x"}
        msgspec.structs.replace(card, promotion=verdict).save(tmp_path / mid)
        registry.register(tmp_path / mid)
    async with running_gateway(tmp_path) as g:
        status, err = await call(g, "POST", "/models/activate", json={"model_id": "weak"})
        assert (status, err["error"]["code"]) == (409, "not_promoted")
        assert "does not beat" in err["error"]["message"] and registry.active() is None
        assert g.ctx.of_type(ActivateModel) == []
        status, _ = await call(g, "POST", "/models/activate", json={"model_id": "good"})
        assert status == 202 and registry.active().model_id == "good"  # type: ignore[union-attr]
        body = {"model_id": "weak", "force": True}
        assert (await call(g, "POST", "/models/activate", json=body))[0] == 202
        assert registry.active().model_id == "weak"  # type: ignore[union-attr]
        assert [c.model_id for c in g.ctx.of_type(ActivateModel)] == ["good", "weak"]
        # shadow and canary are how a candidate is tried: no gate there
        body = {"model_id": "weak", "role": "canary"}
        assert (await call(g, "POST", "/models/activate", json=body))[0] == 202
