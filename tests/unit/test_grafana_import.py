"""Dashboard import through grafana-client, against a loopback HTTP server that plays Grafana's
API and records every request: paths, payloads, auth headers, folders, idempotent re-import,
and a clear message (without secrets) for each failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from servers import LoopbackServer, Recorded, Reply, free_port
from trimtab.adapters.grafana import (
    BasicAuth,
    CredentialsError,
    GrafanaError,
    GrafanaImporter,
    TokenAuth,
    credentials,
    folder_uid_for,
)
from trimtab.dashboards.generate import generic

TOKEN = "glsa_s3cr3t-token-value_0123456789"
PASSWORD = "correct horse battery staple"
TRIMTAB = str(Path(sys.executable).parent / "trimtab")
MODELS = [d.model for d in generic()]
Start = Callable[..., LoopbackServer]


def _json(body: object, status: int = 200) -> Reply:
    return Reply(status=status, body=json.dumps(body).encode())


@dataclass
class FakeGrafana:
    """Just enough of Grafana's HTTP API: health, folders, dashboards, and auth."""

    accept: str = f"Bearer {TOKEN}"
    prefix: str = ""
    folders: list[dict[str, str]] = field(default_factory=list)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __call__(self, request: Recorded) -> Reply:
        path, _, query = request.path.partition("?")
        if not path.startswith(self.prefix + "/api/"):
            return _json({"message": "Not found"}, 404)
        path = path.removeprefix(self.prefix)
        if path == "/api/health":
            return _json({"commit": "abc", "database": "ok", "version": "11.6.0"})
        if request.headers.get("Authorization") != self.accept:
            return _json({"message": "invalid API key"}, 401)
        if (request.method, path) == ("GET", "/api/folders"):
            assert query == "limit=1000"
            return _json(self.folders)
        if (request.method, path) == ("POST", "/api/folders"):
            folder = json.loads(request.body)
            self.folders.append({"uid": folder["uid"], "title": folder["title"]})
            return _json({"id": len(self.folders), **self.folders[-1]})
        if request.method == "GET" and path.startswith("/api/dashboards/uid/"):
            stored = self.dashboards.get(path.rsplit("/", 1)[1])
            return _json(stored) if stored else _json({"message": "Dashboard not found"}, 404)
        if (request.method, path) == ("POST", "/api/dashboards/db"):
            return self._save(json.loads(request.body))
        return _json({"message": "Not found"}, 404)

    def _save(self, payload: dict[str, Any]) -> Reply:
        dashboard = payload["dashboard"]
        uid = dashboard["uid"]
        old = self.dashboards.get(uid)
        if old is not None and not payload.get("overwrite"):
            return _json({"message": "version-mismatch", "status": "version-mismatch"}, 412)
        version = (old["dashboard"]["version"] + 1) if old else 1
        url = f"{self.prefix}/d/{uid}/{uid}"
        stored = {**dashboard, "id": 7, "version": version}
        self.dashboards[uid] = {
            "dashboard": stored,
            "meta": {"folderUid": payload.get("folderUid", ""), "url": url},
        }
        return _json({"id": 7, "uid": uid, "url": url, "status": "success", "version": version})


def posts(server: LoopbackServer, path: str) -> list[Recorded]:
    return [r for r in server.requests if r.method == "POST" and r.path.endswith(path)]


# ----------------------------------------------------------------------------------- import


def test_import_posts_each_dashboard_with_overwrite_into_a_created_folder(
    loopback_server: Start,
) -> None:
    grafana = FakeGrafana()
    server = loopback_server(grafana)
    results = GrafanaImporter(server.url, TokenAuth(TOKEN)).import_all(MODELS, "Observability")

    folder_uid = folder_uid_for("Observability")
    assert grafana.folders == [{"uid": folder_uid, "title": "Observability"}]
    saved = posts(server, "/api/dashboards/db")
    assert [r.path for r in saved] == ["/api/dashboards/db"] * len(MODELS)
    for request, model in zip(saved, MODELS, strict=True):
        payload = json.loads(request.body)
        assert payload["overwrite"] is True
        assert payload["folderUid"] == folder_uid
        assert payload["dashboard"] == {**model, "id": None}
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["Content-Type"].startswith("application/json")
    assert [r.status for r in results] == ["created"] * len(MODELS)
    assert results[0].url == f"{server.url}/d/{MODELS[0]['uid']}/{MODELS[0]['uid']}"
    assert all(r.headers.get("User-Agent") == "trimtab" for r in server.requests)


def test_reimport_is_idempotent(loopback_server: Start) -> None:
    grafana = FakeGrafana()
    server = loopback_server(grafana)
    importer = GrafanaImporter(server.url, TokenAuth(TOKEN))
    importer.import_all(MODELS, "trimtab")
    stored = json.dumps(grafana.dashboards, sort_keys=True)
    before = len(server.requests)

    again = importer.import_all(MODELS, "trimtab")

    assert [r.status for r in again] == ["unchanged"] * len(MODELS)
    later = server.requests[before:]
    assert not [r for r in later if r.method == "POST"]  # no folder, no save: nothing changes
    assert json.dumps(grafana.dashboards, sort_keys=True) == stored  # versions untouched


