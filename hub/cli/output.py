"""Shared output for `hub` commands: `--json` for scripts, tables for people, clear errors.

Every command that prints results takes `--json`. With it, the command prints exactly one JSON
document on stdout, including on error, and progress and logs go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

# Typer 0.29 ships its own copy of click; the context lives there, not in the click package.
try:
    from typer._click.globals import get_current_context
except ImportError:  # older Typer releases run on the click package
    from click import get_current_context
from rich.table import Table

from hub.core.errors import ConfigurationError, HubError

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document instead of text.")

# Output that is not a terminal (a pipe, a file, CI logs) gets a wide fixed width instead of
# rich's 80-column default, and plain lines are never wrapped, so ids and keys stay whole.
_PIPE_WIDTH = 160
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else _PIPE_WIDTH)
err_console = Console(
    stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else _PIPE_WIDTH
)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, ensure_ascii=False, indent=2) + "\n")


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print `data` as JSON, or through `render` for people."""
    if as_json:
        print_json(data)
    else:
        render(data)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    t = Table(title=title)
    for column in columns:
        # Fold long cells onto a second line instead of cutting ids with an ellipsis.
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    console.print(t)


def _json_requested() -> bool:
    """Return True when the running command (or a parent group) got `--json`."""
    context = get_current_context(silent=True)
    while context is not None:
        if context.params.get("as_json"):
            return True
        context = context.parent
    return False


def error_document(message: str, code: int, **details: Any) -> dict[str, Any]:
    """Return the JSON error document that every command prints on stdout under `--json`."""
    return {"error": message, "exit_code": code, **details}


def print_error(message: str, *, code: int, as_json: bool, **details: Any) -> None:
    """Print an error on stderr and, when `as_json`, its JSON document with `details` on stdout."""
    if as_json:
        print_json(error_document(message, code, **details))
    err_console.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)


def fail(message: str, *, code: int = 2) -> NoReturn:
    """Print an error (what failed, on which value, what to do) and exit non-zero.

    Under `--json` the error is also printed on stdout as `{"error": ..., "exit_code": ...}`,
    so a script always reads one JSON document there, whether the command succeeded or not.
    """
    print_error(message, code=code, as_json=_json_requested())
    raise typer.Exit(code)


def require_file(path: Path, *, label: str = "file", fix: str = "check the path") -> None:
    """Exit with a message unless `path` is an existing file. `label` names the file in the
    message, such as `--criteria file`, and `fix` is the advice for the user."""
    if path.is_dir():
        fail(f"{path} is a folder, not a {label}; give the path of a file in it")
    if not path.is_file():
        fail(f"{label} not found: {path}; {fix}")


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn domain and configuration errors into one-line messages instead of tracebacks."""
    try:
        yield
    except HubError as exc:
        fail(exc.message)
    except ConfigurationError as exc:
        fail(str(exc))
    except FileNotFoundError as exc:
        fail(f"file not found: {exc.filename}; check the path")
