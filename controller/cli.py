"""The ``trimtab`` command line (typer + rich).

Exit codes: 0 success, 1 invalid input or failed check, 2 usage. Problems print one per line as
``file:line:col: field.path: message`` on stderr, followed by the offending YAML line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape
from rich.table import Table
from trimtab.slo import Config, ConfigError, Problem, load
from trimtab.slo.rules import DEFAULT_RUNBOOK_BASE_URL, dump_rules, generate_rules

from . import heap
from .dashboards_cli import app as dashboards_app
from .dashboards_cli import show_runbooks
from .stopping import interrupt_on_sigterm
from .terminal import Output, OutputFormat, err, out

__all__ = ["app", "main"]

app = typer.Typer(
    name="trimtab",
    help="Keeps production traffic where the SLOs say it is safe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(dashboards_app)
Files = Annotated[
    list[Path],
    typer.Option(
        "-f",
        "--filename",
        help="A file or folder of YAML (repeatable); folders are read recursively.",
    ),
]


def _fail(error: ConfigError) -> NoReturn:
    for problem in error.problems:
        err.print(escape(str(problem)), style="bold red" if err.is_terminal else None)
        excerpt = _excerpt(problem)
        if excerpt:
            err.print(escape(excerpt), style="dim" if err.is_terminal else None)
    count = len(error.problems)
    err.print(f"{count} problem{'s' if count != 1 else ''} found")
    raise typer.Exit(1)


def _excerpt(problem: Problem) -> str:
    """The offending line with a caret under the column, or '' when the file is unreadable."""
    try:
        lines = Path(problem.file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    if not 1 <= problem.line <= len(lines):
        return ""
    number = f"{problem.line:>5} | "
    caret = " " * (len(number) + problem.column - 1) + "^"
    return f"{number}{lines[problem.line - 1]}\n{caret}"


def _load(files: Sequence[Path]) -> Config:
    if not files:
        err.print("no input: give at least one -f FILE_OR_FOLDER")
        raise typer.Exit(2)
    try:
        with heap.paused():  # thousands of documents: no collection while they load
            return load(files)
    except ConfigError as error:
        _fail(error)


@app.command()
def validate(files: Files = [], output: OutputFormat = Output.text) -> None:  # noqa: B006
    """Load and check configuration; print each problem as file:line:col."""
    config = _load(files)
    counts = {
        "slos": len(config.slos),
        "rollouts": len(config.rollouts),
        "balances": len(config.balances),
        "controller": config.controller is not None,
    }
    if output is Output.json:
        out.print_json(json.dumps({"valid": True, **counts}))
        return
    parts = [_plural(len(config.slos), "SLO"), _plural(len(config.rollouts), "Rollout")]
    parts.append(_plural(len(config.balances), "Balance"))
    if config.controller is not None:
        parts.append("1 Controller")
    out.print("valid: " + ", ".join(parts))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@app.command()
def schema() -> None:
    """Print the JSON Schema of every trimtab kind (for editors and CI)."""
    from trimtab.slo.schema import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@app.command()
def rules(
    files: Files = [],  # noqa: B006
    output_file: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write to this file instead of stdout.")
    ] = None,
    runbook_base_url: Annotated[
        str | None,
        typer.Option(help="Base URL of the runbook pages (default: the Controller's, or ours)."),
    ] = None,
) -> None:
    """Prometheus recording rules and multiwindow burn-rate alerts for the SLOs."""
    config = _load(files)
    base = runbook_base_url or (
        config.controller.spec.runbook_base_url if config.controller else DEFAULT_RUNBOOK_BASE_URL
    )
    text = dump_rules(generate_rules(config.slos.values(), base))
    if output_file is None:
        sys.stdout.write(text)
        return
    output_file.write_text(text, encoding="utf-8")
    err.print(f"wrote {len(config.slos)} SLO rule groups to {output_file}")


@app.command()
def convert(files: Files = []) -> None:  # noqa: B006
    """Print OpenSLO / Sloth SLOs as trimtab YAML."""
    from trimtab.slo.peers import is_peer_document, render_trimtab_yaml

    config = _load(files)
    converted = [
        slo
        for name, slo in config.slos.items()
        if is_peer_document(config.origin("SLO", name).data)
    ]
    if not converted:
        err.print("no OpenSLO or Sloth SLOs found in the input")
        raise typer.Exit(1)
    sys.stdout.write(render_trimtab_yaml(converted))


PrometheusURL = Annotated[
    str | None,
    typer.Option(
        "--prometheus",
        help="Prometheus-compatible API to query (overrides the Controller's metrics source).",
    ),
]
StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Where trimtab keeps its state (overrides the Controller's)."),
]
Warmup = Annotated[
    float,
    typer.Option(help="Seconds the embedded scrape source collects before judging."),
]

_LEVEL_STYLE = {
    "HEALTHY": "green",
    "DEGRADED": "yellow",
    "UNAVAILABLE": "bold red",
    "UNKNOWN": "magenta",
}


@app.command()
def plan(
    files: Files = [],  # noqa: B006
    output: OutputFormat = Output.text,
    prometheus: PrometheusURL = None,
    state_dir: StateDir = None,
    warmup: Warmup = 10.0,
    at: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"],
            help="Judge as of this time (ISO 8601, UTC unless an offset is given); default now.",
        ),
    ] = None,
) -> None:
    """One dry-run cycle now: health per backend and SLO, current → desired weights, and why.

    Changes nothing: no state, no decision log, no proxy."""
    from pydantic import ValidationError

    from .plan import plan as make_plan
    from .sources import build_source, collecting
    from .targets import targets
    from .wiring import state_dir as directory_of

    config = _load(files)
    try:
        source = build_source(config, prometheus)
    except ValidationError as error:
        err.print(f"invalid --prometheus URL {prometheus!r}: {error.errors()[0]['msg']}")
        raise typer.Exit(2) from None
    except ValueError as error:  # settings the source cannot use (a missing token file, …)
        err.print(f"metric source: {escape(str(error))}")
        raise typer.Exit(1) from None
    if source is None:
        err.print(
            "no metric source: give --prometheus URL, or a Controller with "
            "metrics.prometheus or metrics.scrape"
        )
        raise typer.Exit(2)
    chosen = targets(config)
    if not chosen:
        err.print("no Rollout or Balance to plan for")
        raise typer.Exit(1)
    with collecting(source, warmup):
        when = datetime.now(UTC) if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)
        reports = make_plan(config, chosen, source, when, directory_of(config, state_dir))
    if output is Output.json:
        sys.stdout.write(json.dumps(reports, indent=2) + "\n")
        return
    for report in reports:
        _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    weights = report["weights"]
    title = (
        f"{report['target']}  [bold]{report['action']}[/]  {weights['current']} → "
        f"{weights['desired']}" + (f"  ({report['cause']})" if report.get("cause") else "")
    )
    table = Table(title=title, title_justify="left")
    for column in ("SLO", "backend", "level", "value", "threshold", "window"):
        table.add_column(column, justify="right" if column in ("value", "threshold") else "left")
    for reason in (r for r in report["reasons"] if "slo" in r):
        level = reason["level"]
        value = reason["value"]
        comparison = reason["comparison"]
        threshold = reason["threshold"]
        table.add_row(
            reason["slo"],
            reason["backend"],
            f"[{_LEVEL_STYLE[level]}]{level}[/]",
            "-" if value is None else f"{value:.4g}",
            "-" if threshold is None else f"{'<' if comparison == 'below' else '>'} {threshold:g}",
            reason["window"] or _why(reason, report["source"]["error"]),
        )
    out.print(table)
    for reason in (r for r in report["reasons"] if "slo" not in r):
        out.print(f"  - {escape(str(reason.get('message', '')))}")
    for note in report.get("guardrails", []):
        out.print(f"  guardrail {note['name']}: {escape(str(note['detail']))}")
    if not report["source"]["up"]:
        err.print(f"[bold red]metric source down:[/] {escape(report['source']['error'])}")


DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Decide and record, but never change the weights.")
]


def _source_for(config: Config, prometheus: str | None) -> Any:
    from pydantic import ValidationError

    from .sources import build_source

    try:
        source = build_source(config, prometheus)
    except ValidationError as error:
        err.print(f"invalid --prometheus URL {prometheus!r}: {error.errors()[0]['msg']}")
        raise typer.Exit(2) from None
    except ValueError as error:
        err.print(f"metric source: {escape(str(error))}")
        raise typer.Exit(1) from None
    if source is None:
        err.print(
            "no metric source: give --prometheus URL, or a Controller with "
            "metrics.prometheus or metrics.scrape"
        )
        raise typer.Exit(2)
    return source


def _wired(
    config: Config, prometheus: str | None, state_dir: Path | None, dry_run: bool, actor: str
) -> Any:
    from .wiring import AdapterUnavailable, wire
    from .wiring import state_dir as directory_of

    try:
        return wire(
            config,
            _source_for(config, prometheus),
            directory=directory_of(config, state_dir),
            dry_run=dry_run or (config.controller is not None and config.controller.spec.dry_run),
            actor=actor,
        )
    except AdapterUnavailable as error:
        err.print(escape(str(error)))
        raise typer.Exit(1) from None


@app.command()
def run(
    files: Files = [],  # noqa: B006
    dry_run: DryRun = False,
    once: Annotated[bool, typer.Option("--once", help="One cycle, then exit.")] = False,
    prometheus: PrometheusURL = None,
    state_dir: StateDir = None,
    warmup: Warmup = 10.0,
    output: OutputFormat = Output.text,
) -> None:
    """The control loop: measure, judge, decide, record and act, every analysis interval."""
    from dataclasses import replace

    from prometheus_client import CollectorRegistry

    from .leader import FileLeaderLock
    from .sources import collecting
    from .telemetry import DEFAULT_LISTEN, Telemetry

    config = _load(files)
    wiring = _wired(config, prometheus, state_dir, dry_run, "controller")
    listen = config.controller.spec.listen if config.controller else DEFAULT_LISTEN
    # Wired: the targets, their specs and adapters hold what runs. The documents go, and where
    # they came from (at 10,000 Rollouts, 20 MB of models and 7 MB of source positions).
    del config
    if not wiring.targets:
        err.print("no Rollout or Balance to run")
        raise typer.Exit(1)
    directory = wiring.states.directory
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLeaderLock(directory / "leader.lock")
    if not lock.try_acquire():
        err.print(f"another controller leads ({lock.holder()}); standing by")
        raise typer.Exit(1)
    source = wiring.reconciler.config.source
    telemetry = Telemetry(CollectorRegistry())
    telemetry.leading = True
    wiring = replace(wiring, reconciler=telemetry.instrument(wiring.reconciler))
    heap.settle()  # what lives as long as the controller: out of the collector's way
    heap.bound_arenas()  # before the threads: each would take an arena of its own
    try:
        if not once:
            try:
                telemetry.serve(listen)
            except OSError as error:
                err.print(f"cannot serve /metrics on {listen}: {error}")
                raise typer.Exit(1) from None
        with collecting(source, warmup):
            if once:
                with heap.paused():
                    decisions = telemetry.run_cycle(
                        lambda: wiring.reconciler.cycle(wiring.targets, datetime.now(UTC))
                    )
                _print_decisions([d.to_json() for d in decisions], output)
                return
            with interrupt_on_sigterm():
                _loop(wiring, telemetry)
    finally:
        telemetry.leading = False
        telemetry.shutdown()
        lock.release()


def _loop(wiring: Any, telemetry: Any) -> None:
    """One scheduler job per analysis interval until interrupted.

    Targets that share an interval share a job, so their queries go out in one batch (DESIGN.md
    section 12: queries grow with indicators, not targets); each target is judged exactly at its
    own interval, so ``failureLimit`` counts evaluations at the pace the Rollout says. A job
    never overlaps itself (``max_instances=1``), and runs missed while one was slow are
    coalesced into one. Jobs run one at a time (one worker thread): they share the decision log
    and the metric source.
    """
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.blocking import BlockingScheduler

    from .targets import by_interval

    groups = by_interval(wiring.targets)
    scheduler = BlockingScheduler(timezone=UTC, executors={"default": ThreadPoolExecutor(1)})

    def say(decision: Any) -> None:  # the moves; every decision is in the log
        if decision.action not in ("none", "hold"):
            out.print(_one_line(decision.to_json()))

    def job(group: list[Any]) -> None:
        now = datetime.now(UTC)
        with heap.paused():  # a cycle's objects die young: no collection while they live
            telemetry.follow_cycle(lambda: wiring.reconciler.stream(group, now), say)

    for interval, group in groups.items():
        scheduler.add_job(
            job, "interval", args=[group], seconds=interval, max_instances=1, coalesce=True,
            next_run_time=datetime.now(UTC), id=f"every-{interval:g}s",
        )  # fmt: skip
    every = ", ".join(f"{len(g)} every {i:g}s" for i, g in groups.items())
    err.print(f"running {len(wiring.targets)} targets ({every}); Ctrl-C stops")
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        err.print("stopping; a cycle under way finishes first")
        scheduler.shutdown(wait=True)  # the lock is released after, not while a cycle acts


def _one_line(d: dict[str, Any]) -> str:
    weights = d["weights"]
    return (
        f"{d['at']}  {d['target']:<28} {d['action']:<9} {weights['current']} → "
        f"{weights['desired']}  {escape(_first_message(d))}  [dim]{d['id']}[/]"
    )


def _first_message(d: dict[str, Any]) -> str:
    messages = [str(r["message"]) for r in d.get("reasons", []) if r.get("message")]
    return messages[-1] if messages else ""


def _print_decisions(decisions: list[dict[str, Any]], output: Output) -> None:
    if output is Output.json:
        sys.stdout.write(json.dumps(decisions, indent=2) + "\n")
        return
    for d in decisions:
        out.print(_one_line(d))


def _log(config_dir: Path | None, files: Sequence[Path]) -> Any:
    from .decisions import DecisionLog
    from .wiring import state_dir as directory_of

    config = _load(files) if files else Config()
    return DecisionLog(directory_of(config, config_dir) / "decisions.jsonl")


@app.command()
def history(
    files: Files = [],  # noqa: B006
    state_dir: StateDir = None,
    verify: Annotated[bool, typer.Option("--verify", help="Check the hash chain.")] = False,
    target: Annotated[str | None, typer.Option(help="Only this target (Kind/name).")] = None,
    output: OutputFormat = Output.text,
) -> None:
    """What trimtab decided, oldest first; --verify detects edits and truncation."""
    log = _log(state_dir, files)
    if verify:
        result = log.verify()
        for finding in result.findings:
            err.print(escape(str(finding)))
        if not result.ok:
            raise typer.Exit(1)
        out.print(f"verified: {result.records} records, chain intact")
        return
    decisions = [d.to_json() for d in log.records(target)]
    _print_decisions(decisions, output)


@app.command()
def explain(
    decision_id: Annotated[str, typer.Argument(metavar="ID")],
    files: Files = [],  # noqa: B006
    state_dir: StateDir = None,
    output: OutputFormat = Output.text,
) -> None:
    """One decision with everything behind it: health, values, thresholds, guardrails."""
    decision = _log(state_dir, files).find(decision_id)
    if decision is None:
        err.print(f"no decision {decision_id!r}")
        raise typer.Exit(1)
    d = decision.to_json()
    if output is Output.json:
        sys.stdout.write(json.dumps(d, indent=2) + "\n")
        return
    out.print(f"[bold]{d['id']}[/]  {d['at']}  {d['target']}  [bold]{d['action']}[/]")
    out.print(f"by {d['actor']}{'  (dry run)' if d['dryRun'] else ''}; phase {d['phase']}")
    out.print(f"weights {d['weights']['current']} → {d['weights']['desired']}")
    for backend, slos in d["health"].items():
        levels = ", ".join(f"{slo} [{_LEVEL_STYLE[lv]}]{lv}[/]" for slo, lv in slos.items())
        out.print(f"  {backend}: {levels}")
    for reason in d["reasons"]:
        detail = "".join(
            f" {k}={reason[k]}" for k in ("slo", "backend", "value", "threshold", "window")
            if reason.get(k) is not None
        )  # fmt: skip
        out.print(f"  - {escape(str(reason.get('message', '')))}{escape(detail)}")
    for note in d["guardrails"]:
        out.print(f"  guardrail {note['name']}: {escape(str(note['detail']))}")
    show_runbooks(d, out, _load(files) if files else Config())


@app.command()
def status(
    files: Files = [],  # noqa: B006
    state_dir: StateDir = None,
    output: OutputFormat = Output.text,
) -> None:
    """Every target's phase, step and weights, as the controller last saw them."""
    from .state import StateStore
    from .wiring import state_dir as directory_of

    config = _load(files) if files else Config()
    store = StateStore(directory_of(config, state_dir))
    rows = [{"target": key, **store.load(key).to_json()} for key in store.targets()]
    if output is Output.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("target", "phase", "step", "applied", "pending")
    for row in rows:
        pending = row["intent"]["weights"] if row["intent"] else "-"
        table.add_row(
            row["target"], row["phase"], str(row["step"]), str(row["applied"]), str(pending)
        )
    out.print(table)