def test_a_changed_dashboard_or_folder_is_updated(loopback_server: Start) -> None:
    grafana = FakeGrafana()
    server = loopback_server(grafana)
    importer = GrafanaImporter(server.url, TokenAuth(TOKEN))
    importer.import_all(MODELS)
    assert [json.loads(r.body)["folderUid"] for r in posts(server, "/api/dashboards/db")] == [
        ""
    ] * len(MODELS)  # no --folder: the General folder

    edited = [{**MODELS[0], "title": "edited by hand"}, *MODELS[1:]]
    statuses = [r.status for r in importer.import_all(edited)]
    assert statuses == ["updated", *["unchanged"] * (len(MODELS) - 1)]
    moved = importer.import_all(edited, "elsewhere")
    assert {r.status for r in moved} == {"updated"}
    assert grafana.dashboards[MODELS[0]["uid"]]["dashboard"]["version"] == 3


def test_an_existing_folder_is_found_by_title_not_created(loopback_server: Start) -> None:
    grafana = FakeGrafana(
        folders=[{"uid": "abc123", "title": "SRE"}, {"uid": "x", "title": "Other"}]
    )
    server = loopback_server(grafana)
    GrafanaImporter(server.url, TokenAuth(TOKEN)).import_all(MODELS[:1], "SRE")
    assert not posts(server, "/api/folders")
    assert json.loads(posts(server, "/api/dashboards/db")[0].body)["folderUid"] == "abc123"


def test_basic_auth_header(loopback_server: Start) -> None:
    expected = "Basic " + b64encode(f"admin:{PASSWORD}".encode()).decode()
    server = loopback_server(FakeGrafana(accept=expected))
    results = GrafanaImporter(server.url, BasicAuth("admin", PASSWORD)).import_all(MODELS[:1])
    assert results[0].status == "created"
    authed = [r for r in server.requests if not r.path.endswith("/api/health")]
    assert authed
    assert all(r.headers["Authorization"] == expected for r in authed)


def test_grafana_under_a_sub_path(loopback_server: Start) -> None:
    grafana = FakeGrafana(prefix="/grafana")
    server = loopback_server(grafana)
    (result,) = GrafanaImporter(f"{server.url}/grafana/", TokenAuth(TOKEN)).import_all(MODELS[:1])
    assert {r.path.split("?")[0] for r in server.requests} >= {
        "/grafana/api/health",
        "/grafana/api/dashboards/db",
    }
    assert result.url == f"{server.url}/grafana/d/{MODELS[0]['uid']}/{MODELS[0]['uid']}"


# ----------------------------------------------------------------------------------- errors


def _error(url: str, auth: TokenAuth | BasicAuth | None = None, **kw: Any) -> str:
    with pytest.raises(GrafanaError) as caught:
        GrafanaImporter(url, auth or TokenAuth(TOKEN), **kw).import_all(MODELS[:1], "trimtab")
    message = str(caught.value)
    assert TOKEN not in message
    assert PASSWORD not in message
    return message


def test_401_says_the_credentials_were_refused(loopback_server: Start) -> None:
    server = loopback_server(FakeGrafana(accept="Bearer something-else"))
    message = _error(server.url)
    assert "refused the credentials (401 Unauthorized)" in message
    assert "GRAFANA_TOKEN or --token-file" in message
    assert server.url in message


def test_403_says_which_permission_is_missing_and_never_echoes_a_secret(
    loopback_server: Start,
) -> None:
    grafana = FakeGrafana()

    def forbid_saving(request: Recorded) -> Reply:
        if request.path == "/api/dashboards/db":  # a server that echoes what it was sent
            said = f"permissions needed: dashboards:write (got {request.headers['Authorization']})"
            return _json({"message": said}, 403)
        return grafana(request)

    server = loopback_server(forbid_saving)
    message = _error(server.url)
    assert "denied saving dashboard 'trimtab-overview' (403 Forbidden)" in message
    assert "dashboards:write" in message
    assert "Editor role" in message
    assert "<redacted>" in message


def test_404_says_the_url_is_not_grafanas_root(loopback_server: Start) -> None:
    server = loopback_server(lambda request: _json({"message": "Not found"}, 404))
    message = _error(f"{server.url}/wrong")
    assert "404 Not Found" in message
    assert "including any sub-path" in message
    assert f"{server.url}/wrong" in message


def test_unreachable_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    message = _error(url)
    assert message.startswith(f"cannot reach Grafana at {url}")
    assert "connection refused" in message


def test_a_server_that_does_not_answer_times_out(loopback_server: Start) -> None:
    server = loopback_server(lambda request: Reply(delay=10))
    message = _error(server.url, timeout=0.5)
    assert "cannot reach Grafana" in message
    assert "0.5s" in message


def test_a_server_that_is_not_grafana(loopback_server: Start) -> None:
    server = loopback_server(
        lambda request: Reply(body=b"<html>hello</html>", content_type="text/html")
    )
    assert "is not Grafana" in _error(server.url)


