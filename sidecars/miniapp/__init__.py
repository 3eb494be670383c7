"""The Telegram Mini App: the ``/app`` page, ``initData`` verification and session tokens."""

from sidecars.miniapp.initdata import InitDataError, WebAppInit, verify_init_data
from sidecars.miniapp.routes import setup_routes
from sidecars.miniapp.session import issue_session_token, verify_session_token

__all__ = [
    "InitDataError",
    "WebAppInit",
    "issue_session_token",
    "setup_routes",
    "verify_init_data",
    "verify_session_token",
]