def _override(command: str, name: str, files: Sequence[Path], state_dir: Path | None) -> None:
    import getpass

    from trimtab.slo import TrimtabError

    from .state import StateConflict

    config = _load(files)
    wiring = _wired(config, None, state_dir, False, getpass.getuser())
    key = name if "/" in name else f"Rollout/{name}"
    target = next((t for t in wiring.targets if t.key == key), None)
    if target is None:
        err.print(f"no target {key!r} in the configuration")
        raise typer.Exit(1)
    try:
        decision = wiring.reconciler.override(target, command, getpass.getuser(), datetime.now(UTC))
    except StateConflict:
        err.print(
            f"{key}: a controller saved its state each time this command read it; nothing "
            "changed: run the command again"
        )
        raise typer.Exit(1) from None
    except (ValueError, TrimtabError) as error:  # UnappliedOverride says what was recorded
        err.print(escape(str(error)))
        raise typer.Exit(1) from None
    out.print(_one_line(decision.to_json()))


Name = Annotated[str, typer.Argument(help="A Rollout's name, or Kind/name.")]


@app.command()
def promote(name: Name, files: Files = [], state_dir: StateDir = None) -> None:  # noqa: B006
    """Send all traffic to the canary now (recorded with your name)."""
    _override("promote", name, files, state_dir)


