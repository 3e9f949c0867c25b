"""The ``nginx`` adapter without NGINX: its file, its translation, its order of work and errors.

The test and reload commands are a fake :class:`~trimtab.adapters.nginx.Runner` that records
every argv and answers as NGINX 1.22 does (messages copied from it). The real NGINX runs in
``tests/integration`` (the adapter contract and the shifts under load).
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from trimtab.adapters.nginx import (
    Completed,
    NginxAdapter,
    parse,
    render,
    server_weights,
)
from trimtab.adapters.nginxlog import LOG_FIELDS, AccessLogExporter, log_format
from trimtab.slo.ports import TrafficAdapter, Verification
from trimtab.slo.routes import NginxRoute
from trimtab.slo.traffic import (
    PermanentTrafficError,
    TransientTrafficError,
    WeightsError,
    from_scale,
)

BACKENDS = ["v1", "v2"]
START = {"v1": 100, "v2": 0}
SERVERS = {"v1": ["10.0.0.1:8080"], "v2": ["10.0.0.2:8080"]}
TEST = ["nginx", "-t"]
RELOAD = ["nginx", "-s", "reload"]
OK = Completed(0, "nginx: configuration file /etc/nginx/nginx.conf test is successful\n")
REJECTED = Completed(
    1,
    'nginx: [emerg] unknown directive "bogus" in /etc/nginx/extra.conf:1\n'
    "nginx: configuration file /etc/nginx/nginx.conf test failed\n",
)
NO_PID_FILE = Completed(
    1, 'nginx: [error] open() "/run/nginx.pid" failed (2: No such file or directory)\n'
)
STALE_PID = Completed(1, "nginx: [alert] kill(4242, 1) failed (3: No such process)\n")
NOT_PERMITTED = Completed(1, "nginx: [alert] kill(4242, 1) failed (1: Operation not permitted)\n")


class FakeNginx:
    """A :class:`Runner` answering the test and the reload as scripted, recording argvs."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.test: Completed | BaseException = OK
        self.reload: Completed | BaseException = Completed(0, "")
        self.files_seen: list[str] = []  # the include's text when each command ran
        self.path: Path | None = None

    def __call__(self, argv: Sequence[str], timeout: float) -> Completed:
        assert isinstance(argv, (list, tuple)), "an argv, never a shell string"
        assert timeout > 0
        self.calls.append(list(argv))
        if self.path is not None:
            self.files_seen.append(self.path.read_text() if self.path.exists() else "")
        answer = self.test if list(argv) == TEST else self.reload
        if isinstance(answer, BaseException):
            raise answer
        return answer

    @property
    def kinds(self) -> list[str]:
        return ["test" if call == TEST else "reload" for call in self.calls]


