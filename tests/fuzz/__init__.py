"""Fuzz tests (hypothesis) of every decoder of outside input.

The bus codec, the NATS ingress decode, Binance frames, Mini App ``initData``, the
configuration (TOML and ``LEVIBOT__`` overlays) and our Telegram handlers. In CI each test runs
a fixed, derandomized number of examples (``support.budget``); for a longer local hunt:

    LEVIBOT_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest -q tests/fuzz

Every input a fuzzer found is pinned by a ``test_regression_*`` test next to it.
"""
