"""A local Telegram Bot API stand-in: real HTTP, real protocol, every call recorded.

It serves ``POST /bot<token>/<method>`` (JSON, urlencoded or multipart bodies, as aiogram and
other clients send them) and answers ``{"ok": true, "result": ...}`` with result objects shaped
like Telegram's, so an unmodified aiogram ``Bot`` and ``Dispatcher`` run against it. A test
queues updates (``send_text``, also in a forum topic or as an anonymous group admin; any raw
JSON value with ``push_raw``), reads what the bot did (``calls``, ``sent_messages``) and injects
failures: 429 flood control with ``retry_after`` (``fail_next``), any raw HTTP answer such as a
proxy's HTML 502 (``answer_next``), a chat that blocked the bot, a deleted forum topic.

``sendMessage`` enforces Telegram's limits with Telegram's answers: a text that is blank once
stripped is ``400 Bad Request: message text is empty``, one over 4,096 characters after
entities parsing is ``400 Bad Request: message is too long``. Characters are counted in UTF-16
code units (how Telegram measures text; an emoji outside the BMP counts twice), the stricter of
the two ways a client might count, so what passes here passes Telegram. With
``parse_mode=HTML`` the tags are removed and entities decoded before counting; other parse modes
are refused, since the stand-in does not model them.

    async with FakeBotAPI(token) as api:
        api.send_text(user_id=1, text="/start")
        ...TelegramConfig(api_base=api.base_url, ...)
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_INT_PARAMS = {
    "chat_id",
    "offset",
    "limit",
    "timeout",
    "message_id",
    "user_id",
    "message_thread_id",
}

#: Telegram's limit on a message's text, in characters after entities parsing.
TEXT_LIMIT = 4096

#: The user every anonymous group admin's messages come from.
GROUP_ANONYMOUS_BOT = {
    "id": 1087968824,
    "is_bot": True,
    "first_name": "Group",
    "username": "GroupAnonymousBot",
}

_TAG = re.compile(r"<[^>]*>")


def utf16_len(text: str) -> int:
    """Return the length of ``text`` in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Call:
    """One Bot API request as the stand-in received it."""

    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    token_ok: bool = True  # False: the stand-in answered 401 Unauthorized
    status: int = 0  # the HTTP status the stand-in answered (200: accepted)
    error: str = ""  # the error description it answered with, if any


@dataclass(frozen=True)
class RawAnswer:
    """A scripted HTTP answer, sent as is instead of the Bot API's."""

    status: int
    body: str
    content_type: str = "application/json"