def route(path: Path, servers: Mapping[str, list[str]] = SERVERS, **extra: Any) -> NginxRoute:
    return NginxRoute(
        upstream_path=str(path),
        upstream="checkout",
        servers=dict(servers),
        test=TEST,
        reload=RELOAD,
        **extra,
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "checkout.conf"


@pytest.fixture
def nginx(path: Path) -> FakeNginx:
    fake = FakeNginx()
    fake.path = path
    return fake


@pytest.fixture
def make(path: Path, nginx: FakeNginx) -> Callable[..., NginxAdapter]:
    def build(servers: Mapping[str, list[str]] = SERVERS, **kwargs: Any) -> NginxAdapter:
        kwargs.setdefault("initial", START)
        kwargs.setdefault("settle", 0.0)
        return NginxAdapter(route(path, servers), list(servers), run=nginx, **kwargs)

    return build


# -------------------------------------------------------------------------------- rendering


def test_it_is_a_traffic_adapter(make: Callable[..., NginxAdapter]) -> None:
    port: TrafficAdapter = make()
    assert "checkout.conf" in repr(port)


def test_the_file_is_an_upstream_block_trimtab_says_it_owns() -> None:
    assert render("checkout", SERVERS, {"v1": 95, "v2": 5}) == (
        "# Written by trimtab, which owns this file and replaces it whole at every change of\n"
        "# weights. Do not edit: a change made here is reported as drift and overwritten.\n"
        "# Weights in percent: v1=95 v2=5. Each server weighs its backend's percent x 1\n"
        "# divided by its backend's server count, so shares are exact; 0 percent is `down`.\n"
        "upstream checkout {\n"
        "    server 10.0.0.1:8080 weight=95;  # v1\n"
        "    server 10.0.0.2:8080 weight=5;  # v2\n"
        "}\n"
    )


def test_a_drained_backend_is_down_since_nginx_weights_start_at_one() -> None:
    text = render("checkout", SERVERS, {"v1": 0, "v2": 100})
    assert "server 10.0.0.1:8080 down;" in text
    assert "server 10.0.0.2:8080 weight=100;" in text
    assert "weight=0" not in text
    assert parse(text, "checkout", SERVERS) == {"10.0.0.1:8080": 0, "10.0.0.2:8080": 100}


def test_the_same_weights_render_the_same_bytes_whatever_the_order() -> None:
    servers = {"zone-b": ["b1:80", "b2:80"], "zone-a": ["a1:80"]}
    reordered = {"zone-a": ["a1:80"], "zone-b": ["b1:80", "b2:80"]}
    text = render("pool", servers, {"zone-b": 60, "zone-a": 40})
    assert text == render("pool", reordered, {"zone-a": 40, "zone-b": 60})
    assert text.index("a1:80") < text.index("b1:80") < text.index("b2:80")


def test_several_servers_share_their_backends_weight_exactly() -> None:
    servers = {"v1": ["a:80", "b:80"], "v2": ["c:80", "d:80", "e:80"]}
    native = server_weights(servers, {"v1": 1, "v2": 99})
    # M = lcm(2, 3) = 6: v1 has 1 x 6 = 6 split in two, v2 has 99 x 6 = 594 split in three
    assert native == {"a:80": 3, "b:80": 3, "c:80": 198, "d:80": 198, "e:80": 198}
    text = render("pool", servers, {"v1": 1, "v2": 99})
    assert "percent x 6" in text
    assert parse(text, "pool", servers) == native


def percents(backends: int) -> st.SearchStrategy[list[int]]:
    """Integer percents over ``backends`` backends that sum to 100 (zeros included)."""
    cuts = st.lists(st.integers(0, 100), min_size=backends - 1, max_size=backends - 1)
    return cuts.map(
        lambda c: [b - a for a, b in zip([0, *sorted(c)], [*sorted(c), 100], strict=True)]
    )


@st.composite
def routes(draw: st.DrawFn) -> tuple[dict[str, list[str]], dict[str, int]]:
    count = draw(st.integers(1, 5))
    sizes = draw(st.lists(st.integers(1, 7), min_size=count, max_size=count))
    servers: dict[str, list[str]] = {}
    for index, size in enumerate(sizes):
        servers[f"b{index}"] = [f"10.{index}.0.{n}:8080" for n in range(size)]
    values = draw(percents(count))
    return servers, dict(zip(servers, values, strict=True))


@settings(max_examples=500)
@given(case=routes())
def test_percents_to_file_to_percents_is_exact(
    case: tuple[dict[str, list[str]], dict[str, int]],
) -> None:
    servers, weights = case
    text = render("pool", servers, weights)
    native = parse(text, "pool", servers)
    assert native == server_weights(servers, weights)
    for backend, addresses in servers.items():
        shares = {native[a] for a in addresses}
        assert len(shares) == 1, "a backend's servers share its weight equally"
        assert (shares == {0}) == (weights[backend] == 0), "0 % is down, anything else >= 1"
    sums = {b: sum(native[a] for a in addresses) for b, addresses in servers.items()}
    assert from_scale(sums) == weights


@settings(max_examples=200)
@given(case=routes())
def test_the_adapter_reads_back_exactly_what_it_wrote(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[dict[str, list[str]], dict[str, int]]
) -> None:
    servers, weights = case
    path = tmp_path_factory.mktemp("nginx") / "pool.conf"
    adapter = NginxAdapter(route(path, servers), list(servers), run=FakeNginx(), settle=0.0)
    adapter.set_weights(weights)
    assert adapter.get_weights() == weights
    assert adapter.verify(weights) is Verification.VERIFIED


# ---------------------------------------------------------------------- no config injection

EVIL_UPSTREAMS = ["check out", "checkout{", "a;b", "up\nstream", "x}", "", "$host", "a#b"]
EVIL_SERVERS = [
    "a;} server evil:80",
    "10.0.0.1:8080;",
    "10.0.0.1:8080 backup",
    "10.0.0.1:8080\nserver evil:80",
    "unix:/run/app.sock",
    "10.0.0.1",
    "10.0.0.1:0",
    "host:99999",
    "[::1:8080",
    "evil:80 weight=100",
]
EVIL_BACKENDS = ["v 1", "v1;", "-v1", "v1}", "v1\n"]


@pytest.mark.parametrize("upstream", EVIL_UPSTREAMS)
def test_an_upstream_name_that_could_inject_configuration_is_refused(
    path: Path, upstream: str
) -> None:
    unchecked = NginxRoute.model_construct(  # as if the route model had let it through
        upstream_path=str(path), upstream=upstream, servers=SERVERS, test=TEST, reload=RELOAD
    )
    with pytest.raises(ValueError, match="invalid proxy object name"):
        NginxAdapter(unchecked, BACKENDS)
    assert not path.exists()


@pytest.mark.parametrize("server", EVIL_SERVERS)
def test_a_server_address_that_could_inject_configuration_is_refused(
    path: Path, server: str
) -> None:
    unchecked = NginxRoute.model_construct(
        upstream_path=str(path),
        upstream="checkout",
        servers={"v1": ["10.0.0.1:8080"], "v2": [server]},
        test=TEST,
        reload=RELOAD,
    )
    with pytest.raises(ValueError, match="invalid address"):
        NginxAdapter(unchecked, BACKENDS)


@pytest.mark.parametrize("backend", EVIL_BACKENDS)
def test_a_backend_name_that_could_inject_configuration_is_refused(
    path: Path, backend: str
) -> None:
    unchecked = NginxRoute.model_construct(
        upstream_path=str(path),
        upstream="checkout",
        servers={"v1": ["10.0.0.1:8080"], backend: ["10.0.0.2:8080"]},
        test=TEST,
        reload=RELOAD,
    )
    with pytest.raises(ValueError, match="invalid backend name"):
        NginxAdapter(unchecked, ["v1", backend])


@pytest.mark.parametrize(
    ("servers", "backends", "message"),
    [
        ({"v1": ["a:80"], "v2": ["a:80"]}, BACKENDS, "listed twice"),
        ({"v1": ["a:80", "a:80"], "v2": ["b:80"]}, BACKENDS, "listed twice"),
        ({"v1": ["a:80"], "v2": []}, BACKENDS, "at least one"),
        ({"v1": ["a:80"], "v3": ["b:80"]}, BACKENDS, "servers map backends"),
        (SERVERS, ["v1", "v1"], "distinct"),
        (SERVERS, [], "at least one backend"),
    ],
)
def test_a_route_that_cannot_be_written_exactly_is_refused(
    path: Path, servers: dict[str, list[str]], backends: list[str], message: str
) -> None:
    unchecked = NginxRoute.model_construct(
        upstream_path=str(path), upstream="checkout", servers=servers, test=TEST, reload=RELOAD
    )
    with pytest.raises(ValueError, match=message):
        NginxAdapter(unchecked, backends)


@pytest.mark.parametrize("argv", ["nginx -s reload", [], ["nginx", ""], ["nginx", "-s\0x"]])
def test_commands_are_argv_lists_never_shell_strings(path: Path, argv: Any) -> None:
    unchecked = NginxRoute.model_construct(
        upstream_path=str(path), upstream="checkout", servers=SERVERS, test=TEST, reload=argv
    )
    with pytest.raises(ValueError, match="reload command"):
        NginxAdapter(unchecked, BACKENDS)


# ------------------------------------------------------------------------ a person's edits

BROKEN = [
    ("upstream checkout {\n    server 10.0.0.1:8080 weight=100\n}\n", "expected ';'"),
    ("upstream other {\n    server 10.0.0.1:8080;\n    server 10.0.0.2:8080 down;\n}\n", "named"),
    ("upstream checkout {\n    server 10.0.0.9:8080;\n}\n", "not one of the route's servers"),
    ("upstream checkout {\n    server 10.0.0.1:8080;\n}\n", "missing"),
    (
        "upstream checkout {\n server 10.0.0.1:8080;\n server 10.0.0.1:8080;\n}\n",
        "more than once",
    ),
    (
        "upstream checkout {\n server 10.0.0.1:8080 weight=0;\n server 10.0.0.2:8080;\n}\n",
        "unexpected parameter 'weight=0'",
    ),
    (
        "upstream checkout {\n server 10.0.0.1:8080 backup;\n server 10.0.0.2:8080;\n}\n",
        "unexpected parameter 'backup'",
    ),
    (
        "upstream checkout {\n keepalive 8;\n server 10.0.0.1:8080;\n server 10.0.0.2:8080;\n}\n",
        "unexpected 'keepalive'",
    ),
    (
        "upstream checkout {\n server 10.0.0.1:8080 down;\n server 10.0.0.2:8080 down;\n}\n",
        "every server is down",
    ),
    (
        "upstream checkout {\n server 10.0.0.1:8080 weight=999;\n server 10.0.0.2:8080;\n}\n",
        "less than half a percent",
    ),
    ('upstream checkout {\n server "10.0.0.1:8080";\n}\n', "line 2: unexpected character"),
    ("upstream checkout {\n server 10.0.0.1:8080;\n server 10.0.0.2:8080;\n", "file ends"),
    ("upstream checkout { server 10.0.0.1:8080; server 10.0.0.2:8080; }\n}\n", "after the"),
    ("", "file ends"),
    ("\xff\xfe", "utf-8"),
]


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_a_file_a_person_broke_is_reported_not_repaired(
    make: Callable[..., NginxAdapter], nginx: FakeNginx, path: Path, text: str, message: str
) -> None:
    path.write_bytes(text.encode("latin-1"))
    adapter = make()
    with pytest.raises(PermanentTrafficError, match=message) as raised:
        adapter.get_weights()
    assert str(path) in str(raised.value)
    with pytest.raises(PermanentTrafficError):
        adapter.verify(START)
    assert path.read_bytes() == text.encode("latin-1")  # reported, left as it is
    assert nginx.calls == []
    adapter.set_weights({"v1": 90, "v2": 10})  # the next change replaces it
    assert adapter.get_weights() == {"v1": 90, "v2": 10}


def test_a_hand_edit_in_the_format_is_read_as_it_is(make: Callable[..., NginxAdapter]) -> None:
    path = Path(make().path)
    path.write_text(
        "# someone's own notes\nupstream   checkout{\n"
        "\tserver 10.0.0.2:8080 weight=1;# v2 comes first now\n"
        "\tserver 10.0.0.1:8080;\n}"
    )
    assert make().get_weights() == {"v1": 50, "v2": 50}  # weight defaults to 1, as in NGINX
    path.write_text(
        "upstream checkout {\n server 10.0.0.1:8080 weight=2;\n server 10.0.0.2:8080 weight=1;\n}\n"
    )
    assert make().get_weights() == {"v1": 67, "v2": 33}  # rounded like every proxy scale


def test_a_symbolic_link_is_not_followed(make: Callable[..., NginxAdapter], path: Path) -> None:
    target = path.with_name("elsewhere.conf")
    target.write_text(render("checkout", SERVERS, START))
    path.symlink_to(target)
    with pytest.raises(PermanentTrafficError, match="symbolic link"):
        make().get_weights()
    with pytest.raises(PermanentTrafficError, match="symbolic link"):
        make().set_weights({"v1": 50, "v2": 50})
    assert target.read_text() == render("checkout", SERVERS, START)


# ------------------------------------------------------------------------- order of work


def test_a_change_writes_then_tests_then_reloads(
    make: Callable[..., NginxAdapter], nginx: FakeNginx, path: Path
) -> None:
    adapter = make()
    adapter.set_weights({"v1": 95, "v2": 5})
    assert nginx.kinds == ["test", "reload"]
    wanted = render("checkout", SERVERS, {"v1": 95, "v2": 5})
    assert nginx.files_seen == [wanted, wanted]  # the new file was in place for both
    assert path.read_text() == wanted
    assert adapter.get_weights() == {"v1": 95, "v2": 5}
    assert adapter.verify({"v1": 95, "v2": 5}) is Verification.VERIFIED
    assert adapter.verify({"v1": 5, "v2": 95}) is Verification.PENDING
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkout.conf"]


@pytest.mark.parametrize(
    "weights",
    [{"v1": 90, "v2": 5}, {"v1": 100}, {"v1": 95, "v2": 5, "v3": 0}, {"v1": 95.0, "v2": 5}],
)
def test_invalid_weights_write_nothing_and_run_nothing(
    make: Callable[..., NginxAdapter], nginx: FakeNginx, path: Path, weights: dict[str, int]
) -> None:
    with pytest.raises(WeightsError):
        make().set_weights(weights)
    assert not path.exists()
    assert nginx.calls == []


def test_setting_the_weights_the_file_holds_rewrites_and_reloads_nothing(
    make: Callable[..., NginxAdapter], nginx: FakeNginx, path: Path
) -> None:
    adapter = make()
    adapter.set_weights({"v1": 75, "v2": 25})
    first = path.stat()
    adapter.set_weights({"v2": 25, "v1": 75})
    make().set_weights({"v1": 75, "v2": 25})  # a new adapter (a restart) too
    assert nginx.kinds == ["test", "reload"]
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)


