"""The built-in actors: feed, feature, scoring, risk, order, store; one module each.

They are found by name through ``levibot.registry`` (imported only when a node runs them), so
nothing below this package imports it.
"""
