"""The ``haproxy`` adapter without HAProxy: translation, commands, answers, names, errors.

The pure parts are checked directly (the scale round trip by property), the conversation over
a loopback unix socket with :class:`FakeRuntimeAPI`, which answers ``get weight`` and
``set server`` as HAProxy 2.6 does (texts captured from the real one) and records every
connection. The real HAProxy is in ``tests/integration/test_adapter_contract.py``.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trimtab.adapters.haproxy import (
    MAX_WEIGHT,
    HAProxyAdapter,
    Refusal,
    backend_weights,
    changes,
    parse_weight,
    render_get,
    render_set,
    server_weights,
    split_answers,
)
from trimtab.slo.ports import TrafficAdapter, Verification
from trimtab.slo.routes import HAProxyRoute
from trimtab.slo.traffic import (
    PermanentTrafficError,
    TransientTrafficError,
    WeightsError,
    from_scale,
)

BACKENDS = ["v1", "v2"]
SERVERS = {"v1": ["app1"], "v2": ["app2"]}


def route(
    socket_path: str, servers: Mapping[str, list[str]] = SERVERS, **extra: Any
) -> HAProxyRoute:
    return HAProxyRoute.model_validate(
        {"socket": socket_path, "backend": "app", "servers": dict(servers)} | extra
    )


# -------------------------------------------------------------------------- the translation


@st.composite
def routes(draw: st.DrawFn) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Valid percents over 1–6 backends, each backend with 1–40 HAProxy servers."""
    count = draw(st.integers(1, 6))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=count - 1, max_size=count - 1)))
    bounds = [0, *cuts, 100]
    weights = {f"b{i}": bounds[i + 1] - bounds[i] for i in range(count)}
    sizes = draw(st.lists(st.integers(1, 40), min_size=count, max_size=count))
    servers = {f"b{i}": [f"s{i}-{j}" for j in range(size)] for i, size in enumerate(sizes)}
    return weights, servers


@given(routes())
def test_percents_to_haproxy_and_back_is_exact(
    case: tuple[dict[str, int], dict[str, list[str]]],
) -> None:
    weights, servers = case
    native = server_weights(weights, servers)
    assert set(native) == {s for names in servers.values() for s in names}
    assert all(0 <= w <= MAX_WEIGHT for w in native.values())
    assert from_scale(backend_weights(native, servers)) == weights
    for backend, names in servers.items():
        split = [native[s] for s in names]
        assert max(split) - min(split) <= 1  # shared as evenly as integers allow
        if weights[backend] == 0:
            assert split == [0] * len(names)  # drained means every server at exactly 0


def test_one_server_per_backend_uses_the_whole_0_to_256_scale() -> None:
    assert server_weights({"v1": 100, "v2": 0}, SERVERS) == {"app1": 256, "app2": 0}
    assert server_weights({"v1": 80, "v2": 20}, SERVERS) == {"app1": 205, "app2": 51}
    assert server_weights({"v1": 1, "v2": 99}, SERVERS) == {"app1": 3, "app2": 253}


def test_a_backend_with_several_servers_shares_its_weight() -> None:
    servers = {"v1": ["a", "b"], "v2": ["c", "d", "e"]}
    native = server_weights({"v1": 50, "v2": 50}, servers)
    assert native == {"a": 128, "b": 128, "c": 86, "d": 85, "e": 85}  # total 256 × 2
    assert backend_weights(native, servers) == {"v1": 256, "v2": 256}


@st.composite
def before_and_after(draw: st.DrawFn) -> tuple[dict[str, int], dict[str, int]]:
    """The weights of 1–6 servers before a change, and the weights wanted."""
    names = sorted(draw(st.sets(st.sampled_from("abcdef"), min_size=1)))
    weight = st.integers(0, MAX_WEIGHT)
    return {n: draw(weight) for n in names}, {n: draw(weight) for n in names}


@given(before_and_after())
def test_changes_reach_the_wanted_weights_raising_before_lowering(
    case: tuple[dict[str, int], dict[str, int]],
) -> None:
    current, wanted = case
    todo = changes(current, wanted)
    assert current | dict(todo) == wanted
    assert all(current[s] != w for s, w in todo)  # nothing sent that is already right
    directions = [w > current[s] for s, w in todo]
    assert directions == sorted(directions, reverse=True)  # every raise before every lowering


