"""`chainwatch dashboards export|publish`: Grafana dashboards as code (docs/dashboards.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from chainwatch.cli_context import cell_text, out, settings
from chainwatch.errors import UsageError, UserError

if TYPE_CHECKING:
    from schemas.plan import SlaPlan


def _plan() -> SlaPlan:
    from schemas.plan import PlanError, load_plan

    try:
        return load_plan(settings().engine.plan)
    except PlanError as exc:
        raise UserError(str(exc)) from None


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Grafana dashboards as code.", no_args_is_help=True)
    app.add_typer(group, name="dashboards")

    @group.command("export")
    def export(
        directory: Annotated[str, typer.Argument(help="Where to write <uid>.json files.")],
    ) -> None:
        """Write every dashboard's JSON (deterministic: fixed uids, sorted keys).

        The directory is created if missing (with its parents); files are replaced.
        """
        from dashboards.errors import ExportError
        from dashboards.export import export as write

        if not directory.strip():  # `Path("")` is `.`: an unset `$OUT` wrote into the cwd
            raise UsageError("DIR is empty: name a directory (`.` for the current one)")
        try:
            written = write(Path(directory), _plan())
        except ExportError as exc:
            raise UserError(str(exc)) from None
        for path in written:  # DIR as given, escaped (it may hold control characters), unwrapped
            out.print(cell_text(path), markup=False, highlight=False, soft_wrap=True)

    @group.command("publish")
    def publish(
        url: Annotated[str, typer.Option(help="Grafana base URL, e.g. http://localhost:3000.")],
        token: Annotated[
            str,
            typer.Option(
                envvar="CHAINWATCH_GRAFANA_TOKEN",
                help="Service account token (Editor); or CHAINWATCH_GRAFANA_TOKEN.",
            ),
        ],
        folder: Annotated[str, typer.Option(help="Folder title (created if missing).")] = (
            "Chainwatch"
        ),
        clickhouse_url: Annotated[
            str | None,
            typer.Option(
                envvar="CHAINWATCH_GRAFANA_CLICKHOUSE_URL",
                help="http://user:password@host:8123/db of the read-only user; used only "
                "to create the datasource when Grafana has none with uid chainwatch-clickhouse.",
            ),
        ] = None,
        prometheus_url: Annotated[
            str | None,
            typer.Option(
                envvar="CHAINWATCH_GRAFANA_PROMETHEUS_URL",
                help="http://host:9090 of the Prometheus scraping the processes; used only to "
                "create the datasource when Grafana has none with uid chainwatch-prometheus.",
            ),
        ] = None,
    ) -> None:
        """Publish the dashboards to Grafana; idempotent by uid."""
        from dashboards.errors import OptionError
        from dashboards.publish import publish as run

        try:
            result = run(
                url,
                token,
                _plan(),
                folder=folder,
                clickhouse_url=clickhouse_url,
                prometheus_url=prometheus_url,
            )
        except OptionError as exc:  # found before Grafana was called: the options' fault
            raise UsageError(str(exc)) from None
        out.print(
            f"folder {result.folder_uid} ({'created' if result.folder_created else 'exists'}), "
            f"datasource ({'created' if result.datasource_created else 'exists'}), "
            f"prometheus datasource ({result.prometheus_datasource})",
            highlight=False,
        )
        if result.prometheus_datasource == "missing":
            out.print(
                "note: no datasource chainwatch-prometheus: the Prometheus dashboard shows no "
                "data until one exists (--prometheus-url, or deploy/grafana/provisioning)",
                highlight=False,
            )
        for uid, link in zip(result.dashboards, result.urls, strict=True):
            out.print(f"published {uid} {link}", highlight=False)
