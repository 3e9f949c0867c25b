"""Grafana: pushes dashboards through its HTTP API, with ``grafana-client``.

:class:`GrafanaImporter` checks that the URL is a Grafana (``GET /api/health``), finds or creates
the folder by title, and saves each dashboard with ``POST /api/dashboards/db`` (``overwrite:
true``, ``folderUid``) through ``dashboard.update_dashboard``. A dashboard whose stored model and
folder already equal what would be sent is left alone, so importing twice changes nothing (not
even Grafana's version counter).

Credentials come from the environment or files, never from a command-line value that would land
in shell history: a token (``GRAFANA_TOKEN`` or a token file; a service-account token) or basic
auth (``GRAFANA_USER`` and ``GRAFANA_PASSWORD``, or a user and a password file). They never
appear in errors, logs or reprs; a URL with credentials in it is refused. TLS verification is on
(a CA file may be given for a private CA).

Errors::

    TrimtabError (trimtab.slo.errors)
    └── GrafanaError            a message fit for a person: 401, 403, 404, unreachable, …
        └── CredentialsError    no credentials, or ambiguous ones: a usage problem
"""

from __future__ import annotations

import hashlib
import logging
from base64 import b64encode
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import niquests.exceptions
from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaException, GrafanaTimeoutError
from trimtab.slo.errors import TrimtabError

