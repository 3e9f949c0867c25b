"""``trimtab dashboards export|import``, and the runbook pages ``trimtab explain`` shows.

``export`` writes the dashboards as JSON files (the bundled generic ones, or with ``-f`` one per
SLO with the YAML's thresholds baked in) and, with ``--provisioning``, a Grafana dashboard
provider file. ``import`` pushes the same dashboards through Grafana's HTTP API. Credentials
come from the environment or files only (never a flag value, which would land in shell history).

Exit codes (DESIGN.md section 9): 0 success, 1 invalid input or a failed import, 2 usage
(including missing or conflicting credentials).

Runbooks are Markdown pages named after an alert's ``runbook_url`` slug or a decision's
:class:`~trimtab.controller.causes.Cause`. They are read from the source tree (a checkout or an
editable install) or from ``<prefix>/share/trimtab/runbooks`` (where a wheel installs them).
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from trimtab.slo.rules import DEFAULT_RUNBOOK_BASE_URL

from .terminal import Output, OutputFormat, err, out

if TYPE_CHECKING:  # the SDK and grafana-client load when a command needs them, not at start-up
    from trimtab.dashboards.generate import GeneratedDashboard
    from trimtab.slo import Config

__all__ = [
    "PROVIDER_FILE",
    "app",
    "runbook_dirs",
    "runbook_names",
    "runbook_page",
    "show_runbooks",
]

PROVIDER_FILE = "trimtab-provider.yaml"

app = typer.Typer(
    name="dashboards",
    help="Grafana dashboards built from the SLO definitions: export files, or import via the API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
Files = Annotated[
    list[Path],
    typer.Option(
        "-f",
        "--filename",
        help="YAML files or folders (repeatable): bake their SLOs' thresholds in. Without -f: "
        "the bundled dashboards, which read thresholds from trimtab_slo_threshold.",
    ),
]


def _dashboards(files: Sequence[Path]) -> list[GeneratedDashboard]:
    from trimtab.dashboards.generate import for_config, generic

    if not files:
        return generic()
    from . import cli  # the shared loader, which prints problems and exits 1

    return for_config(cli._load(files))


@app.command("export")
def export(
    output_dir: Annotated[
        Path, typer.Option("-o", "--output", help="Directory to write the dashboards into.")
    ],
    files: Files = [],  # noqa: B006
    provisioning: Annotated[
        bool,
        typer.Option(
            "--provisioning", help=f"Also write {PROVIDER_FILE}, a Grafana dashboard provider."
        ),
    ] = False,
    folder: Annotated[
        str, typer.Option(help="Grafana folder of the provisioned dashboards.")
    ] = "trimtab",
    grafana_path: Annotated[
        str | None,
        typer.Option(
            help="The directory as Grafana sees it, for the provider file (default: the "
            "absolute path of -o)."
        ),
    ] = None,
) -> None:
    """Write the dashboards as JSON files (and a provisioning provider file)."""
    from trimtab.dashboards.generate import provisioning_provider, write

    dashboards = _dashboards(files)
    try:
        written = write(dashboards, output_dir)
        if provisioning:
            provider = output_dir / PROVIDER_FILE
            seen_as = grafana_path or str(output_dir.resolve())
            provider.write_text(provisioning_provider(seen_as, folder), encoding="utf-8")
            written.append(provider)
    except OSError as error:
        err.print(f"cannot write to {escape(str(output_dir))}: {escape(error.strerror or '')}")
        raise typer.Exit(1) from None
    for path in written:
        out.print(escape(str(path)))
    err.print(f"wrote {len(dashboards)} dashboards to {escape(str(output_dir))}")


@app.command("import")
def import_(
    url: Annotated[str, typer.Option(help="Grafana's root URL, with any sub-path.")],
    files: Files = [],  # noqa: B006
    folder: Annotated[
        str | None,
        typer.Option(help="Folder title (created if missing); default: the General folder."),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding a service-account token (else GRAFANA_TOKEN)."),
    ] = None,
    user: Annotated[str | None, typer.Option(help="Basic-auth user (else GRAFANA_USER).")] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(help="File holding the basic-auth password (else GRAFANA_PASSWORD)."),
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="CA bundle to verify Grafana's TLS certificate.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 10.0,
    output: OutputFormat = Output.text,
) -> None:
    """Import the dashboards into Grafana (overwriting; unchanged ones are left alone)."""
    from trimtab.adapters.grafana import (
        CredentialsError,
        GrafanaError,
        GrafanaImporter,
        credentials,
    )

    try:
        auth = credentials(
            os.environ, token_file=token_file, user=user, password_file=password_file
        )
    except CredentialsError as error:
        err.print(escape(str(error)))
        raise typer.Exit(2) from None
    except GrafanaError as error:
        err.print(escape(str(error)))
        raise typer.Exit(1) from None
    dashboards = _dashboards(files)
    try:
        importer = GrafanaImporter(url, auth, timeout=timeout, ca_file=ca_file)
        results = importer.import_all([d.model for d in dashboards], folder)
    except GrafanaError as error:
        err.print(escape(str(error)))
        raise typer.Exit(1) from None
    if output is Output.json:
        sys.stdout.write(json.dumps([r.to_json() for r in results], indent=2) + "\n")
        return
    table = Table("dashboard", "status", "url")
    for result in results:
        table.add_row(escape(result.title), result.status, escape(result.url))
    out.print(table)


# ----------------------------------------------------------------------------------- runbooks


def runbook_dirs() -> list[Path]:
    """Where runbook pages may be, in order: the source tree, then the installed data."""
    source = Path(__file__).resolve().parents[1] / "runbooks"
    prefixes = [sysconfig.get_path("data"), sysconfig.get_path("data", f"{os.name}_user")]
    installed = [Path(p) / "share" / "trimtab" / "runbooks" for p in dict.fromkeys(prefixes)]
    return [source, *installed]


def runbook_page(name: str) -> Path | None:
    """The page ``<name>.md``, or ``None`` when no runbook directory holds it."""
    if not name or "/" in name or name.startswith("."):
        return None
    for directory in runbook_dirs():
        page = directory / f"{name}.md"
        if page.is_file():
            return page
    return None


def _alert_page(reason: Mapping[str, Any]) -> str | None:
    """The alert runbook matching a reason's verdict, as ``trimtab rules`` links them."""
    level = reason.get("level")
    if level not in ("DEGRADED", "UNAVAILABLE"):
        return None
    if reason.get("comparison") == "burnRate":
        return "error-budget-burn"
    return "slo-unavailable" if level == "UNAVAILABLE" else "slo-degraded"