def test_a_rejected_configuration_puts_the_old_file_back(
    make: Callable[..., NginxAdapter], nginx: FakeNginx, path: Path
) -> None:
    adapter = make()
    adapter.set_weights({"v1": 80, "v2": 20})
    before = path.read_bytes()
    nginx.test = REJECTED
    with pytest.raises(PermanentTrafficError, match='unknown directive "bogus"'):
        adapter.set_weights({"v1": 20, "v2": 80})
    assert nginx.kinds == ["test", "reload", "test"]  # never reloaded with the rejected file
    assert path.read_bytes() == before
    assert adapter.get_weights() == {"v1": 80, "v2": 20}
    assert adapter.verify({"v1": 80, "v2": 20}) is Verification.VERIFIED
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkout.conf"]


def test_a_first_write_that_nginx_rejects_leaves_no_file(
    make: Callable[..., NginxAdapter], nginx: FakeNginx, path: Path
) -> None:
    nginx.test = REJECTED
    with pytest.raises(PermanentTrafficError):
        make(initial=None).set_weights({"v1": 50, "v2": 50})
    assert list(path.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (NO_PID_FILE, TransientTrafficError),
        (STALE_PID, TransientTrafficError),
        (Completed(1, 'nginx: [error] invalid PID number "" in "/run/nginx.pid"\n'), None),
        (NOT_PERMITTED, PermanentTrafficError),
        (Completed(1, "Failed to reload nginx.service: Access denied\n"), PermanentTrafficError),
        (TimeoutError("did not finish within 10 s"), TransientTrafficError),
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), PermanentTrafficError),
    ],
    ids=["no-pid-file", "stale-pid", "empty-pid", "eperm", "systemctl", "timeout", "no-binary"],
)
def test_a_failed_reload_puts_the_old_file_back_and_says_why(
    make: Callable[..., NginxAdapter],
    nginx: FakeNginx,
    path: Path,
    answer: Completed | BaseException,
    error: type[Exception] | None,
) -> None:
    adapter = make()
    adapter.set_weights({"v1": 80, "v2": 20})
    before = path.read_bytes()
    nginx.reload = answer
    with pytest.raises(error or TransientTrafficError) as raised:
        adapter.set_weights({"v1": 20, "v2": 80})
    assert "reload" in str(raised.value)
    assert path.read_bytes() == before
    assert adapter.get_weights() == {"v1": 80, "v2": 20}


