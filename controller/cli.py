"""The ``trimtab`` command line (typer + rich).

Exit codes: 0 success, 1 invalid input or failed check, 2 usage. Problems print one per line as
``file:line:col: field.path: message`` on stderr, followed by the offending YAML line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from trimtab.slo import Config, ConfigError, Problem, load
from trimtab.slo.rules import DEFAULT_RUNBOOK_BASE_URL, dump_rules, generate_rules

__all__ = ["app", "main"]

app = typer.Typer(
    name="trimtab",
    help="Keeps production traffic where the SLOs say it is safe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Output(StrEnum):
    text = "text"
    json = "json"


Files = Annotated[
    list[Path],
    typer.Option(
        "-f",
        "--filename",
        help="A file or folder of YAML (repeatable); folders are read recursively.",
    ),
]
OutputFormat = Annotated[Output, typer.Option("-o", "--output", help="text or json")]


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
    """One dry-run look: every backend's health per SLO, with value, threshold and window."""
    from pydantic import ValidationError

    from .plan import plan as make_plan
    from .sources import build_source, collecting
    from .targets import targets

    del state_dir  # read by the reconciler; accepted here so every command takes it
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
        reports = make_plan(chosen, source, when)
    if output is Output.json:
        sys.stdout.write(json.dumps(reports, indent=2) + "\n")
        return
    for report in reports:
        _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    table = Table(title=f"{report['target']}  action: {report['action']}", title_justify="left")
    for column in ("SLO", "backend", "level", "value", "threshold", "window"):
        table.add_column(column, justify="right" if column in ("value", "threshold") else "left")
    for reason in report["reasons"]:
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
    if not report["source"]["up"]:
        err.print(f"[bold red]metric source down:[/] {escape(report['source']['error'])}")


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