# ------------------------------------------------------------------------ commands, answers


def test_commands_are_rendered_as_the_runtime_api_takes_them() -> None:
    assert render_set("app", "app1", 205) == "set server app/app1 weight 205"
    assert render_get("be.v2", "srv_2:a") == "get weight be.v2/srv_2:a"


@pytest.mark.parametrize("weight", [-1, 257, True, 1.5])
def test_a_weight_haproxy_would_refuse_is_never_rendered(weight: Any) -> None:
    with pytest.raises(ValueError, match="0 to 256"):
        render_set("app", "app1", weight)


@pytest.mark.parametrize(
    ("output", "answers"),
    [
        ("", []),
        ("\n", [""]),  # one `set server` that succeeded
        ("\n\n", ["", ""]),
        ("\nNo such server.\n\n\n", ["", "No such server.", ""]),
        (
            "204 (initial 256)\n\nNo such backend.\n\n52 (initial 0)\n\n",
            ["204 (initial 256)", "No such backend.", "52 (initial 0)"],
        ),
        (
            "Empty weight string empty or preceded by garbage\n",
            ["Empty weight string empty or preceded by garbage"],
        ),
        (
            "Unknown command. Please enter one of the following commands only:\n  help\n  quit\n\n",
            ["Unknown command. Please enter one of the following commands only:\n  help\n  quit"],
        ),
        ("204 (initial 256)\n\n52 (ini", ["204 (initial 256)", "52 (ini"]),  # cut short
    ],
    ids=[
        "nothing",
        "one-success",
        "two-successes",
        "one-refused",
        "reads",
        "no-delimiter",
        "multi-line",
        "cut",
    ],
)
def test_answers_are_split_per_command(output: str, answers: list[str]) -> None:
    assert split_answers(output) == answers


def test_get_weight_answers_are_parsed() -> None:
    assert parse_weight("get weight app/app1", "204 (initial 256)") == 204
    assert parse_weight("get weight app/app2", "0 (initial 0)\n") == 0


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        ("No such server.", "server its HAProxy backend does not have"),
        ("No such backend.", "no backend of the route's name"),
        ("Permission denied", "level admin"),
        (
            "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.",
            "static",
        ),
        ("Require 'backend/server'.", "unexpected answer"),
        ("", "unexpected answer"),
    ],
)
def test_refusals_say_what_a_person_does_about_them(answer: str, hint: str) -> None:
    with pytest.raises(Refusal) as refused:
        parse_weight("get weight app/app1", answer)
    assert hint in refused.value.hint
    assert refused.value.command == "get weight app/app1"


# ------------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "server",
    [
        "a;} server evil:80",
        "app1; shutdown sessions server x/y",
        "app1\nshutdown sessions server app/app2",
        "app 1",
        "#1",
        "app/app2",
        "app1\\",
        "",
    ],
    ids=["brace", "semicolon", "newline", "space", "numeric-id", "slash", "backslash", "empty"],
)
def test_a_server_name_that_could_inject_a_command_is_refused(server: str) -> None:
    unchecked = HAProxyRoute.model_construct(
        socket="/run/haproxy/admin.sock", backend="app", servers={"v1": ["app1"], "v2": [server]}
    )
    with pytest.raises(ValueError, match="HAProxy server of backend 'v2'"):
        HAProxyAdapter(unchecked, BACKENDS)


@pytest.mark.parametrize("backend", ["app;shutdown frontend web", "app\n", "app 2", "#3"])
def test_an_haproxy_backend_name_that_could_inject_a_command_is_refused(backend: str) -> None:
    unchecked = HAProxyRoute.model_construct(
        socket="/run/haproxy/admin.sock", backend=backend, servers=SERVERS
    )
    with pytest.raises(ValueError, match="HAProxy backend: invalid proxy object name"):
        HAProxyAdapter(unchecked, BACKENDS)


def test_a_backend_name_is_checked_too() -> None:
    unchecked = HAProxyRoute.model_construct(
        socket="/run/haproxy/admin.sock", backend="app", servers={"v1;x": ["app1"], "v2": ["app2"]}
    )
    with pytest.raises(ValueError, match="invalid backend name"):
        HAProxyAdapter(unchecked, ["v1;x", "v2"])