__all__ = [
    "BasicAuth",
    "CredentialsError",
    "GrafanaError",
    "GrafanaImporter",
    "ImportResult",
    "TokenAuth",
    "credentials",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
_MAX_MESSAGE = 200
_T = TypeVar("_T")


class GrafanaError(TrimtabError):
    """Talking to Grafana failed; the message says why and what to check (never a secret)."""


class CredentialsError(GrafanaError):
    """No usable credentials were given, or two kinds at once."""


@dataclass(frozen=True)
class TokenAuth:
    """A Grafana service-account (or API) token, sent as ``Authorization: Bearer``."""

    token: str = field(repr=False)

    def secrets(self) -> tuple[str, ...]:
        return (self.token,)


@dataclass(frozen=True)
class BasicAuth:
    """A Grafana user and password, sent as ``Authorization: Basic``."""

    user: str
    password: str = field(repr=False)

    def secrets(self) -> tuple[str, ...]:
        encoded = b64encode(f"{self.user}:{self.password}".encode()).decode()
        return (self.password, encoded)


Auth = TokenAuth | BasicAuth


def _read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise GrafanaError(f"cannot read the Grafana {what} file {path}: {reason}") from None
    if not value:
        raise GrafanaError(f"the Grafana {what} file {path} is empty")
    if not (value.isascii() and value.isprintable()):
        raise GrafanaError(f"the Grafana {what} file {path} does not hold a valid {what}")
    return value


def credentials(
    environ: Mapping[str, str],
    *,
    token_file: Path | None = None,
    user: str | None = None,
    password_file: Path | None = None,
) -> Auth:
    """The credentials to use: files and ``--user`` first, then the environment.

    A token file, or a user with a password file (or ``GRAFANA_PASSWORD``), is used as given;
    otherwise ``GRAFANA_TOKEN``, then ``GRAFANA_USER`` with ``GRAFANA_PASSWORD``. Raises
    :class:`CredentialsError` when there are none or when a token and a user are both given,
    :class:`GrafanaError` when a file cannot be read.
    """
    if token_file is not None and (user is not None or password_file is not None):
        raise CredentialsError("give a token file or a user and password file, not both")
    if token_file is not None:
        return TokenAuth(_read_secret(token_file, "token"))
    if password_file is not None and user is None and not environ.get("GRAFANA_USER"):
        raise CredentialsError("a password file needs --user (or GRAFANA_USER)")
    if user is not None or password_file is not None:
        name = user or environ.get("GRAFANA_USER", "")
        if password_file is not None:
            return BasicAuth(name, _read_secret(password_file, "password"))
        password = environ.get("GRAFANA_PASSWORD", "").strip()
        if not password:
            raise CredentialsError(
                f"no password for {name}: give --password-file or set GRAFANA_PASSWORD"
            )
        return BasicAuth(name, password)
    token = environ.get("GRAFANA_TOKEN", "").strip()
    if token:
        return TokenAuth(token)
    env_user, env_password = environ.get("GRAFANA_USER", ""), environ.get("GRAFANA_PASSWORD", "")
    if env_user and env_password:
        return BasicAuth(env_user, env_password.strip())
    raise CredentialsError(
        "no Grafana credentials: set GRAFANA_TOKEN or give --token-file, or set GRAFANA_USER "
        "and GRAFANA_PASSWORD, or give --user with --password-file"
    )


@dataclass(frozen=True)
class ImportResult:
    """What happened to one dashboard."""

    uid: str
    title: str
    status: Literal["created", "updated", "unchanged"]
    url: str  # the dashboard's address in Grafana
    folder_uid: str

    def to_json(self) -> dict[str, str]:
        return {
            "uid": self.uid,
            "title": self.title,
            "status": self.status,
            "url": self.url,
            "folderUid": self.folder_uid,
        }


def _comparable(model: Mapping[str, Any]) -> dict[str, Any]:
    """A dashboard model without what Grafana assigns on save."""
    return {k: v for k, v in model.items() if k not in ("id", "version")}


def folder_uid_for(title: str) -> str:
    """The uid trimtab gives a folder it creates: stable, so a retried create is recognised."""
    return "trimtab-" + hashlib.sha256(title.encode()).hexdigest()[:16]


class GrafanaImporter:
    """Imports dashboards into the Grafana at ``url`` (its root, with any sub-path).

    Raises :class:`GrafanaError` at construction for a URL it cannot use, and from every call
    for a failure, with a message naming the URL (never a secret) and what to check.
    """

    def __init__(
        self,
        url: str,
        auth: Auth,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ca_file: Path | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise GrafanaError(f"not an http(s) URL: {url!r}")
        if parts.username or parts.password:
            raise GrafanaError("put Grafana credentials in GRAFANA_TOKEN or a file, not in the URL")
        host = parts.hostname
        self.where = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._secrets = auth.secrets()
        prefix = parts.path.strip("/")
        secret: str | tuple[str, str] = (
            auth.token if isinstance(auth, TokenAuth) else (auth.user, auth.password)
        )
        self._api = GrafanaApi(
            auth=secret,
            host=f"[{host}]" if ":" in host else host,
            port=parts.port,
            url_path_prefix=f"{prefix}/" if prefix else "",
            protocol=parts.scheme,
            verify=str(ca_file) if ca_file is not None else True,
            timeout=timeout,
            user_agent="trimtab",
        )
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"GrafanaImporter({self.where!r})"

    # ------------------------------------------------------------------------------ errors

    def _redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "<redacted>")
        return text

    def _call(self, doing: str, call: Callable[[], _T]) -> _T:
        """Run one API call; any failure becomes a :class:`GrafanaError` about ``doing``."""
        try:
            return call()
        except GrafanaException as exc:
            raise GrafanaError(self._http_message(doing, exc)) from None
        except niquests.exceptions.SSLError:
            raise GrafanaError(
                f"cannot reach Grafana at {self.where} ({doing}): TLS verification failed; "
                "give --ca-file if it uses a private CA"
            ) from None
        except niquests.exceptions.RequestException as exc:
            raise GrafanaError(
                f"cannot reach Grafana at {self.where} ({doing}): {_network_reason(exc)}"
            ) from None

    def _http_message(self, doing: str, exc: GrafanaException) -> str:
        status = int(exc.status_code or 0)
        if status == 0:  # grafana-client's wrapping of timeouts and transport errors
            timed_out = isinstance(exc, GrafanaTimeoutError)
            reason = (
                f"no answer within {self._timeout:g}s" if timed_out else "the connection failed"
            )
            return f"cannot reach Grafana at {self.where} ({doing}): {reason}"
        said = ""
        if isinstance(exc.response, dict) and isinstance(exc.response.get("message"), str):
            said = ": Grafana says " + repr(self._redact(exc.response["message"])[:_MAX_MESSAGE])
        if status == 401:
            return (
                f"Grafana at {self.where} refused the credentials (401 Unauthorized) while "
                f"{doing}: check the token (GRAFANA_TOKEN or --token-file) or the user and "
                "password, and that they belong to this Grafana"
            )
        if status == 403:
            return (
                f"Grafana at {self.where} denied {doing} (403 Forbidden){said}: the token's "
                "service account or the user needs the Editor role (dashboards:write, "
                "folders:create) in this organisation"
            )
        if status == 404:
            return (
                f"Grafana at {self.where} has no such API (404 Not Found) while {doing}: check "
                "that --url is Grafana's root address, including any sub-path it is served under"
            )
        return f"Grafana at {self.where} answered {status} while {doing}{said}"

    # ---------------------------------------------------------------------------- the API

    def check(self) -> str:
        """Confirm the URL is a reachable Grafana; its version (``""`` when not reported)."""
        health = self._call("checking /api/health", lambda: self._api.client.GET("/health"))
        if not isinstance(health, dict) or "database" not in health:
            raise GrafanaError(f"{self.where} answered /api/health but is not Grafana: check --url")
        return str(health.get("version", ""))

    def folder(self, title: str | None) -> str:
        """The uid of the top-level folder titled ``title`` (created if missing); ``""`` (the
        General folder) for ``None``."""
        if title is None:
            return ""
        found = self._find_folder(title)
        if found is not None:
            return found
        uid = folder_uid_for(title)
        try:
            created = self._call(
                f"creating folder {title!r}",
                lambda: self._api.folder.create_folder(title, uid=uid),  # type: ignore[no-untyped-call]
            )
        except GrafanaError:
            again = self._find_folder(title)  # created meanwhile by someone else
            if again is None:
                raise
            return again
        log.info("created Grafana folder %r (%s)", title, uid)
        return str(created.get("uid", uid)) if isinstance(created, dict) else uid

    def _find_folder(self, title: str) -> str | None:
        folders = self._call(
            "listing folders",
            lambda: self._api.client.GET("/folders", params={"limit": 1000}),
        )
        matches = sorted(
            str(f["uid"])
            for f in (folders if isinstance(folders, list) else [])
            if isinstance(f, dict) and f.get("title") == title and "uid" in f
        )
        return matches[0] if matches else None

    def _stored(self, uid: str) -> dict[str, Any] | None:
        """The dashboard stored under ``uid`` with its meta, or ``None`` if there is none."""

        def get() -> Any:
            try:
                return self._api.dashboard.get_dashboard(uid)  # type: ignore[no-untyped-call]
            except GrafanaException as exc:
                if exc.status_code == 404:
                    return None
                raise

        found = self._call(f"reading dashboard {uid!r}", get)
        return found if isinstance(found, dict) else None

    def import_dashboard(self, model: Mapping[str, Any], folder_uid: str = "") -> ImportResult:
        """Save ``model`` (which must carry a ``uid``) into the folder; unchanged ones are left
        as they are."""
        uid, title = str(model["uid"]), str(model.get("title", ""))
        stored = self._stored(uid)
        if stored is not None:
            meta = stored.get("meta", {})
            same_folder = str(meta.get("folderUid", "") or "") == folder_uid
            if same_folder and _comparable(stored.get("dashboard", {})) == _comparable(model):
                url = str(meta.get("url", f"/d/{uid}"))
                return ImportResult(uid, title, "unchanged", self._absolute(url), folder_uid)
        payload = {
            "dashboard": {**_comparable(model), "id": None},
            "folderUid": folder_uid,
            "overwrite": True,
            "message": "imported by trimtab",
        }
        saved = self._call(
            f"saving dashboard {uid!r}",
            lambda: self._api.dashboard.update_dashboard(payload),  # type: ignore[no-untyped-call]
        )
        url = str(saved.get("url", f"/d/{uid}")) if isinstance(saved, dict) else f"/d/{uid}"
        status: Literal["created", "updated"] = "created" if stored is None else "updated"
        log.info("%s Grafana dashboard %s", status, uid)
        return ImportResult(uid, title, status, self._absolute(url), folder_uid)

    def import_all(
        self, models: Iterable[Mapping[str, Any]], folder: str | None = None
    ) -> list[ImportResult]:
        """Check Grafana, find or create ``folder``, and import every model into it."""
        self.check()
        folder_uid = self.folder(folder)
        return [self.import_dashboard(model, folder_uid) for model in models]

    def _absolute(self, url: str) -> str:
        if url.startswith(("http://", "https://")):
            return url
        parts = urlsplit(self.where)
        prefix = parts.path.rstrip("/")
        path = url if url.startswith(prefix + "/") else prefix + url
        return f"{parts.scheme}://{parts.netloc}{path}"


def _network_reason(exc: niquests.exceptions.RequestException) -> str:
    if isinstance(exc, niquests.exceptions.Timeout):
        return "timed out"
    if isinstance(exc, niquests.exceptions.ConnectionError):
        return "connection refused or host unknown"
    return type(exc).__name__
