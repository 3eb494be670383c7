"""levibot: a low-latency crypto trading-signal engine."""

__version__ = "0.1.0"