def test_commands_that_cannot_run_or_hang_are_classified(
    make: Callable[..., NginxAdapter], nginx: FakeNginx, path: Path
) -> None:
    nginx.test = TimeoutError("did not finish within 10 s")
    with pytest.raises(TransientTrafficError, match="did not finish"):
        make().set_weights({"v1": 50, "v2": 50})
    nginx.test = PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(PermanentTrafficError, match="cannot run the NGINX test command"):
        make().set_weights({"v1": 50, "v2": 50})
    assert not path.exists()


# ------------------------------------------------------------------- what verification means


def test_without_a_pid_file_verification_waits_after_a_reload(
    make: Callable[..., NginxAdapter],
) -> None:
    adapter = make(settle=3600.0)
    assert adapter.verify(START) is Verification.PENDING  # no file yet
    adapter.set_weights({"v1": 60, "v2": 40})
    assert adapter.verify({"v1": 60, "v2": 40}) is Verification.PENDING  # reloaded just now
    assert make(settle=3600.0).verify({"v1": 60, "v2": 40}) is Verification.VERIFIED


def test_a_reload_a_crashed_process_still_owed_is_done_before_verifying(
    make: Callable[..., NginxAdapter], nginx: FakeNginx, path: Path
) -> None:
    make().set_weights({"v1": 60, "v2": 40})
    nginx.calls.clear()
    # A process that died between renaming the file and reloading leaves the marker behind.
    marker = path.with_name(".checkout.conf.trimtab-reload-pending")
    marker.touch()
    assert make(create=False).verify({"v1": 60, "v2": 40}) is Verification.PENDING
    assert nginx.calls == []  # a dry run never reloads
    assert make().verify({"v1": 60, "v2": 40}) is Verification.VERIFIED
    assert nginx.kinds == ["test", "reload"]
    assert not marker.exists()
    marker.touch()
    make().set_weights({"v1": 60, "v2": 40})  # the same weights: no rewrite, but the reload
    assert nginx.kinds == ["test", "reload", "test", "reload"]


