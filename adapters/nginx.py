"""The ``nginx`` traffic adapter: an upstream include trimtab owns, tested, then reloaded.

:class:`NginxAdapter` implements :class:`~trimtab.slo.ports.TrafficAdapter` for open-source NGINX
(``route: {nginx: {upstreamPath, upstream, servers, test, reload}}``). It owns one file, the
include at ``upstreamPath`` that the main ``nginx.conf`` pulls in inside ``http {}``::

    # Written by trimtab, which owns this file and replaces it whole at every change of weights.
    # ...
    upstream checkout {
        server 10.0.0.1:8080 weight=95;  # v1
        server 10.0.0.2:8080 weight=5;  # v2
    }

What a caller may rely on:

- **Exact weights.** NGINX's ``weight=`` is an integer of at least 1, so a backend at 0 % has
  every server marked ``down`` (it takes no traffic) and reads back as 0. A backend with several
  servers shares its percent equally among them: each server weighs
  ``percent × M ÷ (servers of its backend)``, where ``M`` is the least common multiple of the
  backends' server counts (1 when every backend has one server, so the file shows the percents
  themselves). Every division is exact, each backend's servers sum to exactly ``percent × M``,
  and reading the file back (sum per backend, then :func:`~trimtab.slo.traffic.from_scale`)
  gives back exactly the percents written, for every valid weights. With one worker process
  NGINX's smooth weighted round robin serves those proportions exactly.
- **Stable text.** The same weights always render the same bytes (backends sorted by name,
  their servers in the route's order). Setting the weights the file already holds rewrites
  nothing and does not reload NGINX (unless a reload is still owed; see below).
- **Order of a change.** Weights are validated first (invalid → :class:`WeightsError`,
  nothing written). The new text goes to a temporary file in the same directory, is fsync'd and
  renamed over the include; then ``route.test`` runs (``nginx -t``); then ``route.reload``
  (``nginx -s reload``). Both are argv lists run without a shell, each within ``timeout``
  seconds. If either fails, the previous file (byte for byte, or no file) is put back
  atomically before the error is raised, so the include holds what NGINX serves (after a
  reload that timed out, the restored file is reloaded before anything is verified).
- **Errors by cause** (retriability is in the type):
  :class:`~trimtab.slo.traffic.PermanentTrafficError` — NGINX rejected the configuration
  (``nginx -t`` failed; its message is in the error), the command cannot be run, the reload
  failed for any reason other than NGINX not running (permissions, a ``systemctl`` refusal:
  a person must look), NGINX never applied a reload it accepted, the include cannot be written
  (permissions, read-only file system, missing directory), or the file was broken by hand.
  :class:`~trimtab.slo.traffic.TransientTrafficError` — NGINX is not running (no pid file, a
  stale pid: "proxy down"; the restored file is what it loads when it starts), a command timed
  out, or an I/O error that may pass (disk full).
- **A file a person broke is reported, not repaired**: text that is not one ``upstream`` block of
  ``server ADDRESS [weight=N] [down];`` lines over exactly the route's servers, or in which no
  server takes traffic, makes :meth:`~NginxAdapter.get_weights` and
  :meth:`~NginxAdapter.verify` raise ``PermanentTrafficError`` naming the line. trimtab replaces
  it at the next change of weights. A hand edit that keeps the format is read as it is (drift,
  which the controller reports and holds on); weights that are not whole percents are rounded,
  except that a backend still taking traffic never reads as 0.
- **A missing file** starts from ``initial`` like the ``file`` adapter: written (unless
  ``create=False``, for dry runs) and returned; NGINX loads it at its next start or reload.
- **Names are checked again** here (defence in depth behind the route model): the upstream name,
  every backend and every ``host:port`` must match :mod:`trimtab.slo.names`, so nothing like
  ``a;} server evil:80`` can reach the file; a ``ValueError`` says which.

What verification means for NGINX. Open-source NGINX has no API to read the weights it runs
with: what trimtab has is the file NGINX loads, the exit status of ``nginx -t`` and of the
reload, and the process table. ``nginx -s reload`` returns once it has *signalled* the master;
the master then loads the configuration, starts new workers and — measured on NGINX 1.22, about
100 ms later (it sleeps 100 ms before retiring them) — tells the old workers to stop accepting.
Until then new connections still reach old workers, with the old weights. So
:meth:`~NginxAdapter.verify` answers VERIFIED when the file holds the weights **and** every
reload this adapter issued has been applied: with ``pid_file`` (the ``pid`` of the main
configuration) that is observed in ``/proc`` — every worker that was accepting before the reload
has exited or is "shutting down" (an old worker still accepting after ``timeout`` seconds means
the master refused the configuration: ``PermanentTrafficError``); without it, the adapter can only
wait ``settle`` seconds after the reload. A previous trimtab process that died between renaming
the file and reloading leaves a marker (``.<file>.trimtab-reload-pending`` beside the include);
the next verify (or a set of the same weights) runs the test and the reload again, so a restart
never verifies weights NGINX was not told to load. Verification does not check that NGINX is
running; a stopped NGINX loads the file when it starts.

Hostnames in ``servers`` resolve when NGINX loads the configuration; a name that resolves to
several addresses becomes several servers with the same weight, which changes the split: give
IP addresses, or names that resolve to one address each.

Metrics: open-source NGINX has no per-upstream statistics API; :mod:`.nginxlog` reads per-backend
figures from the access log.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from trimtab.adapters.ownedfile import OwnedFile, fsync_directory
from trimtab.slo.names import check_backend, check_host_port, check_proxy_name
from trimtab.slo.ports import Verification, Weights
from trimtab.slo.routes import NginxRoute
from trimtab.slo.traffic import (
    PermanentTrafficError,
    TrafficError,
    TransientTrafficError,
    WeightsError,
    from_scale,
    validate_weights,
)

__all__ = [
    "Completed",
    "NginxAdapter",
    "Runner",
    "parse",
    "render",
    "run_command",
    "server_weights",
]

log = logging.getLogger(__name__)

MAX_BYTES = 1024 * 1024  # an include of thousands of servers is far smaller; bigger is not ours
MAX_WEIGHT = 10**9  # a sanity bound when reading; trimtab writes at most 100 × M
_OUTPUT_SHOWN = 1500  # characters of a command's output quoted in an error
# ``nginx -s reload`` when no master runs: the pid file is missing (ENOENT), names a process
# that is gone (ESRCH), or is still empty because NGINX is starting.
_NOT_RUNNING_ERRNOS = frozenset({errno.ENOENT, errno.ESRCH})
_ERRNO_IN_MESSAGE = re.compile(r"\((\d+): ")


# --------------------------------------------------------------------------- the translation


def _multiplier(servers: Mapping[str, Sequence[str]]) -> int:
    return math.lcm(*(len(addresses) for addresses in servers.values()))


def server_weights(
    servers: Mapping[str, Sequence[str]], weights: Mapping[str, int]
) -> dict[str, int]:
    """NGINX weight per server address for percent ``weights`` (0 means ``down``).

    Each server of a backend gets ``percent × M ÷ len(servers[backend])`` with ``M`` the least
    common multiple of the server counts: always a whole number, at least 1 for a backend above
    0 %, and each backend's servers sum to ``percent × M``.
    """
    multiplier = _multiplier(servers)
    return {
        address: weights[backend] * multiplier // len(addresses)
        for backend, addresses in servers.items()
        for address in addresses
    }


def render(upstream: str, servers: Mapping[str, Sequence[str]], weights: Mapping[str, int]) -> str:
    """The include's text: one ``upstream`` block; the same arguments give the same bytes.

    ``weights`` must be valid percents over exactly the backends of ``servers`` and the names
    checked (:class:`NginxAdapter` does both).
    """
    native = server_weights(servers, weights)
    multiplier = _multiplier(servers)
    shown = " ".join(f"{backend}={weights[backend]}" for backend in sorted(servers))
    lines = [
        "# Written by trimtab, which owns this file and replaces it whole at every change of",
        "# weights. Do not edit: a change made here is reported as drift and overwritten.",
        f"# Weights in percent: {shown}. Each server weighs its backend's percent x {multiplier}",
        "# divided by its backend's server count, so shares are exact; 0 percent is `down`.",
        f"upstream {upstream} {{",
    ]
    for backend in sorted(servers):
        for address in servers[backend]:
            weight = native[address]
            setting = f"weight={weight}" if weight > 0 else "down"
            lines.append(f"    server {address} {setting};  # {backend}")
    lines.append("}")
    return "\n".join(lines) + "\n"


_WORD = re.compile(r"[A-Za-z0-9_.:\[\]=-]+")
_WEIGHT = re.compile(r"weight=([0-9]+)")


def _tokens(text: str) -> Iterator[tuple[str, int]]:
    """(token, line) pairs of NGINX's syntax as far as trimtab's file uses it."""
    index, line, size = 0, 1, len(text)
    while index < size:
        char = text[index]
        if char == "\n":
            line += 1
            index += 1
        elif char in " \t\r":
            index += 1
        elif char == "#" and (index == 0 or text[index - 1] in " \t\r\n{};"):
            end = text.find("\n", index)
            index = size if end < 0 else end
        elif char in "{};":
            yield char, line
            index += 1
        else:
            match = _WORD.match(text, index)
            if match is None:
                raise ValueError(f"line {line}: unexpected character {char!r}")
            yield match.group(), line
            index = match.end()


def parse(text: str, upstream: str, servers: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """NGINX weight per server address (0 for ``down``) from an include's text.

    Accepts what :func:`render` writes and the same block edited by hand (spacing, comments,
    parameter order). Raises ``ValueError`` naming the line for anything else: another
    directive or parameter, another upstream name, a server not in the route, a missing or
    repeated one, a weight that is not a positive integer.
    """
    known = {address for addresses in servers.values() for address in addresses}
    tokens = _tokens(text)

    def take(what: str) -> tuple[str, int]:
        found = next(tokens, None)
        if found is None:
            raise ValueError(f"the file ends where {what} was expected")
        return found

    word, line = take("'upstream'")
    if word != "upstream":
        raise ValueError(f"line {line}: expected 'upstream {upstream} {{', not {word!r}")
    name, line = take("the upstream's name")
    if name != upstream:
        raise ValueError(f"line {line}: the upstream is named {name!r}, not {upstream!r}")
    brace, line = take("'{'")
    if brace != "{":
        raise ValueError(f"line {line}: expected '{{' after 'upstream {upstream}'")
    weights: dict[str, int] = {}
    while True:
        word, line = take("'server' or '}'")
        if word == "}":
            break
        if word != "server":
            raise ValueError(
                f"line {line}: unexpected {word!r}: trimtab's upstream holds only 'server' lines"
            )
        address, line = take("a server address")
        if address not in known:
            raise ValueError(f"line {line}: server {address!r} is not one of the route's servers")
        if address in weights:
            raise ValueError(f"line {line}: server {address!r} appears more than once")
        weight, down = 1, False  # NGINX's default weight is 1
        seen: set[str] = set()
        while (param := take("';'"))[0] != ";":
            value, line = param
            if value in ("{", "}"):
                raise ValueError(
                    f"line {line}: expected ';' after server {address!r}, not {value!r}"
                )
            key = value.partition("=")[0]
            if key in seen:
                raise ValueError(f"line {line}: {key!r} given twice for server {address!r}")
            seen.add(key)
            if value == "down":
                down = True
            elif (match := _WEIGHT.fullmatch(value)) and 1 <= int(match[1]) <= MAX_WEIGHT:
                weight = int(match[1])
            else:
                raise ValueError(
                    f"line {line}: unexpected parameter {value!r} for server {address!r}: "
                    f"trimtab writes only 'weight=N' (1 to {MAX_WEIGHT}) and 'down'"
                )
        weights[address] = 0 if down else weight
    extra = next(tokens, None)
    if extra is not None:
        raise ValueError(f"line {extra[1]}: unexpected {extra[0]!r} after the upstream block")
    missing = [address for address in sorted(known) if address not in weights]
    if missing:
        raise ValueError(f"the route's server(s) {', '.join(missing)} are missing")
    return weights


def _percents(native: Mapping[str, int], servers: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Per-server NGINX weights as percents per backend (``ValueError`` if not expressible)."""
    sums = {backend: sum(native[a] for a in addresses) for backend, addresses in servers.items()}
    try:
        percents = from_scale(sums)
    except WeightsError as error:
        raise ValueError(f"every server is down: {error}") from None
    lost = sorted(b for b in sums if sums[b] > 0 and percents[b] == 0)
    if lost:
        raise ValueError(
            f"backend(s) {', '.join(lost)} take traffic (weight {sums[lost[0]]} of "
            f"{sum(sums.values())}) but less than half a percent, which trimtab cannot express: "
            "mark their servers down or give them more"
        )
    return percents


