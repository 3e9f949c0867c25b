"""The ``haproxy`` traffic adapter: server weights over HAProxy's runtime API, never a reload.

:class:`HAProxyAdapter` implements :class:`~trimtab.slo.ports.TrafficAdapter` for one HAProxy
backend (``route: {haproxy: {socket, backend, servers}}``)::

    route:
      haproxy:
        socket: /run/haproxy/admin.sock        # or tcp://127.0.0.1:9999 (a `stats socket`)
        backend: checkout                      # the HAProxy backend holding the servers
        servers: {v1: [app1], v2: [app2, app3]}  # trimtab backend -> HAProxy server names

It sends ``set server <backend>/<server> weight <n>`` and reads ``get weight <backend>/<server>``
(``N (initial M)``) on the stats socket, which must be ``level admin``. HAProxy applies a
weight to the next request it balances: there is nothing to reload and nothing to wait for.

What a caller may rely on:

- **Exact translation.** HAProxy weighs each server 0–256. Percents become a total of
  :data:`MAX_WEIGHT` × (the fewest servers any backend of the route has) by
  :func:`~trimtab.slo.traffic.to_scale`; each backend's share is then split as evenly as
  integers allow among its servers (the first servers in the route's list get the odd units),
  so no server exceeds 256. Reading back sums each backend's servers and applies
  :func:`~trimtab.slo.traffic.from_scale`: the sums are exactly what ``to_scale`` produced and
  the total is at least 100, so ``percent -> HAProxy -> percent`` gives back exactly the
  percents for every valid weights. A drained backend has every server at exactly 0.
- **Validation first.** :meth:`~HAProxyAdapter.set_weights` raises
  :class:`~trimtab.slo.traffic.WeightsError` for weights that are not integer percents summing
  to 100 over exactly the route's backends, and then nothing is sent.
- **One change, one connection, increases first.** A change reads the servers' weights, then
  sends every ``set server`` whose weight differs on one connection, separated by ``;``
  (several connections only if the commands exceed :data:`MAX_LINE` bytes). Raised weights go
  before lowered ones: HAProxy's ``roundrobin`` re-places a server whose weight changed against
  the backend's total at that instant, and lowering a server first shrinks that total and
  pushes the server into the next round, where it can wait hundreds of requests (measured on
  2.6: 0 of 400 requests at 30 %). Raising first, the split served matches the weights within
  half a point from the first requests. Setting the weights HAProxy already holds sends nothing.
- **Every answer is checked; a partial change is undone.** HAProxy answers each command with
  an empty line on success and text on error. If any server refused (or the answers stop
  short), the servers of the change that may have moved are put back to the weights read
  before, and the error is raised: traffic is as it was. Only if putting back fails too does
  the error say the weights may be partly changed (the controller re-verifies before acting).
- **Names are checked again.** Every backend, HAProxy backend and server name is checked
  with :mod:`trimtab.slo.names` in the constructor (``ValueError``), whatever validated the
  route before: a name can never carry ``;``, a space, a newline or a ``#`` into a command.
- **HAProxy's running weights are the truth.** HAProxy starts from the weights in its
  configuration (or its ``server-state-file``); trimtab reads them and never overwrites them
  on its own. ``initial`` is validated (a ``WeightsError`` at construction) but never written,
  and ``create`` has no effect: this adapter changes weights only in ``set_weights``. When
  every server of the route is at weight 0 (no traffic at all, which percents cannot
  express), :meth:`~HAProxyAdapter.get_weights` raises
  :class:`~trimtab.slo.traffic.PermanentTrafficError` rather than guess: a person drained them.
- **Short timeouts.** Each connection gets ``timeout`` seconds (default
  :data:`DEFAULT_TIMEOUT`) to connect and to answer; HAProxy answers in microseconds.

Errors by cause, retriability in the type:

- :class:`~trimtab.slo.traffic.TransientTrafficError`: no socket at the path, connection
  refused or reset, a timeout, answers cut short. That is HAProxy stopped or restarting (its
  unix socket stays behind, refusing, when it exits; it is re-created at start). If it
  persists, check ``socket`` in the route.
- :class:`~trimtab.slo.traffic.PermanentTrafficError`: permission denied on the socket file,
  a path that is not a socket, and every refusal HAProxy answers — ``No such server.`` or
  ``No such backend.`` (the route does not match HAProxy's configuration), ``Permission
  denied`` (a stats socket below ``level admin``), a static balancing algorithm (``static-rr``,
  ``first``, hashing: weights cannot change at run time). Retrying changes none of these.

Verification is HAProxy itself: :meth:`~HAProxyAdapter.verify` is VERIFIED when every server
of the route holds exactly the weight the translation of the weights gives it, PENDING
otherwise. It covers weights only: a server that is down or in maintenance keeps its weight.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from trimtab.slo.names import check_backend, check_proxy_name
from trimtab.slo.ports import Verification, Weights
from trimtab.slo.routes import HAProxyRoute
from trimtab.slo.traffic import (
    PermanentTrafficError,
    TrafficError,
    TransientTrafficError,
    from_scale,
    to_scale,
    validate_weights,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_LINE",
    "MAX_WEIGHT",
    "HAProxyAdapter",
    "Refusal",
    "backend_weights",
    "changes",
    "parse_weight",
    "render_get",
    "render_set",
    "server_weights",
    "split_answers",
]

MAX_WEIGHT = 256
"""The largest weight HAProxy gives a server."""
DEFAULT_TIMEOUT = 2.0
"""Seconds to connect and to be answered, per connection."""
MAX_LINE = 8 * 1024
"""Bytes of commands sent on one connection: HAProxy reads a command line into one buffer of
``tune.bufsize`` (16 KiB by default); half of it leaves room for what HAProxy adds."""
MAX_ANSWER = 1024 * 1024  # far more than any answer to our commands
_UNIX_PATH_MAX = 107  # bytes of a unix socket path on Linux, without the final NUL
_WEIGHT_ANSWER = re.compile(r"(\d+) \(initial (\d+)\)")
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EAGAIN,
        errno.EINTR,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EADDRNOTAVAIL,
    }
)
# What HAProxy answers, and what a person does about it.
_HINTS = (
    ("No such server", "the route names a server its HAProxy backend does not have"),
    ("No such backend", "HAProxy has no backend of the route's name"),
    ("Permission denied", "the stats socket must be `level admin` to change weights"),
    (
        "static LB algorithm",
        "the backend balances with a static algorithm, whose weights cannot change at run "
        "time: use `balance roundrobin` (or leastconn)",
    ),
)


# --------------------------------------------------------------------- pure: scale and text


def server_weights(
    weights: Mapping[str, int], servers: Mapping[str, Sequence[str]]
) -> dict[str, int]:
    """Valid percent ``weights`` as HAProxy weights per server name (see the module docstring).

    ``servers`` maps each backend of ``weights`` to its HAProxy servers (at least one each).
    """
    total = MAX_WEIGHT * min(len(names) for names in servers.values())
    scaled = to_scale(weights, total)
    out: dict[str, int] = {}
    for backend, names in servers.items():
        share, odd = divmod(scaled[backend], len(names))
        for i, name in enumerate(names):
            out[name] = share + (1 if i < odd else 0)
    return out


def backend_weights(
    native: Mapping[str, int], servers: Mapping[str, Sequence[str]]
) -> dict[str, int]:
    """HAProxy weights per server name as the sum per backend (HAProxy's scale, not percents)."""
    return {backend: sum(native[name] for name in names) for backend, names in servers.items()}


def changes(current: Mapping[str, int], wanted: Mapping[str, int]) -> list[tuple[str, int]]:
    """``(server, weight)`` to send to go from ``current`` to ``wanted``: raised weights first,
    then lowered ones, each group in ``wanted``'s order; servers already right are left out."""
    raised = [(s, w) for s, w in wanted.items() if w > current.get(s, 0)]
    lowered = [(s, w) for s, w in wanted.items() if w < current.get(s, 0)]
    return raised + lowered


def render_set(backend: str, server: str, weight: int) -> str:
    """The runtime API command setting one server's weight."""
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
        raise ValueError(f"an HAProxy weight is an integer from 0 to {MAX_WEIGHT}, not {weight!r}")
    return f"set server {check_proxy_name(backend)}/{check_proxy_name(server)} weight {weight:d}"


def render_get(backend: str, server: str) -> str:
    """The runtime API command reading one server's weight."""
    return f"get weight {check_proxy_name(backend)}/{check_proxy_name(server)}"


def split_answers(text: str) -> list[str]:
    """HAProxy's output for ``;``-separated commands, one answer per command, in order.

    HAProxy ends each command's output with an empty line and never emits an empty line
    inside one, so a success with nothing to say is ``""``. Text after the last empty line (a
    few error messages lack it, and a connection may be cut) is one more answer.
    """
    *lines, tail = text.split("\n")
    answers: list[str] = []
    pending: list[str] = []
    for line in lines:
        if line:
            pending.append(line)
        else:
            answers.append("\n".join(pending))
            pending = []
    if tail:
        pending.append(tail)
    if pending:
        answers.append("\n".join(pending))
    return answers


class Refusal(Exception):
    """HAProxy answered a command with an error (``No such server.``, ``Permission denied``…)."""

    def __init__(self, command: str, answer: str) -> None:
        super().__init__(f"{answer.strip()!r} to {command!r}")
        self.command = command
        self.answer = answer.strip()

    @property
    def hint(self) -> str:
        """What the answer means for a person, or ``"unexpected answer"``."""
        for text, hint in _HINTS:
            if text in self.answer:
                return hint
        return "unexpected answer"


def parse_weight(command: str, answer: str) -> int:
    """The current weight in ``get weight``'s answer ``N (initial M)``; :class:`Refusal` else."""
    found = _WEIGHT_ANSWER.fullmatch(answer.strip())
    if found is None:
        raise Refusal(command, answer)
    return int(found.group(1))


# ------------------------------------------------------------------------------- the adapter


@dataclass(frozen=True)
class _Unix:
    path: str

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class _Tcp:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def _address(text: str) -> _Unix | _Tcp:
    if not text.startswith("tcp://"):
        if not text or any(ch.isspace() or ch == "\0" for ch in text):
            raise ValueError(f"socket path {text!r}: expected a path without spaces")
        if len(os.fsencode(text)) > _UNIX_PATH_MAX:
            raise ValueError(
                f"socket path {text!r} is longer than a unix socket path may be "
                f"({_UNIX_PATH_MAX} bytes)"
            )
        return _Unix(text)
    host, sep, port = text.removeprefix("tcp://").rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"socket {text!r}: expected tcp://host:port such as tcp://127.0.0.1:9999")
    return _Tcp(host, int(port))