@app.command()
def abort(name: Name, files: Files = [], state_dir: StateDir = None) -> None:  # noqa: B006
    """Roll the canary back now (recorded with your name)."""
    _override("abort", name, files, state_dir)


@app.command()
def pause(name: Name, files: Files = [], state_dir: StateDir = None) -> None:  # noqa: B006
    """Hold a rollout where it is (it rolls back after analysis.pauseTimeout)."""
    _override("pause", name, files, state_dir)


@app.command()
def resume(name: Name, files: Files = [], state_dir: StateDir = None) -> None:  # noqa: B006
    """Resume a paused rollout, or accept a person's weights after a drift hold."""
    _override("resume", name, files, state_dir)


@app.command()
def demo(
    scenario: Annotated[
        str,
        typer.Option(help="errors (v2 starts failing: rolled back), healthy (promoted), latency."),
    ] = "errors",
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where the demo keeps its files (default: a new temp dir)."),
    ] = None,
) -> None:
    """The whole loop on this machine: Envoy, two backends, load, and trimtab steering them."""
    import tempfile

    from .demo import SCENARIOS, DemoUnavailable, run_demo

    if scenario not in SCENARIOS:
        err.print(f"unknown scenario {scenario!r}: use one of {', '.join(SCENARIOS)}")
        raise typer.Exit(2)
    where = directory or Path(tempfile.mkdtemp(prefix="trimtab-demo-"))
    try:
        result = run_demo(scenario, where, out)
    except DemoUnavailable as error:
        err.print(f"the demo cannot run here: {escape(str(error))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print(f"interrupted; every process the demo started is stopped. Files: {where}")
        raise typer.Exit(130) from None
    state = result.directory / "state"
    moves = [d for d in result.decisions if d.action.value not in ("none", "hold")]
    out.print(f"\n[bold]{'done' if result.ok else 'unexpected outcome'}:[/] v2 {result.phase}")
    if result.detection is not None:
        out.print(f"fault to rollback: {result.detection:.1f}s")
    out.print(
        f"total {result.total:.1f}s; {result.requests} requests through Envoy, "
        f"{result.failed_requests} failed"
    )
    out.print(f"decisions that moved traffic: {len(moves)}; the log is in {state}")
    last = moves[-1].id if moves else "ID"
    out.print(
        f"  trimtab history --state-dir {state}\n  trimtab explain {last} --state-dir {state}"
    )
    if not result.ok:
        raise typer.Exit(1)


def _why(reason: dict[str, Any], source_error: str | None) -> str:
    """A short cell for a verdict without a comparison (UNKNOWN)."""
    if source_error is not None and reason.get("error") == source_error:
        return "source down"
    text = str(reason["message"])
    return escape(text if len(text) <= 60 else text[:57] + "...")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