@pytest.mark.parametrize(
    ("servers", "backends", "message"),
    [
        ({"v1": ["app1"], "v2": ["app1"]}, BACKENDS, "more than once"),
        ({"v1": ["app1"], "v2": []}, BACKENDS, "maps no HAProxy server"),
        ({"v1": ["app1"]}, BACKENDS, "maps backends"),
        (SERVERS, ["v1", "v1"], "distinct"),
        (SERVERS, [], "at least one backend"),
    ],
    ids=["shared-server", "no-server", "unmapped-backend", "repeated-backend", "no-backend"],
)
def test_a_route_that_cannot_be_steered_is_refused(
    servers: dict[str, list[str]], backends: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        HAProxyAdapter(route("/run/haproxy/admin.sock", servers), backends)


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9999"),
        ("tcp://[::1]:9999", "tcp://[::1]:9999"),
        ("/run/haproxy/admin.sock", "/run/haproxy/admin.sock"),
    ],
)
def test_the_socket_is_a_unix_path_or_tcp_address(address: str, shown: str) -> None:
    assert shown in repr(HAProxyAdapter(route(address), BACKENDS))


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:0", "tcp://127.0.0.1:70000", "/" + "x" * 120])
def test_an_unusable_socket_address_is_refused(address: str) -> None:
    unchecked = HAProxyRoute.model_construct(socket=address, backend="app", servers=SERVERS)
    with pytest.raises(ValueError, match="socket"):
        HAProxyAdapter(unchecked, BACKENDS)


def test_initial_weights_are_validated_but_never_written(tmp_path: Path) -> None:
    with pytest.raises(WeightsError):
        HAProxyAdapter(route("/run/haproxy/admin.sock"), BACKENDS, initial={"v1": 90, "v2": 9})
    with FakeRuntimeAPI(tmp_path, {"app1": 0, "app2": 256}) as api:
        adapter = HAProxyAdapter(route(api.path), BACKENDS, initial={"v1": 100, "v2": 0})
        assert adapter.get_weights() == {"v1": 0, "v2": 100}  # HAProxy's, not initial
    assert api.weights == {"app1": 0, "app2": 256}
    assert not [c for c in api.commands if c.startswith("set")]


# ------------------------------------------------------------------ over a fake runtime API


@dataclass
class FakeRuntimeAPI:
    """A stats socket answering ``get weight`` and ``set server … weight`` as HAProxy 2.6 does.

    ``refuse`` maps a server name to the answer its ``set server`` gets; ``cut_after`` closes
    every connection after that many answers, ``cut_next_change`` only the next connection
    setting weights (every command is still applied); ``silent`` accepts and never answers.
    """

    tmp_path: Path
    weights: dict[str, int]
    backend: str = "app"
    refuse: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None
    cut_next_change: int | None = None
    silent: bool = False
    connections: list[list[str]] = field(default_factory=list)
    _listener: socket.socket | None = None
    _thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return str(self.tmp_path / "admin.sock")

    @property
    def commands(self) -> list[str]:
        return [c for connection in self.connections for c in connection]

    def __enter__(self) -> FakeRuntimeAPI:
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._listener is not None
        assert self._thread is not None
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)

    def _serve(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                line = b""
                while not line.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    line += chunk
                commands = [c.strip() for c in line.decode().rstrip("\n").split(";")]
                self.connections.append(commands)
                if self.silent:
                    conn.recv(1)  # until the client gives up
                    continue
                answers = [self._answer(c) for c in commands]
                if self.cut_after is not None:
                    answers = answers[: self.cut_after]
                if self.cut_next_change is not None and commands[0].startswith("set"):
                    answers, self.cut_next_change = answers[: self.cut_next_change], None
                conn.sendall("".join(answers).encode())

    def _answer(self, command: str) -> str:
        words = command.split()
        backend, _, server = words[2].partition("/")
        if backend != self.backend:
            return "No such backend.\n\n"
        if server not in self.weights:
            return "No such server.\n\n"
        if command.startswith("get weight"):
            return f"{self.weights[server]} (initial {self.weights[server]})\n\n"
        if server in self.refuse:
            return self.refuse[server] + "\n\n"
        self.weights[server] = int(words[4])
        return "\n"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeRuntimeAPI]:
    with FakeRuntimeAPI(tmp_path, {"app1": 256, "app2": 0}) as running:
        yield running