# ----------------------------------------------------------------------------- the commands


@dataclass(frozen=True)
class Completed:
    """What a command did: its exit status and its output (stdout and stderr together)."""

    returncode: int
    output: str


class Runner(Protocol):
    """Runs an argv (never a shell string). Raises ``TimeoutError`` when it takes longer than
    ``timeout`` seconds (the command is killed) and ``OSError`` when it cannot be started."""

    def __call__(self, argv: Sequence[str], timeout: float) -> Completed: ...


def run_command(argv: Sequence[str], timeout: float) -> Completed:
    """The default :class:`Runner`: :func:`subprocess.run` with no shell and no stdin."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
            close_fds=True,
        )
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"did not finish within {timeout:g} s") from None
    return Completed(done.returncode, done.stdout.decode("utf-8", errors="replace"))


def _shown(output: str) -> str:
    text = " / ".join(line.strip() for line in output.strip().splitlines() if line.strip())
    return text if len(text) <= _OUTPUT_SHOWN else "…" + text[-_OUTPUT_SHOWN:]


def _argv(argv: Sequence[str]) -> str:
    return " ".join(argv)


# -------------------------------------------------------------------------- the process table


@dataclass(frozen=True)
class _Process:
    pid: int
    start: int  # clock ticks after boot: tells a process from a later one with the same PID


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent PID, state, start time) of a process from ``/proc``, or ``None`` if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def _title(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()


def _children(master: int) -> list[int]:
    try:
        listed = Path(f"/proc/{master}/task/{master}/children").read_text()
        return [int(pid) for pid in listed.split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: scan the table
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (info := _stat(int(entry.name))) and info[0] == master:
                found.append(int(entry.name))
        return found


def _accepting(pid: int, start: int | None = None) -> bool:
    """True when ``pid`` is a live NGINX worker still taking new connections."""
    info = _stat(pid)
    if info is None or info[1] in ("Z", "X") or (start is not None and info[2] != start):
        return False
    title = _title(pid)
    return title.startswith("nginx: worker process") and "shutting down" not in title


def _workers(pid_file: Path) -> frozenset[_Process] | None:
    """The master's workers accepting connections now, or ``None`` if it cannot be seen."""
    try:
        master = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if _stat(master) is None or not _title(master).startswith("nginx: master process"):
        return None  # not visible here (another PID namespace), or not an NGINX master
    found = set()
    for pid in _children(master):
        info = _stat(pid)
        if info is not None and _accepting(pid):
            found.add(_Process(pid, info[2]))
    return frozenset(found)


