"""Load profiles: the mix of operations a city's traffic is made of, derived from 311 records.

A profile stores numbers only (shares and counts), never the records it was derived from:

- `hourly_arrivals`: share of requests filed in each local hour 0-23 (the arrival curve);
- `service_rank_shares`: share of the most common service types, in rank order, then the rest,
  which the load users map onto the tenant's catalog in its order;
- `channel_shares`: share of phone, web, app and other intake;
- `closed_fraction`: share of records closed at export time;
- `operations`: the share of each HTTP operation, from the model in `operation_mix`.

Regenerate the stored files with
`python -m loadtests.profiles CITY CSV [CSV ...] > loadtests/profiles/CITY.yaml`.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
TOP_SERVICES = 10
OPERATIONS = ("post_request", "get_request", "list_requests", "get_services")


@dataclass(frozen=True)
class Layout:
    """Column names and date formats of one open-data export, as a profile needs them."""

    created: str
    service: str
    channel: str
    status: str
    date_formats: tuple[str, ...]
    channel_map: dict[str, str]


# Channel names per export, mapped onto phone, web, app and other.
LAYOUTS = {
    "nyc": Layout(
        created="Created Date",
        service="Complaint Type",
        channel="Open Data Channel Type",
        status="Status",
        date_formats=("%m/%d/%Y %I:%M:%S %p",),
        channel_map={"PHONE": "phone", "ONLINE": "web", "MOBILE": "app"},
    ),
    "sf": Layout(
        created="Opened",
        service="Request.Type",
        channel="Source",
        status="Status",
        date_formats=("%m/%d/%Y %I:%M:%S %p",),
        channel_map={"Voice In": "phone", "Web Self Service": "web", "Open311": "app"},
    ),
    "boston": Layout(
        created="open_dt",
        service="type",
        channel="source",
        status="case_status",
        date_formats=("%Y-%m-%d %H:%M:%S",),
        channel_map={
            "Constituent Call": "phone",
            "Self Service": "web",
            "Citizens Connect App": "app",
            "City Worker App": "app",
        },
    ),
}


def read_rows(paths: Iterable[Path]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in paths:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows.extend(csv.DictReader(handle))
    return rows


def _hour(text: str, formats: Sequence[str]) -> int | None:
    for fmt in formats:
        try:
            return datetime.strptime(text.strip(), fmt).hour
        except ValueError:
            continue
    return None


def _shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts)) or 1.0
    return [round(c / total, 4) for c in counts]


def operation_mix(rows: int, closed: int, active_hours: int, non_phone: int) -> dict[str, float]:
    """Return each operation's share of HTTP calls under the hub's traffic model.

    Each filed request is one POST. It is read once after filing and once per recorded status
    change, and closing is the change the exports carry. Each filing through web or app reads
    the catalog once. Each hour with any filing has one list read by the agency's view.
    NOTE: the read counts are a model fitted to what the exports contain, because open data
    carries no read traffic; replace them with access-log counts where a city has them.
    """
    calls = {
        "post_request": float(rows),
        "get_request": float(rows + closed),
        "list_requests": float(active_hours),
        "get_services": float(non_phone),
    }
    shares = _shares(list(calls.values()))
    return dict(zip(calls, shares, strict=True))


def derive(city: str, rows: list[dict[str, str]]) -> dict[str, Any]:
    """Derive the profile of `city` (a key of LAYOUTS) from its export rows."""
    layout = LAYOUTS[city]
    hours = Counter()
    active = set()
    for row in rows:
        hour = _hour(row.get(layout.created, ""), layout.date_formats)
        if hour is not None:
            hours[hour] += 1
            active.add((row[layout.created][:10], hour))
    services = Counter(row.get(layout.service, "").strip() or "unknown" for row in rows)
    ranked = [count for _name, count in services.most_common()]
    top, rest = ranked[:TOP_SERVICES], sum(ranked[TOP_SERVICES:])
    channels = Counter(layout.channel_map.get(row.get(layout.channel, ""), "other") for row in rows)
    closed = sum(1 for row in rows if row.get(layout.status, "").strip().lower() == "closed")
    non_phone = sum(count for name, count in channels.items() if name in ("web", "app"))

    return {
        "city": city,
        "records": len(rows),
        "hourly_arrivals": _shares([hours[h] for h in range(24)]),
        "service_rank_shares": _shares([*top, rest]),
        "channel_shares": {
            name: share
            for name, share in zip(
                ("phone", "web", "app", "other"),
                _shares([channels[n] for n in ("phone", "web", "app", "other")]),
                strict=True,
            )
        },
        "closed_fraction": round(closed / max(len(rows), 1), 4),
        "operations": operation_mix(len(rows), closed, len(active), non_phone),
    }


def load_profile(path: Path) -> dict[str, Any]:
    """Read a profile file and check that it has every field the scenarios use."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    missing = [
        key
        for key in ("hourly_arrivals", "service_rank_shares", "operations")
        if key not in (data or {})
    ]
    if missing:
        raise ValueError(f"profile {path} is missing {', '.join(missing)}; regenerate it")
    if len(data["hourly_arrivals"]) != 24:
        raise ValueError(f"profile {path}: hourly_arrivals needs 24 shares, one per hour")
    return data


def stored_profiles() -> list[Path]:
    return sorted(PROFILE_DIR.glob("*.yaml"))


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2 or argv[0] not in LAYOUTS:
        print(
            f"usage: python -m loadtests.profiles {{{','.join(LAYOUTS)}}} CSV [CSV ...]",
            file=sys.stderr,
        )
        return 2
    profile = derive(argv[0], read_rows(Path(p) for p in argv[1:]))
    sys.stdout.write(yaml.safe_dump(profile, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
