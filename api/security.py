"""Secure by default: two keys, posts a web page cannot forge, a Host allow-list, and no open server by accident.

- **Two keys** (``X-API-Key``, or ``Authorization: Bearer``), compared in constant time and never logged:
  the *ingest* key opens ``/v1/rank`` and ``/v1/feedback`` (what a shop's front end or backend sends), the
  *admin* key the catalog, policy, experiment and erasure endpoints, and the ingest ones too. Settings:
  ``RANKER_INGEST_KEY`` and ``RANKER_ADMIN_KEY`` (or ``*_FILE``); ``RANKER_API_KEY`` (the one key of
  earlier releases) is both where they are unset. An endpoint whose key is not configured is open.
- **Forged posts**: a web page may make a browser send a POST anywhere, but only with a form or plain-text
  body and without custom headers (anything else needs a CORS preflight this server never grants). So every
  state-changing POST needs ``Content-Type: application/json`` or the key header, bodyless ones
  (promote, rollback, stop) included: 415 otherwise.
- **Host allow-list** (``RANKER_ALLOWED_HOSTS``, Flask's ``TRUSTED_HOSTS``): a page on another name that
  resolves to this server (DNS rebinding) is answered 400. Unset: the loopback names on a server without
  keys, any name on a server with both keys (a page cannot learn them).
- **No open server by accident** (:func:`refuse_open_bind`): an address beyond loopback without both keys is
  refused at start, unless ``RANKER_INSECURE`` / ``--insecure`` says so (with a warning).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
from collections.abc import Callable
from typing import Any, Literal

from flask import Flask, current_app, request

from api.errors import ApiError

log = logging.getLogger(__name__)

Role = Literal["ingest", "admin"]
KEY_HEADERS = ("X-API-Key", "Authorization")
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]", "::1"]
# OpenAPI: the scheme named by keyed operations
SECURITY_SCHEMES = {"api_key": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
SECURED = [{"api_key": []}]


class InsecureBind(RuntimeError):
    """A server would be reachable beyond loopback without keys."""


def configure(app: Flask, settings: Any) -> None:
    """Resolve the keys and the Host allow-list into ``app.config`` (``INGEST_KEY``, ``ADMIN_KEY``, ``TRUSTED_HOSTS``)."""
    admin = app.config.get("ADMIN_KEY") or app.config.get("API_KEY")
    ingest = app.config.get("INGEST_KEY") or app.config.get("API_KEY")
    app.config["ADMIN_KEY"], app.config["INGEST_KEY"] = admin or None, ingest or None
    hosts = app.config.get("ALLOWED_HOSTS")
    if hosts:
        names = [name.strip() for name in str(hosts).split(",") if name.strip()]
        app.config["TRUSTED_HOSTS"] = None if "*" in names else names
    elif "TRUSTED_HOSTS" not in app.config or app.config["TRUSTED_HOSTS"] is None:
        app.config["TRUSTED_HOSTS"] = None if (admin and ingest) else LOOPBACK_HOSTS


def keys_of(config: Any) -> tuple[str | None, str | None]:
    """(ingest key, admin key) as configured (settings or a Flask config)."""
    get = config.get if isinstance(config, dict) else lambda name: getattr(config, name.lower(), None)
    api = get("API_KEY")
    return (get("INGEST_KEY") or api or None), (get("ADMIN_KEY") or api or None)


def given_key() -> str | None:
    return request.headers.get("X-API-Key") or request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or None


def requires(role: Role) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The view needs the ``role``'s key (the admin key opens ingest endpoints too) when that key is configured."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            check_key(role)
            return view(*args, **kwargs)

        wrapper.key_role = role  # type: ignore[attr-defined]  (the forged-post check reads it)
        return wrapper

    return decorate


def key_configured(role: Role) -> bool:
    return bool(current_app.config.get("INGEST_KEY" if role == "ingest" else "ADMIN_KEY"))


def check_key(role: Role) -> None:
    config = current_app.config
    admin, ingest = config.get("ADMIN_KEY"), config.get("INGEST_KEY")
    accepted = [admin] if role == "admin" else [ingest, admin]
    if not (accepted[0]):
        return  # this endpoint's key is not configured: open
    given = given_key()
    if not given:
        raise ApiError(401, "unauthorized", f"X-API-Key: this endpoint needs the {role} key (header X-API-Key)", "X-API-Key")
    if not any(expected and hmac.compare_digest(given.encode(), str(expected).encode()) for expected in accepted):
        raise ApiError(401, "unauthorized", f"X-API-Key: the key given is not the {role} key", "X-API-Key")


def check_key_first(app: Flask) -> None:
    """The matched view's key check, before its body is validated (the view checks again; it costs a comparison)."""
    role = getattr(app.view_functions.get(request.endpoint or ""), "key_role", None)
    if role is not None:
        check_key(role)


def check_forged_post(app: Flask) -> None:
    """415 for a POST that a web page could forge: neither JSON nor the key header (see the module docstring). A POST to
    an endpoint whose key is configured is left to the key check (401 without it)."""
    if request.method != "POST" or request.is_json or any(request.headers.get(name) for name in KEY_HEADERS):
        return
    view = app.view_functions.get(request.endpoint or "")
    role = getattr(view, "key_role", None)
    if role is not None and key_configured(role):
        return
    raise ApiError(
        415,
        "unsupported_media_type",
        f"body: a POST must send Content-Type: application/json (an empty body is fine where none is needed) or X-API-Key (got {request.mimetype or 'none'!r})",
        "body",
    )


def loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, as given to --host or RANKER_BIND) is reachable only from this machine."""
    name = host.strip().strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def refuse_open_bind(host: str, settings: Any, *, insecure: bool = False) -> None:
    """Raise :class:`InsecureBind` when ``host`` is beyond loopback and the server lacks a key, unless ``insecure``
    (then warn). Unix sockets (``unix:``) are local."""
    if host.startswith("unix:") or loopback(host):
        return
    ingest, admin = keys_of(settings)
    if ingest and admin:
        return
    missing = " and ".join(name for name, value in (("RANKER_INGEST_KEY", ingest), ("RANKER_ADMIN_KEY", admin)) if not value)
    if insecure or getattr(settings, "insecure", False):
        log.warning("serving on %s without %s: anyone who can reach it can use what that key would protect (--insecure)", host, missing)
        return
    raise InsecureBind(
        f"refusing to serve on {host} without {missing}: anyone who can reach it could change the catalog and the policies. "
        "Set RANKER_INGEST_KEY and RANKER_ADMIN_KEY (or RANKER_INGEST_KEY_FILE and RANKER_ADMIN_KEY_FILE naming files that hold them; "
        "RANKER_API_KEY sets both), serve on 127.0.0.1, or pass --insecure (RANKER_INSECURE=1) to serve openly anyway"
    )
