"""Sub-commands of the ``levibot`` CLI: each module here has ``register(subparsers)``."""
