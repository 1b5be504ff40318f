"""A problem found in a CAP message, located by the path of the element it concerns."""

from __future__ import annotations

from dataclasses import dataclass

from hub.core.errors import InvalidInput


@dataclass(frozen=True)
class Problem:
    # Path such as `alert/info[1]/area[2]/polygon[1]`; indexes count from 1 like XPath.
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidCap(InvalidInput):
    """A CAP message with one or more problems. `problems` lists all of them."""

    code = "invalid_cap"

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        summary = "; ".join(str(p) for p in problems[:5])
        if len(problems) > 5:
            summary += f"; and {len(problems) - 5} more"
        super().__init__(f"invalid CAP message: {summary}")
