"""``/metrics`` is valid Prometheus text: exact numbers, escaped labels, one series per label set.

The whole output of a running node (the scoring actor with a model activated twice, and a
plugin whose metrics are the format's edge cases) is read back with ``prometheus_client``'s
parser and, where it is installed, checked by ``promtool``.
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from levibot.features import SCHEMA
from levibot.messages import ActivateModel
from levibot.metrics import Metrics, format_value
from levibot.ml.registry import ModelRegistry
from levibot.ml.testing import make_model
from levibot.runtime.http import CONTENT_TYPE
from levibot.runtime.node import Node
from levibot.settings import load_settings
from levibot.testing import eventually
from tests.odd_metrics import BIG_COUNT, ODD_LABEL, RATIO

pytestmark = pytest.mark.anyio
COLS = (SCHEMA.index("rsi_14"), SCHEMA.index("ret_1"))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1_234_567, "1234567"),
        (1_234_567.0, "1234567"),
        (2.0**53 + 2, "9007199254740994"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e-6, "1e-06"),
        (-2.5, "-2.5"),
        (1e300, "1e+300"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_values_are_written_with_full_precision(value: float, text: str) -> None:
    assert format_value(value) == text
    if not math.isnan(value):
        assert float(text) == value


def test_label_values_and_help_are_escaped_as_the_format_says() -> None:
    m = Metrics()
    m.counter("x_total", 'a \\ back"slash\nhelp', label='q"b\\n\nl').inc(3)
    assert m.render() == (
        '# HELP x_total a \\\\ back"slash\\nhelp\n'
        "# TYPE x_total counter\n"
        'x_total{label="q\\"b\\\\n\\nl"} 3\n'
    )


def test_registering_a_series_again_returns_it_and_a_family_has_one_kind() -> None:
    m = Metrics()
    first = m.counter("c_total", "help", a="1")
    assert m.counter("c_total", "other help", a="1") is first
    assert m.counter("c_total", "help", a="2") is not first
    old = m.gauge("g", "help", fn=lambda: 1.0, a="1")
    new = m.gauge("g", "help", fn=lambda: 2.0, a="1")  # a restarted actor's callback wins
    assert new is old and m.value("g") == 2.0
    h = m.histogram("h_seconds", "help", buckets=(0.1, 1.0))
    assert m.histogram("h_seconds", "help", buckets=(0.1, 1.0)) is h
    with pytest.raises(ValueError, match="other buckets"):
        m.histogram("h_seconds", "help", buckets=(0.5,))
    with pytest.raises(ValueError, match="is a counter"):
        m.gauge("c_total", "help")
    with pytest.raises(ValueError, match="invalid label name"):
        m.counter("d_total", "help", **{"bad-name": "x"})
    with pytest.raises(ValueError, match="invalid metric name"):
        m.counter("0bad", "help")
    text = m.render()
    assert text.count("# TYPE c_total") == 1 and text.count('c_total{a="1"}') == 1
    m.remove("c_total", a="1")
    assert 'c_total{a="1"}' not in m.render()


def test_a_failing_gauge_callback_reads_nan_and_the_scrape_goes_on() -> None:
    m = Metrics()
    m.gauge("broken", "help", fn=lambda: 1 / 0)
    m.counter("fine_total", "help").inc()
    families = {f.name: f for f in text_string_to_metric_families(m.render())}
    assert math.isnan(families["broken"].samples[0].value)
    assert families["fine"].samples[0].value == 1


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("metrics_models")
    reg = ModelRegistry(root / "models", schema_hash=SCHEMA.hash)
    for mid, sign in (("A", 1.0), ("B", -1.0)):
        make_model(
            root / mid, model_id=mid, schema_hash=SCHEMA.hash, schema_size=len(SCHEMA.names),
            columns=COLS, trees=2, rows=200, sign=sign,
        )  # fmt: skip
        reg.register(root / mid)
    reg.activate("A")
    return root / "models"


@pytest.fixture
async def scraped(models: Path) -> str:
    """The whole /metrics of a node whose model went A → B → A, plus the odd metrics."""
    settings = load_settings(
        None,
        environ={},
        overrides={
            "node": {"groups": ["all"], "http_port": 0, "plugins": ["tests.odd_metrics"]},
            "groups": {"all": ["scoring", "odd_metrics"]},
            "scoring": {"registry_dir": str(models), "max_model_age_s": 0.0},
        },
    )
    node = Node(settings)

    def active() -> Any:
        return node.actors["scoring"].health()["model_id"]

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: node.run(handle_signals=False))
        await eventually(lambda: node.ready)
        for i, model_id in enumerate(("B", "A")):
            msg = ActivateModel(ts_event=1, ts_init=1, command_id=f"c{i}", model_id=model_id)
            await node.bus.publish(msg)
            await eventually(lambda m=model_id: active() == m)  # type: ignore[misc]
        url = f"http://127.0.0.1:{node.http.port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.headers["Content-Type"] == CONTENT_TYPE
            text = await resp.text()
        node.stop()
    return text


async def test_the_whole_output_of_a_running_node_parses_and_reads_back_exactly(
    scraped: str,
) -> None:
    families = list(text_string_to_metric_families(scraped))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), "a family's HELP/TYPE appears twice"
    series = Counter((s.name, tuple(sorted(s.labels.items()))) for f in families for s in f.samples)
    assert [key for key, n in series.items() if n > 1] == []
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    assert samples[("test_odd_events_total", (("where", ODD_LABEL),))] == BIG_COUNT
    assert samples[("test_odd_ratio", ())] == RATIO
    assert samples[("test_odd_special", (("kind", "pos"),))] == math.inf
    assert samples[("test_odd_special", (("kind", "neg"),))] == -math.inf
    assert math.isnan(samples[("test_odd_special", (("kind", "nan"),))])
    help_ = next(f.documentation for f in families if f.name == "test_odd_events")
    assert help_ == "Events with a \\ and a\nnewline in the help"
    provider = [s for f in families if f.name == "scoring_provider" for s in f.samples]
    assert [(s.labels["role"], s.labels["model_id"], s.value) for s in provider] == [
        ("active", "A", 1.0)
    ]
    assert samples[("scoring_model_loaded", ())] == 1.0


async def test_promtool_accepts_the_whole_output_of_a_running_node(scraped: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    result = await anyio.run_process(
        [promtool, "check", "metrics"], input=scraped.encode(), check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
