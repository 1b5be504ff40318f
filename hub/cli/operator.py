"""The person behind a CLI command, as audit entries name them: `cli:NAME`.

The name comes from the global `hub --as NAME` option, else the `HUB_OPERATOR` setting, else
the name of the OS account that runs the command, so every decryption, export, purge and
shred a command makes is attributed to someone.
"""

from __future__ import annotations

import getpass
import re

from hub.cli.output import fail
from hub.core.settings import get_settings

# Names fit the audit entry's 120-character actor column with room for the `cli:` prefix.
OPERATOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
OPERATOR_RULE = (
    "use 1 to 64 letters, digits and . _ @ + -, starting with a letter or digit, such as "
    "your login name or e-mail address"
)

_name_from_option: str | None = None


def set_operator(name: str | None) -> None:
    """Use `name` (from `hub --as`) for the rest of this command, or the default when None."""
    global _name_from_option
    _name_from_option = name


def operator_name() -> str:
    """Return the operator's name, or exit with a message naming the value and the fix."""
    if _name_from_option is not None:
        name, source = _name_from_option, "--as"
    elif get_settings().operator:
        name, source = get_settings().operator, "HUB_OPERATOR"
    else:
        try:
            name, source = getpass.getuser(), "the OS user name"
        except (OSError, KeyError):
            fail(
                "cannot tell who runs this command: the OS user has no name; pass "
                "`hub --as NAME ...` or set HUB_OPERATOR"
            )
    if not OPERATOR_NAME.match(name):
        fail(f"invalid operator name {name!r} from {source}; {OPERATOR_RULE}")
    return name


def cli_actor() -> str:
    """Return the audit actor of this command: `cli:` and the operator's name."""
    return f"cli:{operator_name()}"