def test_tls_is_verified_by_default(loopback_server: Start, tmp_path: Path) -> None:
    openssl = "/usr/bin/openssl"
    if not os.path.exists(openssl):
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = loopback_server(FakeGrafana(), tls=(cert, key))
    assert "TLS verification failed" in _error(server.url)
    results = GrafanaImporter(server.url, TokenAuth(TOKEN), ca_file=cert).import_all(MODELS[:1])
    assert results[0].status == "created"


def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(GrafanaError, match="not in the URL"):
        GrafanaImporter(f"http://admin:{PASSWORD}@127.0.0.1:3000", TokenAuth(TOKEN))
    with pytest.raises(GrafanaError, match="not an http"):
        GrafanaImporter("ftp://127.0.0.1", TokenAuth(TOKEN))


def test_secrets_stay_out_of_reprs() -> None:
    assert TOKEN not in repr(TokenAuth(TOKEN))
    assert PASSWORD not in repr(BasicAuth("admin", PASSWORD))
    assert TOKEN not in repr(GrafanaImporter("http://127.0.0.1:3000", TokenAuth(TOKEN)))


# ------------------------------------------------------------------------------ credentials


def test_credentials_come_from_files_first_then_the_environment(tmp_path: Path) -> None:
    token_file, password_file = tmp_path / "token", tmp_path / "password"
    token_file.write_text(f"{TOKEN}\n")
    password_file.write_text(PASSWORD)
    env = {"GRAFANA_TOKEN": "from-env", "GRAFANA_USER": "envuser", "GRAFANA_PASSWORD": "envpw"}
    assert credentials(env, token_file=token_file) == TokenAuth(TOKEN)
    assert credentials(env, user="ops", password_file=password_file) == BasicAuth("ops", PASSWORD)
    assert credentials(env, password_file=password_file) == BasicAuth("envuser", PASSWORD)
    assert credentials(env, user="ops") == BasicAuth("ops", "envpw")
    assert credentials(env) == TokenAuth("from-env")
    assert credentials({"GRAFANA_USER": "u", "GRAFANA_PASSWORD": "p"}) == BasicAuth("u", "p")


@pytest.mark.parametrize(
    ("env", "kwargs", "error", "match"),
    [
        ({}, {}, CredentialsError, "no Grafana credentials"),
        ({"GRAFANA_USER": "u"}, {}, CredentialsError, "no Grafana credentials"),
        ({}, {"user": "ops"}, CredentialsError, "no password for ops"),
        ({}, {"password_file": Path("pw")}, CredentialsError, "needs --user"),
        ({}, {"token_file": Path("t"), "user": "u"}, CredentialsError, "not both"),
        ({}, {"token_file": Path("/nonexistent/token")}, GrafanaError, "cannot read"),
    ],
)
def test_missing_or_conflicting_credentials(
    env: dict[str, str], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        credentials(env, **kwargs)


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(GrafanaError, match="is empty"):
        credentials({}, token_file=empty)


# ---------------------------------------------------------------------------------- the CLI


def trimtab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRAFANA_")}
    return subprocess.run(
        [TRIMTAB, "dashboards", "import", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**clean, **(env or {})},
    )


def test_cli_import_with_a_token_file_reports_json(loopback_server: Start, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    grafana = FakeGrafana()
    server = loopback_server(grafana)
    args = (
        "--url",
        server.url,
        "--token-file",
        str(token_file),
        "--folder",
        "trimtab",
        "-o",
        "json",
    )
    first = trimtab(*args)
    assert first.returncode == 0, first.stderr
    assert [r["status"] for r in json.loads(first.stdout)] == ["created"] * len(MODELS)
    second = trimtab(*args)
    assert [r["status"] for r in json.loads(second.stdout)] == ["unchanged"] * len(MODELS)
    assert TOKEN not in first.stdout + first.stderr + second.stdout + second.stderr


def test_cli_import_bakes_a_configuration_in(loopback_server: Start) -> None:
    grafana = FakeGrafana()
    server = loopback_server(grafana)
    repo = Path(__file__).resolve().parents[2]
    result = trimtab(
        "--url", server.url, "-f", str(repo / "examples/checkout"), env={"GRAFANA_TOKEN": TOKEN}
    )
    assert result.returncode == 0, result.stderr
    assert "trimtab-slo-checkout-errors" in grafana.dashboards
    assert "trimtab-slo" not in grafana.dashboards  # the generic one is not part of a bake


def test_cli_import_exit_codes_and_messages(loopback_server: Start) -> None:
    server = loopback_server(FakeGrafana(accept="Bearer other"))
    no_credentials = trimtab("--url", server.url)
    assert no_credentials.returncode == 2
    assert "no Grafana credentials" in no_credentials.stderr
    refused = trimtab("--url", server.url, env={"GRAFANA_TOKEN": TOKEN})
    assert refused.returncode == 1
    assert "401 Unauthorized" in refused.stderr
    assert TOKEN not in refused.stderr
    assert trimtab().returncode == 2  # --url is required
    assert trimtab("--url", server.url, "--token", TOKEN).returncode == 2  # no such flag