def test_it_is_a_traffic_adapter(api: FakeRuntimeAPI) -> None:
    port: TrafficAdapter = HAProxyAdapter(route(api.path), BACKENDS)
    assert port.get_weights() == {"v1": 100, "v2": 0}


def test_a_change_is_one_read_then_one_connection_raising_first(api: FakeRuntimeAPI) -> None:
    adapter = HAProxyAdapter(route(api.path), BACKENDS)
    adapter.set_weights({"v1": 30, "v2": 70})
    assert api.connections == [
        ["get weight app/app1", "get weight app/app2"],
        ["set server app/app2 weight 179", "set server app/app1 weight 77"],
    ]
    assert adapter.verify({"v1": 30, "v2": 70}) is Verification.VERIFIED
    assert adapter.verify({"v1": 31, "v2": 69}) is Verification.PENDING


def test_setting_the_weights_haproxy_holds_sends_no_change(api: FakeRuntimeAPI) -> None:
    HAProxyAdapter(route(api.path), BACKENDS).set_weights({"v1": 100, "v2": 0})
    assert api.connections == [["get weight app/app1", "get weight app/app2"]]


def test_invalid_weights_send_nothing(api: FakeRuntimeAPI) -> None:
    adapter = HAProxyAdapter(route(api.path), BACKENDS)
    with pytest.raises(WeightsError):
        adapter.set_weights({"v1": 50, "v2": 49})
    with pytest.raises(WeightsError):
        adapter.verify({"v1": 100})
    assert api.connections == []


def test_a_refused_server_puts_back_those_already_changed(tmp_path: Path) -> None:
    servers = {"v1": ["app1", "app3"], "v2": ["app2"]}
    before = {"app1": 256, "app3": 256, "app2": 0}
    with FakeRuntimeAPI(tmp_path, dict(before), refuse={"app3": "Permission denied"}) as api:
        adapter = HAProxyAdapter(route(api.path, servers), BACKENDS)
        with pytest.raises(PermanentTrafficError) as raised:
            adapter.set_weights({"v1": 50, "v2": 50})
        assert api.weights == before
        assert adapter.get_weights() == {"v1": 100, "v2": 0}
    message = str(raised.value)
    assert "'Permission denied' to 'set server app/app3 weight 64'" in message
    assert "level admin" in message
    assert "put back" in message
    # the change on one connection (raising first), the undo on one more (raising first too)
    assert api.connections[1:3] == [
        [
            "set server app/app2 weight 128",
            "set server app/app1 weight 64",
            "set server app/app3 weight 64",
        ],
        ["set server app/app1 weight 256", "set server app/app2 weight 0"],
    ]


def test_an_unknown_server_is_a_configuration_error(tmp_path: Path) -> None:
    with FakeRuntimeAPI(tmp_path, {"app1": 256}) as api:
        adapter = HAProxyAdapter(route(api.path), BACKENDS)
        with pytest.raises(PermanentTrafficError, match=r"No such server.*does not have"):
            adapter.get_weights()
        with pytest.raises(PermanentTrafficError, match="No such server"):
            adapter.set_weights({"v1": 50, "v2": 50})
        assert api.weights == {"app1": 256}


def test_answers_cut_short_are_transient_and_undone(api: FakeRuntimeAPI) -> None:
    adapter = HAProxyAdapter(route(api.path), BACKENDS)
    api.cut_after = 1
    with pytest.raises(TransientTrafficError, match="answered 1 of 2"):
        adapter.get_weights()
    api.cut_after = None
    adapter.set_weights({"v1": 50, "v2": 50})
    api.cut_next_change = 1  # the second command is applied, but its answer is lost
    with pytest.raises(TransientTrafficError, match=r"answered 1 of 2.*put back") as raised:
        adapter.set_weights({"v1": 20, "v2": 80})
    assert "partly" not in str(raised.value)
    assert api.weights == {"app1": 128, "app2": 128}
    assert api.connections[-1] == [
        "set server app/app1 weight 128",
        "set server app/app2 weight 128",
    ]