def runbook_names(decision: Mapping[str, Any]) -> list[str]:
    """The decision's cause (when recorded), then the alert pages of its reasons, once each."""
    names: list[str] = []
    cause = decision.get("cause")
    if isinstance(cause, str) and cause:
        names.append(cause)
    for reason in decision.get("reasons", []):
        page = _alert_page(reason) if isinstance(reason, Mapping) else None
        if page is not None and page not in names:
            names.append(page)
    return names


def show_runbooks(decision: Mapping[str, Any], console: Console, config: Config) -> None:
    """Print the cause's runbook page and links to the alert pages of the reasons."""
    base = (
        config.controller.spec.runbook_base_url
        if config.controller is not None
        else DEFAULT_RUNBOOK_BASE_URL
    )
    base = base if base.endswith("/") else base + "/"
    for name in runbook_names(decision):
        console.print(f"runbook {escape(name)}: {escape(base + name)}")
        page = runbook_page(name)
        if page is not None and name == decision.get("cause"):
            text = _filled(page.read_text(encoding="utf-8"), decision)
            console.print(escape(text.rstrip("\n")), crop=False)


def _filled(page: str, decision: Mapping[str, Any]) -> str:
    """The page with its placeholders filled from the decision, so its PromQL and commands can
    be pasted as they are."""
    target = str(decision.get("target", ""))
    kind, _, name = target.partition("/")
    slos = [
        r["slo"] for r in decision.get("reasons", []) if isinstance(r, Mapping) and r.get("slo")
    ]
    values = {"<Kind>": kind, "<name>": name, "<ID>": str(decision.get("id", ""))}
    if slos:
        values["<slo>"] = str(slos[0])
    for placeholder, value in values.items():
        if value:
            page = page.replace(placeholder, value)
    return page