def test_a_reload_that_timed_out_is_done_again_before_verifying(
    make: Callable[..., NginxAdapter], nginx: FakeNginx
) -> None:
    adapter = make()
    adapter.set_weights({"v1": 80, "v2": 20})
    nginx.reload = TimeoutError("did not finish within 10 s")
    with pytest.raises(TransientTrafficError):
        adapter.set_weights({"v1": 20, "v2": 80})
    nginx.reload = Completed(0, "")
    nginx.calls.clear()
    # It may have reached NGINX with the new file: reload the restored one before verifying.
    assert adapter.verify({"v1": 80, "v2": 20}) is Verification.VERIFIED
    assert nginx.kinds == ["test", "reload"]


def test_a_missing_file_starts_from_the_initial_weights(
    make: Callable[..., NginxAdapter], nginx: FakeNginx, path: Path
) -> None:
    assert make(create=False).get_weights() == START
    assert not path.exists()
    with pytest.raises(PermanentTrafficError, match="no initial weights"):
        make(initial=None).get_weights()
    assert make().get_weights() == START
    assert path.read_text() == render("checkout", SERVERS, START)
    assert nginx.calls == []
    assert make().verify(START) is Verification.VERIFIED  # NGINX is told to load it first
    assert nginx.kinds == ["test", "reload"]


