"""Who may use a `toporeg serve` page: the host/token policy, checked at start-up and on every HTTP request.

Why a token: trame has no users or sessions, and whoever reaches the port can load the server's data, run jobs and
download results. So the server binds to loopback unless told otherwise, and a non-loopback bind needs an access
token (`--token` or $TOPOREG_SERVE_TOKEN). Once a token is configured it is required on every request, whatever
the host: the page URL carries it once (`?token=...`), the answer sets an HttpOnly, SameSite=Strict cookie holding
a keyed hash of it (not the token), and the page's own requests (scripts, the websocket, downloads) carry the
cookie. Scripts may send `Authorization: Bearer <token>` instead. The check is an aiohttp middleware, so it runs
before any route: the trame page, its state and the websocket upgrade are all refused without the token.

Pure Python (aiohttp only inside `middleware`), so the policy is unit-testable without slicer-core.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Callable, Mapping

TOKEN_ENV = "TOPOREG_SERVE_TOKEN"
MIN_TOKEN_LENGTH = 16
COOKIE_NAME = "toporeg_session"
TOKEN_HINT = 'python -c "import secrets; print(secrets.token_urlsafe(24))"'


class AccessError(ValueError):
    """The server must not start with these settings (one line for the user)."""


def is_loopback(host: str, resolve: Callable = socket.getaddrinfo) -> bool:
    """True when every address `host` stands for is a loopback address (127.0.0.0/8, ::1).

    An empty host, 0.0.0.0 and :: mean every interface: not loopback. A name is resolved and must only give loopback
    addresses (so 'localhost' is fine, a name that resolves to a network address is not); an unknown name is not."""
    text = (host or "").strip().strip("[]")
    if not text:
        return False
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in resolve(text, None)}
    except (OSError, UnicodeError):
        return False
    try:
        return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
    except ValueError:
        return False


def configured_token(cli_token: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The access token: `--token` first, else $TOPOREG_SERVE_TOKEN; None when neither is set (or both are blank)."""
    environ = os.environ if environ is None else environ
    for value in (cli_token, environ.get(TOKEN_ENV)):
        if value is not None and value.strip():
            return value.strip()
    return None


def check_bind(host: str, token: str | None, resolve: Callable = socket.getaddrinfo) -> None:
    """Refuse to start when the settings would expose the server: a non-loopback host without a token, or a token
    too short to resist guessing. Raises `AccessError`."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise AccessError(f"the access token must be at least {MIN_TOKEN_LENGTH} characters long; make one with: "
                          f"{TOKEN_HINT}")
    if token is None and not is_loopback(host, resolve):
        raise AccessError(f"refusing to serve on '{host}', which is not a loopback address, without an access token: "
                          f"give --token TOKEN or set ${TOKEN_ENV} (make one with: {TOKEN_HINT}), or serve on "
                          "127.0.0.1 and use an SSH tunnel")


@dataclass(frozen=True)
class AccessPolicy:
    """The request check. `token` None: every request is allowed (loopback without a configured token)."""

    token: str | None = None

    @property
    def required(self) -> bool:
        return self.token is not None

    def cookie_value(self) -> str:
        """What the session cookie holds: a keyed hash of the token, so the cookie never reveals the token."""
        if self.token is None:
            return ""
        return hmac.new(self.token.encode("utf-8"), b"toporeg-serve-session", hashlib.sha256).hexdigest()

    def _matches(self, given: str | None, expected: str) -> bool:
        return given is not None and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))

    def check(self, query_token: str | None = None, cookie: str | None = None,
              authorization: str | None = None) -> str | None:
        """How a request proves it may pass: 'open', 'query', 'cookie' or 'header'; None when it may not."""
        if self.token is None:
            return "open"
        if self._matches(query_token, self.token):
            return "query"
        if self._matches(cookie, self.cookie_value()):
            return "cookie"
        if authorization and authorization.lower().startswith("bearer "):
            if self._matches(authorization[7:].strip(), self.token):
                return "header"
        return None


REFUSED_TEXT = ("TopoReg: this server requires its access token. Open the page as http://HOST:PORT/?token=TOKEN "
                "(the token is the one given to `toporeg serve --token` or in $TOPOREG_SERVE_TOKEN).\n")


def middleware(policy: AccessPolicy):
    """An aiohttp middleware enforcing `policy` on every request, the websocket upgrade included (refused with 401
    before the handshake). A request that passed with `?token=` gets the session cookie for the page's next ones."""
    from aiohttp import web

    @web.middleware
    async def toporeg_access(request, handler):
        way = policy.check(request.query.get("token"), request.cookies.get(COOKIE_NAME),
                           request.headers.get("Authorization"))
        if way is None:
            return web.Response(status=401, text=REFUSED_TEXT, headers={"Cache-Control": "no-store"})
        response = await handler(request)
        if way == "query" and isinstance(response, web.StreamResponse) and not response.prepared:
            response.set_cookie(COOKIE_NAME, policy.cookie_value(), httponly=True, samesite="Strict", path="/")
        if policy.required and not response.prepared:
            response.headers.setdefault("Referrer-Policy", "no-referrer")
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return toporeg_access