def test_no_answer_in_time_is_transient(api: FakeRuntimeAPI) -> None:
    api.silent = True
    adapter = HAProxyAdapter(route(api.path), BACKENDS, timeout=0.05)
    with pytest.raises(TransientTrafficError, match=r"no answer within 0\.05s"):
        adapter.verify({"v1": 100, "v2": 0})


def test_every_server_at_zero_is_reported_not_guessed(tmp_path: Path) -> None:
    with FakeRuntimeAPI(tmp_path, {"app1": 0, "app2": 0}) as api:
        adapter = HAProxyAdapter(route(api.path), BACKENDS, initial={"v1": 100, "v2": 0})
        with pytest.raises(PermanentTrafficError, match="every server of the route is at weight 0"):
            adapter.get_weights()
        assert adapter.verify({"v1": 100, "v2": 0}) is Verification.PENDING
        adapter.set_weights({"v1": 100, "v2": 0})  # a person's decision, through trimtab
        assert api.weights == {"app1": 256, "app2": 0}


def test_verify_wants_the_exact_translation_not_only_the_percents(tmp_path: Path) -> None:
    servers = {"v1": ["a", "b"], "v2": ["c", "d"]}
    with FakeRuntimeAPI(tmp_path, {"a": 256, "b": 0, "c": 128, "d": 128}) as api:
        adapter = HAProxyAdapter(route(api.path, servers), BACKENDS)
        assert adapter.get_weights() == {"v1": 50, "v2": 50}
        assert adapter.verify({"v1": 50, "v2": 50}) is Verification.PENDING  # a and b uneven
        adapter.set_weights({"v1": 50, "v2": 50})
        assert api.weights == {"a": 128, "b": 128, "c": 128, "d": 128}
        assert adapter.verify({"v1": 50, "v2": 50}) is Verification.VERIFIED


# ---------------------------------------------------------------------- connection failures


def test_no_socket_at_the_path_is_transient(tmp_path: Path) -> None:
    adapter = HAProxyAdapter(route(str(tmp_path / "admin.sock")), BACKENDS)
    with pytest.raises(TransientTrafficError, match=r"no socket at .*not running or is restarting"):
        adapter.set_weights({"v1": 50, "v2": 50})


def test_a_stale_socket_of_a_stopped_haproxy_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # bound, never listening, then closed: what HAProxy leaves
    adapter = HAProxyAdapter(route(str(path)), BACKENDS)
    with pytest.raises(TransientTrafficError, match="connection refused"):
        adapter.get_weights()


def test_a_path_that_is_not_a_socket_is_permanent(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    path.write_text("not a socket")
    adapter = HAProxyAdapter(route(str(path)), BACKENDS)
    with pytest.raises(PermanentTrafficError, match="is not a unix socket"):
        adapter.get_weights()


def test_a_closed_tcp_port_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        adapter = HAProxyAdapter(route(f"tcp://127.0.0.1:{port}"), BACKENDS)
        with pytest.raises(TransientTrafficError, match=r"tcp://127\.0\.0\.1"):
            adapter.get_weights()


@pytest.mark.parametrize(
    ("error", "expected", "words"),
    [
        (
            PermissionError(errno.EACCES, "Permission denied"),
            PermanentTrafficError,
            "permission denied",
        ),
        (OSError(errno.ENOTDIR, "Not a directory"), PermanentTrafficError, "Not a directory"),
        (
            ConnectionResetError(errno.ECONNRESET, "Connection reset"),
            TransientTrafficError,
            "reset",
        ),
        (TimeoutError(), TransientTrafficError, "no answer within"),
    ],
    ids=["permission", "not-a-directory", "reset", "timeout"],
)
def test_connection_failures_are_classified_by_cause(
    error: OSError, expected: type[Exception], words: str
) -> None:
    # Root (as tests run here) passes every permission check, so EACCES is fed in directly.
    adapter = HAProxyAdapter(route("/run/haproxy/admin.sock"), BACKENDS)
    failure = adapter._failure(error)
    assert type(failure) is expected
    assert words in str(failure)