class HAProxyAdapter:
    """A :class:`~trimtab.slo.ports.TrafficAdapter` over one HAProxy backend's server weights.

    ``backends`` are the route's backends (a Rollout's stable and canary, a Balance's pool); the
    route must map exactly these to HAProxy servers, each server once. ``initial`` is validated
    and otherwise unused, ``create`` has no effect (see the module docstring). Invalid names or
    backends raise ``ValueError`` here. Nothing connects until the first call. Thread-safe.
    """

    def __init__(
        self,
        route: HAProxyRoute,
        backends: Sequence[str],
        *,
        initial: Weights | None = None,
        create: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        names = list(backends)
        if not names:
            raise ValueError("the haproxy adapter needs at least one backend")
        if len(set(names)) != len(names):
            raise ValueError(f"backends must be distinct, not {names}")
        for name in names:
            check_backend(name)
        if set(route.servers) != set(names):
            raise ValueError(
                f"the haproxy route maps backends {sorted(route.servers)}, not the route's "
                f"backends {sorted(names)}"
            )
        servers: dict[str, tuple[str, ...]] = {}
        seen: set[str] = set()
        for backend in names:
            listed = route.servers[backend]
            if not listed:
                raise ValueError(f"backend {backend!r} maps no HAProxy server")
            for server in listed:
                try:
                    check_proxy_name(server)
                except ValueError as exc:
                    raise ValueError(f"HAProxy server of backend {backend!r}: {exc}") from None
                if server in seen:
                    raise ValueError(f"HAProxy server {server!r} is listed more than once")
                seen.add(server)
            servers[backend] = tuple(listed)
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.address = _address(route.socket)
        try:
            self.backend = check_proxy_name(route.backend)
        except ValueError as exc:
            raise ValueError(f"HAProxy backend: {exc}") from None
        self.servers: dict[str, tuple[str, ...]] = servers
        self.backends: tuple[str, ...] = tuple(names)
        self.initial = validate_weights(initial, names) if initial is not None else None
        self.create = create
        self.timeout = timeout
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"HAProxyAdapter({str(self.address)!r}, backend={self.backend!r}, "
            f"servers={ {b: list(s) for b, s in self.servers.items()}!r})"
        )

    # ------------------------------------------------------------------------------- the port

    def get_weights(self) -> Weights:
        """The route's weights as HAProxy holds them, in percents."""
        with self._lock:
            native = self._read()
        summed = backend_weights(native, self.servers)
        if not any(summed.values()):
            raise PermanentTrafficError(
                f"{self._where}: every server of the route is at weight 0 "
                f"({_show(native)}): HAProxy sends this backend no traffic at all, which "
                "percent weights cannot express; set the weights by hand or with trimtab"
            )
        return from_scale(summed)

    def set_weights(self, weights: Weights) -> None:
        """Set every server's weight for ``weights``: all of them, or none (see the module)."""
        wanted = server_weights(validate_weights(weights, self.backends), self.servers)
        with self._lock:
            before = self._read()
            todo = changes(before, wanted)
            moved: list[tuple[str, int]] = []  # sent, and not refused: may have moved
            for batch in self._batches(todo):
                commands = [render_set(self.backend, s, w) for s, w in batch]
                try:
                    connection = self._open()
                except TrafficError as exc:
                    if moved:
                        raise self._undo(moved, before, exc) from exc
                    raise  # nothing was sent
                try:
                    answers = self._exchange(connection, commands, complete=False)
                except TrafficError as exc:
                    raise self._undo([*moved, *batch], before, exc) from exc
                refused = [Refusal(c, a) for c, a in zip(commands, answers, strict=False) if a]
                moved += [item for item, a in zip(batch, answers, strict=False) if not a]
                moved += batch[len(answers) :]  # unanswered: may have been applied
                if refused:
                    raise self._undo(moved, before, self._refused(refused))
                if len(answers) < len(commands):
                    raise self._undo(
                        moved,
                        before,
                        TransientTrafficError(
                            f"{self._where}: HAProxy answered {len(answers)} of "
                            f"{len(commands)} commands before closing the connection"
                        ),
                    )

    def verify(self, weights: Weights) -> Verification:
        """VERIFIED when every server holds exactly the translation of ``weights``."""
        wanted = server_weights(validate_weights(weights, self.backends), self.servers)
        with self._lock:
            native = self._read()
        return Verification.VERIFIED if native == wanted else Verification.PENDING

    # ------------------------------------------------------------------------------ internals

    @property
    def _where(self) -> str:
        return f"haproxy {self.address} backend {self.backend!r}"

    def _names(self) -> Iterator[str]:
        for names in self.servers.values():
            yield from names

    def _read(self) -> dict[str, int]:
        """Every server's current weight, by server name."""
        out: dict[str, int] = {}
        for batch in self._batches([(name, 0) for name in self._names()]):
            commands = [render_get(self.backend, s) for s, _ in batch]
            answers = self._exchange(self._open(), commands, complete=True)
            try:
                for (server, _), command, answer in zip(batch, commands, answers, strict=True):
                    out[server] = parse_weight(command, answer)
            except Refusal as refusal:
                raise self._refused([refusal]) from None
        return out

    def _batches(self, items: Sequence[tuple[str, int]]) -> Iterator[list[tuple[str, int]]]:
        """``items`` in groups whose commands fit in :data:`MAX_LINE` bytes."""
        batch: list[tuple[str, int]] = []
        size = 0
        for item in items:
            length = len(render_set(self.backend, item[0], MAX_WEIGHT)) + 1
            if batch and size + length > MAX_LINE:
                yield batch
                batch, size = [], 0
            batch.append(item)
            size += length
        if batch:
            yield batch

    def _undo(
        self, moved: Sequence[tuple[str, int]], before: Mapping[str, int], error: TrafficError
    ) -> TrafficError:
        """Put the ``moved`` servers back to ``before``; ``error`` saying how that went."""
        back = changes(dict(moved), {s: before[s] for s, _ in moved})
        try:
            for batch in self._batches(back):
                commands = [render_set(self.backend, s, w) for s, w in batch]
                answers = self._exchange(self._open(), commands, complete=True)
                refused = [Refusal(c, a) for c, a in zip(commands, answers, strict=True) if a]
                if refused:
                    raise self._refused(refused)
        except TrafficError as failed:
            return type(error)(
                f"{error}; putting back the servers already changed failed too ({failed}): "
                "the weights may be partly changed"
            )
        if not back:
            return error
        return type(error)(f"{error}; the servers already changed were put back")

    def _refused(self, refusals: Sequence[Refusal]) -> PermanentTrafficError:
        said = "; ".join(
            f"{(r.answer.splitlines() or ['an empty answer'])[0]!r} to {r.command!r} ({r.hint})"
            for r in refusals
        )
        return PermanentTrafficError(f"{self._where}: HAProxy refused: {said}")

    def _open(self) -> socket.socket:
        """A connection to the stats socket; a :class:`TrafficError` by cause if none."""
        address = self.address
        try:
            if isinstance(address, _Tcp):
                return socket.create_connection((address.host, address.port), timeout=self.timeout)
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                connection.settimeout(self.timeout)
                connection.connect(address.path)
            except BaseException:
                connection.close()
                raise
            return connection
        except OSError as exc:
            raise self._failure(exc) from exc

    def _exchange(
        self, connection: socket.socket, commands: Sequence[str], *, complete: bool
    ) -> list[str]:
        """Send ``commands`` on ``connection`` (and close it); HAProxy's answer to each.

        With ``complete``, fewer answers than commands is a :class:`TransientTrafficError`;
        otherwise the caller decides (a change needs to know which commands were answered).
        """
        with connection:
            line = ";".join(commands) + "\n"
            if any(ch in command for command in commands for ch in ";\n\r\\#\0"):
                raise ValueError(f"refusing to send {line!r}: a name reached a command unchecked")
            text = self._receive(connection, line.encode("ascii"))
        answers = split_answers(text)
        if len(answers) > len(commands):
            raise PermanentTrafficError(
                f"{self._where}: {len(answers)} answers to {len(commands)} commands "
                f"({text[:200]!r}): is {self.address} an HAProxy stats socket?"
            )
        if complete and len(answers) < len(commands):
            raise TransientTrafficError(
                f"{self._where}: HAProxy answered {len(answers)} of {len(commands)} commands "
                "before closing the connection"
            )
        return answers

    def _receive(self, connection: socket.socket, payload: bytes) -> str:
        """Send ``payload``; everything HAProxy answers until it closes, within the timeout."""
        deadline = time.monotonic() + self.timeout
        chunks: list[bytes] = []
        size = 0
        try:
            connection.sendall(payload)
            while chunk := self._recv(connection, deadline):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ANSWER:
                    raise PermanentTrafficError(
                        f"{self._where}: an answer longer than {MAX_ANSWER} bytes: is "
                        f"{self.address} an HAProxy stats socket?"
                    )
        except OSError as exc:
            raise self._failure(exc) from exc
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise PermanentTrafficError(
                f"{self._where}: the answer is not text: is {self.address} a stats socket?"
            ) from None

    @staticmethod
    def _recv(connection: socket.socket, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete answer in time")
        connection.settimeout(left)
        return connection.recv(65536)

    def _failure(self, exc: OSError) -> TrafficError:
        """A connection failure as an error by cause (see the module docstring)."""
        reason = exc.strerror or str(exc) or type(exc).__name__
        where = self._where
        if isinstance(exc, TimeoutError):
            return TransientTrafficError(
                f"{where}: no answer within {self.timeout:g}s: HAProxy is overloaded or stuck"
            )
        if isinstance(exc, socket.gaierror):
            return TransientTrafficError(f"{where}: cannot resolve the socket's host: {reason}")
        if isinstance(self.address, _Unix):
            if exc.errno == errno.ENOENT:
                return TransientTrafficError(
                    f"{where}: no socket at {self.address}: HAProxy is not running or is "
                    "restarting (if this persists, check `socket` in the route)"
                )
            if exc.errno == errno.ECONNREFUSED and not _is_socket(self.address.path):
                return PermanentTrafficError(
                    f"{where}: {self.address} is not a unix socket: check `socket` in the route"
                )
            if exc.errno == errno.ECONNREFUSED:
                return TransientTrafficError(
                    f"{where}: connection refused: HAProxy is not running or is restarting "
                    "(its socket file stays behind when it stops)"
                )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return PermanentTrafficError(
                f"{where}: permission denied: trimtab's user may not use the stats socket "
                "(see its owner and mode, e.g. `stats socket PATH mode 660 group trimtab`)"
            )
        if exc.errno in _TRANSIENT_ERRNOS:
            return TransientTrafficError(f"{where}: {reason}")
        return PermanentTrafficError(f"{where}: cannot use the stats socket: {reason}")


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return True  # gone meanwhile: nothing says it is not one


def _show(native: Mapping[str, int]) -> str:
    return ", ".join(f"{name}={weight}" for name, weight in native.items())
