"""Stand-ins for the world's edge (the Telegram Bot API), speaking the real protocol over HTTP."""