class FakeBotAPI:
    """An aiohttp server on 127.0.0.1:<free port> speaking the Bot API."""

    def __init__(
        self, token: str, *, bot_id: int = 777000111, username: str = "levibot_test_bot"
    ) -> None:
        self.token = token
        self.bot_user = {
            "id": bot_id,
            "is_bot": True,
            "first_name": "levibot",
            "username": username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.calls: list[Call] = []
        # (sequence id, what getUpdates serves): the id is the update's update_id, or for a raw
        # value the id Telegram's queue would give it (an offset above it confirms it).
        self._updates: list[tuple[int, Any]] = []
        self._next_update_id = 100
        self._next_message_id = 1
        self._new_update = asyncio.Event()
        self._failures: dict[str, deque[int]] = {}
        self._raw_answers: dict[str, deque[RawAnswer]] = {}
        self.blocked_chats: set[int] = set()
        self.deleted_topics: set[tuple[int, int]] = set()  # (chat_id, message_thread_id)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, port: int = 0) -> str:
        """Start serving on ``port`` (0: a free one); return the base URL for ``from_base``."""
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)
        # Cut pending long polls at once on stop instead of waiting out their timeout.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving (pending long polls are cut off)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBotAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what a test does --------------------------------------------------------------------

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue a raw update (its ``update_id`` is assigned here); return the id.

        Nothing is checked: an update that no client can parse is served as given.
        """
        update_id = self._next_update_id
        self._next_update_id += 1
        self._updates.append((update_id, {**update, "update_id": update_id}))
        self._new_update.set()
        return update_id

    def push_raw(self, value: Any) -> int:
        """Queue ``value`` exactly as given (no ``update_id`` added); return its place in the queue.

        For what Telegram never sends but a client must survive: a number, an update without
        an id. An offset above the returned id confirms it, like any update.
        """
        seq = self._next_update_id
        self._next_update_id += 1
        self._updates.append((seq, value))
        self._new_update.set()
        return seq

    def send_text(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        first_name: str = "Trader",
        thread_id: int | None = None,
    ) -> int:
        """Queue a text message from ``user_id`` (in their private chat unless ``chat_id``).

        A negative ``chat_id`` is a group; with ``thread_id`` it is a forum supergroup and the
        message is posted in that topic.
        """
        sender = {"id": user_id, "is_bot": False, "first_name": first_name}
        return self._push_text(sender, text, user_id if chat_id is None else chat_id, thread_id)

    def send_anonymous(self, chat_id: int, text: str, *, thread_id: int | None = None) -> int:
        """Queue ``text`` posted by an anonymous admin of group ``chat_id`` (on its behalf)."""
        return self._push_text(
            dict(GROUP_ANONYMOUS_BOT), text, chat_id, thread_id, sender_chat=True
        )

    def _push_text(
        self,
        sender: dict[str, Any],
        text: str,
        chat_id: int,
        thread_id: int | None,
        *,
        sender_chat: bool = False,
    ) -> int:
        chat = self._chat(chat_id, forum=thread_id is not None)
        message: dict[str, Any] = {
            "message_id": self._message_id(),
            "date": int(time.time()),
            "chat": chat,
            "from": sender,
            "text": text,
        }
        if sender_chat:
            message["sender_chat"] = {k: v for k, v in chat.items() if k != "is_forum"}
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return self.push_update({"message": message})

    @staticmethod
    def _chat(chat_id: int, *, forum: bool = False) -> dict[str, Any]:
        if chat_id >= 0:
            return {"id": chat_id, "type": "private", "first_name": "Trader"}
        if forum:
            return {"id": chat_id, "type": "supergroup", "title": "traders", "is_forum": True}
        return {"id": chat_id, "type": "group", "title": "traders"}

    def fail_next(self, method: str, count: int = 1, *, retry_after: int = 1) -> None:
        """Answer the next ``count`` calls of ``method`` with a 429 asking to retry later."""
        self._failures.setdefault(method.lower(), deque()).extend([retry_after] * count)

    def answer_next(
        self, method: str, status: int, body: str, *, content_type: str = "application/json"
    ) -> None:
        """Answer the next call of ``method`` with ``body`` and HTTP ``status``, verbatim."""
        answer = RawAnswer(status, body, content_type)
        self._raw_answers.setdefault(method.lower(), deque()).append(answer)

    def calls_of(self, method: str) -> list[Call]:
        """Return the recorded calls of ``method`` (case-insensitive)."""
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def sent_messages(self, chat_id: int | None = None) -> list[Call]:
        """Return the successful-or-not ``sendMessage`` calls (to ``chat_id`` if given)."""
        return [
            c
            for c in self.calls_of("sendMessage")
            if chat_id is None or c.params.get("chat_id") == chat_id
        ]

    def texts(self, chat_id: int) -> list[str]:
        """Return the texts the bot sent to ``chat_id``, oldest first (429-refused ones too)."""
        return [str(c.params.get("text", "")) for c in self.sent_messages(chat_id)]

    # -- the protocol ------------------------------------------------------------------------

    def _message_id(self) -> int:
        self._next_message_id += 1
        return self._next_message_id

    @staticmethod
    def _error(status: int, description: str, **parameters: Any) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=status)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
            return params
        if request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if not isinstance(value, str):
                    params[key] = f"<file {getattr(value, 'filename', '')}>"
                elif key in _INT_PARAMS and value.lstrip("-").isdigit():
                    params[key] = int(value)
                elif value[:1] in "{[":
                    params[key] = json.loads(value)
                else:
                    params[key] = value
        return params

    async def _dispatch(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params = await self._params(request)
        except ValueError:
            return self._error(400, "Bad Request: can't parse request body")
        call = Call(method, params)
        self.calls.append(call)
        response = await self._answer(request, call)
        call.status = response.status
        if response.status != 200:
            call.error = self._description(response.text or "")
        return response

    @staticmethod
    def _description(body: str) -> str:
        """Return the ``description`` of an error body (a scripted one may be anything)."""
        try:
            parsed = json.loads(body)
        except ValueError:
            return body[:80]
        return str(parsed.get("description", "")) if isinstance(parsed, dict) else body[:80]

    async def _answer(self, request: web.Request, call: Call) -> web.Response:
        if request.match_info["token"] != self.token:
            call.token_ok = False
            return self._error(401, "Unauthorized")
        raw = self._raw_answers.get(call.method.lower())
        if raw:
            answer = raw.popleft()
            return web.Response(
                status=answer.status, text=answer.body, content_type=answer.content_type
            )
        pending = self._failures.get(call.method.lower())
        if pending:
            retry_after = pending.popleft()
            return self._error(
                429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
            )
        handler = getattr(self, f"_m_{call.method.lower()}", None)
        if handler is None:
            return self._error(404, "Not Found: method not found")
        result = await handler(call.params)
        if isinstance(result, web.Response):
            return result
        return web.json_response({"ok": True, "result": result})

    def refused(self) -> list[Call]:
        """Return every call the stand-in answered with an error other than a scripted 429."""
        return [c for c in self.calls if c.status not in (0, 200, 429)]

    async def _m_getme(self, params: dict[str, Any]) -> Any:
        return self.bot_user

    async def _m_getupdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        if offset:  # every update below the offset is confirmed and forgotten
            self._updates = [(seq, u) for seq, u in self._updates if seq >= offset]
        deadline = time.monotonic() + timeout
        while not self._updates:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), remaining)
            except TimeoutError:
                return []
        return [u for _, u in self._updates[:limit]]

    async def _m_sendmessage(self, params: dict[str, Any]) -> Any:
        chat_id, text = params.get("chat_id"), params.get("text")
        thread_id = params.get("message_thread_id")
        if chat_id is None:
            return self._error(400, "Bad Request: chat_id is empty")
        shown = self._visible_text(str(text or ""), params.get("parse_mode"))
        if isinstance(shown, web.Response):
            return shown
        if not shown.strip():
            return self._error(400, "Bad Request: message text is empty")
        if utf16_len(shown.strip()) > TEXT_LIMIT:
            return self._error(400, "Bad Request: message is too long")
        if chat_id in self.blocked_chats:
            return self._error(403, "Forbidden: bot was blocked by the user")
        if (chat_id, thread_id) in self.deleted_topics:
            return self._error(400, "Bad Request: message thread not found")
        chat = self._chat(chat_id, forum=thread_id is not None) if isinstance(chat_id, int) else {}
        message: dict[str, Any] = {
            "message_id": self._message_id(),
            "date": int(time.time()),
            "chat": chat,
            "from": self.bot_user,
            "text": text,
        }
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if "reply_markup" in params:
            message["reply_markup"] = params["reply_markup"]
        return message

    def _visible_text(self, text: str, parse_mode: Any) -> str | web.Response:
        """Return ``text`` after entities parsing, as Telegram counts it."""
        if parse_mode in (None, ""):
            return text
        if str(parse_mode).upper() == "HTML":
            return html.unescape(_TAG.sub("", text))
        return self._error(400, f"Bad Request: the stand-in does not model parse_mode {parse_mode}")

    async def _m_answercallbackquery(self, params: dict[str, Any]) -> Any:
        return True

    async def _m_setmycommands(self, params: dict[str, Any]) -> Any:
        return True

    async def _m_deletewebhook(self, params: dict[str, Any]) -> Any:
        return True

    async def _m_getwebhookinfo(self, params: dict[str, Any]) -> Any:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
