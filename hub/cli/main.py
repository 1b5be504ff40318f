"""The `hub` command: serve, worker, demo and the operator command groups."""

from __future__ import annotations

import inspect
from typing import Any

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from typer.core import TyperGroup, TyperOption

# Typer 0.29 ships its own copy of click; its exceptions and context live there.
try:
    from typer._click import Context
    from typer._click.exceptions import UsageError
except ImportError:  # older Typer releases run on the click package
    from click import Context
    from click.exceptions import UsageError

from hub.cli import alerts as alert_commands
from hub.cli import audit as audit_commands
from hub.cli import bench as bench_commands
from hub.cli import db as db_commands
from hub.cli import imports as import_commands
from hub.cli import loadtest as loadtest_commands
from hub.cli import overflow as overflow_commands
from hub.cli import privacy as privacy_commands
from hub.cli import requests as request_commands
from hub.cli import serve as serve_commands
from hub.cli import tenants as tenant_commands
from hub.cli.demo.command import demo as demo_command
from hub.cli.operator import set_operator
from hub.cli.output import print_error
from hub.core.errors import ConfigurationError
from hub.core.settings import get_settings
from privacy.fields import record_pending_usage

_JSON_ERRORS_KEY = "hub.json_errors"


def _print_usage_error(error: UsageError) -> None:
    message = error.format_message().rstrip(".")
    if error.ctx is not None:
        message += f"; see `{error.ctx.command_path} --help`"
    print_error(message, code=error.exit_code, as_json=True)


class HubGroup(TyperGroup):
    """The root command group: usage errors under `--json` print the JSON error document.

    Click reports a bad value, a missing option or an unknown option or command as a
    `UsageError` from the parsing of any command below the root. All of them pass through the
    root's `make_context` or `invoke`, so handling them here covers every command.
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: Context | None = None,
        **extra: Any,
    ) -> Context:
        _summaries_on_one_line(self)
        json_errors = "--json" in args
        try:
            context = super().make_context(info_name, args, parent, **extra)
        except UsageError as error:
            if not json_errors:
                raise
            _print_usage_error(error)
            raise typer.Exit(error.exit_code) from None
        context.meta[_JSON_ERRORS_KEY] = json_errors
        return context

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigurationError as error:
            # Bad settings can surface in any command, wherever the settings are first read.
            print_error(str(error), code=2, as_json=bool(ctx.meta.get(_JSON_ERRORS_KEY)))
            raise typer.Exit(2) from None
        except OperationalError as error:
            # Any command can be the first to connect. The operator fixes an unreachable
            # database, so the message gives its address and the reason instead of a traceback.
            print_error(
                _unreachable_database(error), code=2, as_json=bool(ctx.meta.get(_JSON_ERRORS_KEY))
            )
            raise typer.Exit(2) from None
        except UsageError as error:
            if not ctx.meta.get(_JSON_ERRORS_KEY):
                raise
            _print_usage_error(error)
            raise typer.Exit(error.exit_code) from None
        finally:
            # Encryption counts are otherwise recorded only every USAGE_RECORD_EVERY encryptions
            # or USAGE_RECORD_SECONDS, which a short command such as `hub import` may not reach.
            record_pending_usage()


def _summaries_on_one_line(group: TyperGroup) -> None:
    """Set each command's summary in command lists to its help's first paragraph on one line.

    Typer's rich help keeps the line breaks of a docstring's first paragraph in those lists,
    so a summary wrapped in the source broke in the middle of a sentence on screen.
    """
    for command in group.commands.values():
        if command.short_help is None and command.help:
            first = inspect.cleandoc(command.help).split("\n\n", 1)[0]
            command.short_help = " ".join(first.split())
        if isinstance(command, TyperGroup):
            _summaries_on_one_line(command)


def _unreachable_database(error: OperationalError) -> str:
    url = make_url(get_settings().effective_database_url).render_as_string(hide_password=True)
    reason = " ".join(line.strip() for line in str(error.orig).splitlines() if line.strip())
    return (
        f"could not use the database at {url}: {reason}; start the database server or "
        "correct HUB_DATABASE_URL"
    )


def _type_label_unless_flag(option: TyperOption, ctx: Context) -> str | None:
    if option.is_flag or option.count:
        return None
    return _type_label(option, ctx)


# Typer 0.29's rich help prints a type such as `<bool>` beside every option, flags included
# (`--json`, `--help`), although a flag takes no value. Its plain help leaves flags bare, and
# the rich help does the same when this returns None.
_type_label = TyperOption.display_type_rich
TyperOption.display_type_rich = _type_label_unless_flag  # type: ignore[method-assign]

app = typer.Typer(
    name="hub",
    cls=HubGroup,
    help="Regional 311 hub: a multi-tenant Open311 back end with alerts and overflow routing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global_options(
    operator: str | None = typer.Option(
        None,
        "--as",
        metavar="NAME",
        help="Your name as audit entries record it (`cli:NAME`). Default: HUB_OPERATOR, else "
        "your OS user name.",
    ),
) -> None:
    set_operator(operator)


app.command("serve")(serve_commands.serve)
app.command("worker")(serve_commands.worker)
app.command("demo")(demo_command)
app.add_typer(alert_commands.app, name="alerts")
app.add_typer(bench_commands.app, name="bench")
app.add_typer(db_commands.app, name="db")
app.command("loadtest")(loadtest_commands.loadtest)
app.command("import")(import_commands.import_command)
app.add_typer(request_commands.app, name="requests")
app.add_typer(privacy_commands.app, name="privacy")
app.add_typer(audit_commands.app, name="audit")
app.add_typer(overflow_commands.app, name="overflow")
app.add_typer(tenant_commands.app, name="tenants")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