def test_initial_weights_are_validated_up_front(path: Path) -> None:
    with pytest.raises(WeightsError):
        NginxAdapter(route(path), BACKENDS, initial={"v1": 100})


def test_a_missing_directory_is_permanent_and_leaves_nothing(tmp_path: Path) -> None:
    nginx = FakeNginx()
    absent = tmp_path / "absent" / "checkout.conf"
    adapter = NginxAdapter(route(absent), BACKENDS, initial=START, run=nginx)
    with pytest.raises(PermanentTrafficError, match="does not exist"):
        adapter.set_weights({"v1": 50, "v2": 50})
    with pytest.raises(PermanentTrafficError, match="does not exist"):
        adapter.get_weights()
    assert list(tmp_path.iterdir()) == []
    assert nginx.calls == []


# ----------------------------------------------------------------------- access-log metrics


def logged(addr: str, status: str, seconds: str, final: str, upstream: str = "checkout") -> str:
    """An access-log line as NGINX writes it with :func:`log_format` (fields in its order)."""
    fields = [upstream, addr, status, seconds, final, "0.005"]
    return json.dumps(dict(zip(LOG_FIELDS, fields, strict=True)), separators=(",", ":"))


# Recorded from NGINX 1.22.1 with log_format(): v1 and v2 at 50/50, then v2 stopped (NGINX
# retried on v1), then v1 stopped too (no live server). Ports replaced.
RECORDED = [
    logged("127.0.0.1:8001", "200", "0.001", "200"),
    logged("127.0.0.1:8002", "200", "0.003", "200"),
    logged("127.0.0.1:8002, 127.0.0.1:8001", "502, 200", "0.000, 0.004", "200"),
    logged("127.0.0.1:8001, checkout", "502, 502", "0.000, 0.000", "502"),
    logged("checkout", "502", "0.000", "502"),
    logged("", "", "", "200", upstream=""),  # a location NGINX served itself
    logged("10.9.9.9:80", "200", "0.010", "200", upstream="other"),
    "not json at all",
]