# ------------------------------------------------------------------------------ the adapter


class _Missing(Exception):
    """The include does not exist (yet)."""


class NginxAdapter:
    """A :class:`~trimtab.slo.ports.TrafficAdapter` over an NGINX upstream include it owns.

    ``backends`` are the route's backends; ``route.servers`` must map exactly those. ``initial``
    is where a missing file starts (see the module docstring); ``create=False`` writes nothing
    and runs nothing on its own (dry runs). ``pid_file`` is the main configuration's ``pid``
    path, for observing that a reload was applied; without it verification waits ``settle``
    seconds after a reload. ``run`` runs the test and reload argvs (injectable for tests), each
    within ``timeout`` seconds. Invalid names, addresses, backends or ``initial`` raise
    ``ValueError`` here. Nothing touches the file system until the first call. Thread-safe.
    """

    def __init__(
        self,
        route: NginxRoute,
        backends: Sequence[str],
        *,
        initial: Weights | None = None,
        create: bool = True,
        pid_file: str | os.PathLike[str] | None = None,
        run: Runner = run_command,
        timeout: float = 10.0,
        settle: float = 1.0,
    ) -> None:
        names = list(backends)
        if not names:
            raise ValueError("the nginx adapter needs at least one backend")
        if len(set(names)) != len(names):
            raise ValueError(f"backends must be distinct, not {names}")
        for name in names:
            check_backend(name)
        self.upstream = check_proxy_name(route.upstream)
        servers: dict[str, tuple[str, ...]] = {}
        owner: dict[str, str] = {}
        for backend, addresses in route.servers.items():
            check_backend(backend)
            if not addresses:
                raise ValueError(f"backend {backend!r} needs at least one host:port")
            for address in addresses:
                check_host_port(address)
                if address in owner:
                    raise ValueError(
                        f"server {address!r} is listed twice (under {owner[address]!r} and "
                        f"{backend!r}): each server belongs to one backend, once"
                    )
                owner[address] = backend
            servers[backend] = tuple(addresses)
        if set(servers) != set(names):
            raise ValueError(
                f"the nginx route's servers map backends {sorted(servers)}, but the target's "
                f"backends are {sorted(names)}"
            )
        self.test = _checked_argv("test", route.test)
        self.reload = _checked_argv("reload", route.reload)
        if not (timeout > 0 and settle >= 0):
            raise ValueError(
                f"timeout must be positive and settle not negative: {timeout}, {settle}"
            )
        self.path = Path(route.upstream_path)
        self._file = OwnedFile(
            self.path,
            owner="the nginx adapter",
            what="the upstream include",
            max_bytes=MAX_BYTES,
            too_big="; not the include trimtab writes",
            no_directory="; the nginx adapter creates the include, not its directory",
        )
        self.marker = self.path.with_name(f".{self.path.name}.trimtab-reload-pending")
        self.backends: tuple[str, ...] = tuple(names)
        self.servers: dict[str, tuple[str, ...]] = servers
        self.initial = validate_weights(initial, names) if initial is not None else None
        self.create = create
        self.pid_file = Path(pid_file) if pid_file is not None else None
        self.timeout = timeout
        self.settle = settle
        self._run = run
        self._lock = threading.Lock()
        self._reloaded_at: float | None = None  # monotonic time of this adapter's last reload
        self._retiring: frozenset[_Process] | None = None  # workers that must stop accepting

    def __repr__(self) -> str:
        return f"NginxAdapter({str(self.path)!r}, upstream={self.upstream!r})"

    def render(self, weights: Weights) -> str:
        """The include's text for ``weights`` (validated; ``WeightsError`` otherwise)."""
        return render(self.upstream, self.servers, validate_weights(weights, self.backends))

    # ------------------------------------------------------------------------------ the port

    def get_weights(self) -> Weights:
        """The weights the include holds (or ``initial`` when it does not exist yet)."""
        with self._lock:
            try:
                return self._read_weights()
            except _Missing:
                if self.initial is None:
                    raise PermanentTrafficError(
                        f"{self.path}: the upstream include does not exist, and no initial "
                        "weights were given: create it with the weights traffic starts from"
                    ) from None
                if self.create:
                    self._mark_pending()  # NGINX has not loaded it: the next verify reloads
                    try:
                        self._write(self.render(self.initial).encode())
                    except TrafficError:
                        self._clear_pending()
                        raise
                return dict(self.initial)

    def set_weights(self, weights: Weights) -> None:
        """Write, test and reload; on any failure put the previous file back and raise."""
        text = self.render(weights).encode()
        with self._lock:
            old = self._read_bytes()
            pending = self._is_pending()
            if old == text:
                if pending:  # the file is right, but NGINX may not have been told to load it
                    self._test_and_reload()
                    self._clear_pending()
                return
            self._mark_pending()
            written = False
            try:
                self._write(text)
                written = True
                self._test_and_reload()
            except TrafficError as error:
                if written:
                    self._restore(old, error)
                # A reload that timed out may have been delivered: keep the marker so the next
                # verify reloads the restored file. Otherwise NGINX serves what it served.
                if not pending and not isinstance(error, _Uncertain):
                    self._clear_pending()
                raise
            self._clear_pending()

    def verify(self, weights: Weights) -> Verification:
        """VERIFIED when the include holds ``weights`` and NGINX applied the last reload.

        PENDING while the file holds other weights (or none), while the workers from before this
        adapter's last reload still accept connections (or, without ``pid_file``, for
        ``settle`` seconds after it), and — with ``create=False`` — while a reload may be
        missing. Runs the test and reload itself when a previous process may have died before
        reloading (see the module docstring).
        """
        wanted = validate_weights(weights, self.backends)
        with self._lock:
            try:
                held = self._read_weights()
            except _Missing:
                return Verification.PENDING
            if held != wanted:
                return Verification.PENDING
            if self._is_pending():
                if not self.create:
                    return Verification.PENDING
                self._test_and_reload()
                self._clear_pending()
            return self._applied()

    # ------------------------------------------------------------------------ test and reload

    def _test_and_reload(self) -> None:
        done = self._command("test", self.test)
        if done.returncode != 0:
            raise PermanentTrafficError(
                f"{self.path}: NGINX rejected the configuration (`{_argv(self.test)}` exited "
                f"{done.returncode}): {_shown(done.output)}"
            )
        before = _workers(self.pid_file) if self.pid_file is not None else None
        done = self._command("reload", self.reload)
        if done.returncode != 0:
            raise _reload_error(self.path, self.reload, done)
        self._reloaded_at = time.monotonic()
        self._retiring = before

    def _command(self, kind: str, argv: Sequence[str]) -> Completed:
        try:
            return self._run(argv, self.timeout)
        except TimeoutError as error:
            cls = _Uncertain if kind == "reload" else TransientTrafficError
            raise cls(f"{self.path}: the NGINX {kind} command `{_argv(argv)}` {error}") from None
        except OSError as error:
            raise PermanentTrafficError(
                f"{self.path}: cannot run the NGINX {kind} command `{_argv(argv)}`: "
                f"{error.strerror or error}"
            ) from None

    def _applied(self) -> Verification:
        """Whether the last reload this adapter issued has taken effect."""
        if self._reloaded_at is None:
            return Verification.VERIFIED
        waited = time.monotonic() - self._reloaded_at
        if self._retiring is None:  # no pid file, or the master was not visible: wait instead
            return Verification.VERIFIED if waited >= self.settle else Verification.PENDING
        still = sorted(p.pid for p in self._retiring if _accepting(p.pid, p.start))
        if not still:
            self._retiring = frozenset()
            return Verification.VERIFIED
        if waited > self.timeout:
            raise PermanentTrafficError(
                f"{self.path}: NGINX was told to reload {waited:.0f} s ago, but worker(s) "
                f"{', '.join(map(str, still))} from before still accept connections: the master "
                "probably rejected the configuration; see its error log"
            )
        return Verification.PENDING

    # -------------------------------------------------------------------------------- files

    def _read_weights(self) -> dict[str, int]:
        raw = self._read_bytes()
        if raw is None:
            raise _Missing
        try:
            text = raw.decode("utf-8")
            native = parse(text, self.upstream, self.servers)
            percents = _percents(native, self.servers)
        except ValueError as error:  # UnicodeDecodeError is a ValueError
            raise PermanentTrafficError(
                f"{self.path}: not the upstream include trimtab writes ({error}); trimtab "
                "replaces it at the next change of weights"
            ) from None
        return {backend: percents[backend] for backend in self.backends}

    def _read_bytes(self) -> bytes | None:
        """The include's bytes, ``None`` if missing; refuses symlinks, non-regular, oversized."""
        return self._file.read_bytes()

    def _write(self, data: bytes) -> None:
        """Replace the include atomically (temp file, fsync, rename, fsync the directory)."""
        self._file.write_bytes(data)

    def _restore(self, old: bytes | None, cause: TrafficError) -> None:
        """Put the previous include back (or remove the new one if there was none)."""
        try:
            if old is None:
                self.path.unlink(missing_ok=True)
                fsync_directory(self.path.parent)
            else:
                self._write(old)
        except (OSError, TrafficError) as error:
            raise PermanentTrafficError(
                f"{cause}; and the previous {self.path} could not be put back ({error}): the "
                "file now holds weights NGINX did not load — fix it by hand"
            ) from cause
        log.warning("change not applied, previous file restored: %s", cause)

    def _is_pending(self) -> bool:
        return os.path.lexists(self.marker)

    def _mark_pending(self) -> None:
        """Record, durably and before the include changes, that a reload is owed."""
        self._file.directory()
        try:
            fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            os.close(fd)
            fsync_directory(self.marker.parent)
        except OSError as error:
            self._file.fail("cannot write", error)

    def _clear_pending(self) -> None:
        try:
            self.marker.unlink(missing_ok=True)
        except OSError as error:
            self._file.fail("cannot remove", error)


class _Uncertain(TransientTrafficError):
    """A reload that timed out: NGINX may or may not have been signalled."""


def _reload_error(path: Path, argv: Sequence[str], done: Completed) -> TrafficError:
    """The error for a failed reload, by its cause."""
    output = done.output
    codes = {int(code) for code in _ERRNO_IN_MESSAGE.findall(output)}
    message = (
        f"{path}: reloading NGINX failed (`{_argv(argv)}` exited {done.returncode}): "
        f"{_shown(output)}"
    )
    if codes & _NOT_RUNNING_ERRNOS or "invalid PID number" in output:
        return TransientTrafficError(
            message + "; NGINX is not running — the previous file is back, and NGINX loads it "
            "when it starts"
        )
    return PermanentTrafficError(message + "; the previous file is back")


def _checked_argv(kind: str, argv: Sequence[str]) -> tuple[str, ...]:
    if isinstance(argv, str) or not argv:
        raise ValueError(f"the nginx {kind} command must be a non-empty argv list, not {argv!r}")
    for part in argv:
        if not isinstance(part, str) or not part or "\0" in part:
            raise ValueError(f"the nginx {kind} command has an invalid argument {part!r}")
    return tuple(argv)