def test_the_recorded_lines_are_nginx_s_own() -> None:
    assert RECORDED[2] == (
        '{"proxy_host":"checkout","upstream_addr":"127.0.0.1:8002, 127.0.0.1:8001",'
        '"upstream_status":"502, 200","upstream_response_time":"0.000, 0.004","status":"200",'
        '"request_time":"0.005"}'
    )


LOCAL = {"v1": ["127.0.0.1:8001"], "v2": ["127.0.0.1:8002"]}


def exporter(path: Path, **kwargs: Any) -> tuple[AccessLogExporter, CollectorRegistry]:
    registry = CollectorRegistry()
    routes = [route(path.with_name("unused.conf"), LOCAL)]
    return AccessLogExporter(path, routes, registry=registry, **kwargs), registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_the_log_format_is_one_json_object_per_request() -> None:
    assert log_format() == (
        'log_format trimtab_upstream escape=json \'{"proxy_host":"$proxy_host",'
        '"upstream_addr":"$upstream_addr","upstream_status":"$upstream_status",'
        '"upstream_response_time":"$upstream_response_time","status":"$status",'
        '"request_time":"$request_time"}\';'
    )
    with pytest.raises(ValueError):
        log_format("x' ; evil")


def test_every_upstream_attempt_is_counted_for_its_backend(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("\n".join(RECORDED) + "\n")
    collector, registry = exporter(log, from_start=True)
    assert collector.poll() == 8
    responses = "nginx_upstream_responses_total"
    assert sample(registry, responses, upstream="checkout", backend="v1", code="200") == 2
    assert sample(registry, responses, upstream="checkout", backend="v1", code="502") == 1
    assert sample(registry, responses, upstream="checkout", backend="v2", code="200") == 1
    assert sample(registry, responses, upstream="checkout", backend="v2", code="502") == 1
    duration = "nginx_upstream_response_duration_seconds"
    assert sample(registry, f"{duration}_count", upstream="checkout", backend="v1") == 3
    assert sample(registry, f"{duration}_sum", upstream="checkout", backend="v2") == 0.003
    skipped = "nginx_access_log_lines_skipped_total"
    assert sample(registry, skipped, reason="no live server") == 2
    assert sample(registry, skipped, reason="not proxied") == 1
    assert sample(registry, skipped, reason="other upstream") == 1
    assert sample(registry, skipped, reason="not the trimtab log format") == 1


def test_the_log_is_followed_across_partial_lines_rotation_and_truncation(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    line = RECORDED[0] + "\n"
    log.write_text(line)
    collector, registry = exporter(log)  # starts at the end: history is not counted again
    ok = {"upstream": "checkout", "backend": "v1", "code": "200"}
    assert collector.poll() == 0
    with log.open("a") as stream:
        stream.write(line + line[:40])
    assert collector.poll() == 1  # the partial line waits for its end
    with log.open("a") as stream:
        stream.write(line[40:])
    assert collector.poll() == 1
    log.rename(tmp_path / "access.log.1")  # logrotate: a new file at the path
    with (tmp_path / "access.log.1").open("a") as stream:
        stream.write(line)  # written by NGINX to the old file before it reopened
    log.write_text(line * 3)
    assert collector.poll() == 4
    log.write_text(line)  # copytruncate: the same file, shorter
    assert collector.poll() == 1
    assert sample(registry, "nginx_upstream_responses_total", **ok) == 7
