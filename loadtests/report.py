"""The load-test report: `report.json`, `report.md` and PNG charts in the report directory."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from loadtests.analysis import ALL_ENDPOINTS, Samples, percentile  # noqa: E402

# Width in seconds of the buckets the time-series charts plot.
BUCKET_SECONDS = 5.0
NYC_RECORD_DAY_RATE = 3.2  # requests/s, NYC 311's record day (277,000 calls) over 24 hours


def write_charts(samples: Samples, directory: Path) -> list[str]:
    """Draw throughput and p95 latency over time; return the PNG file names."""
    if samples.times.size == 0:
        return []
    start = samples.times.min()
    buckets = ((samples.times - start) // BUCKET_SECONDS).astype(int)
    edges = np.arange(buckets.max() + 1)

    figure, axis = plt.subplots(figsize=(8, 3.5))
    counts = np.bincount(buckets, minlength=len(edges)) / BUCKET_SECONDS
    axis.plot(edges * BUCKET_SECONDS, counts)
    axis.set_xlabel("seconds since start")
    axis.set_ylabel("requests/s")
    axis.set_title("Throughput")
    figure.tight_layout()
    figure.savefig(directory / "throughput.png", dpi=100)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(8, 3.5))
    for name in sorted(set(samples.names.tolist())):
        series = []
        for bucket in edges:
            mask = (buckets == bucket) & (samples.names == name)
            series.append(percentile(samples.latencies[mask], 95) if mask.any() else math.nan)
        axis.plot(edges * BUCKET_SECONDS, series, label=name)
    axis.set_xlabel("seconds since start")
    axis.set_ylabel("p95 latency (ms)")
    axis.set_title("p95 latency per endpoint")
    axis.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(directory / "latency_p95.png", dpi=100)
    plt.close(figure)
    return ["throughput.png", "latency_p95.png"]


def write_report(report: dict[str, Any], directory: Path) -> None:
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")

    lines = [
        f"# Load test `{report['scenario']}`: {'PASS' if report['passed'] else 'FAIL'}",
        "",
        f"- target: {report['target']} ({report['stack']})",
        f"- users: {report['users']}, duration: {report['duration_seconds']} s",
        f"- started: {report['started_at']}, machine: {report['machine']}",
        f"- command: `{report['command']}`",
        "",
        "## Endpoints",
        "",
        "| endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in report["endpoints"]:
        name = "all endpoints" if f["name"] == ALL_ENDPOINTS else f"`{f['name']}`"
        lines.append(
            f"| {name} | {f['requests']} | {f['failures']} | {f['requests_per_second']} |"
            f" {f['p50_ms']} | {f['p95_ms']} | {f['p99_ms']} | {f['max_ms']} |"
        )

    rec = report["reconciliation"]
    lines += [
        "",
        f"Sustained {report['requests_per_second']} requests/s, "
        f"{report['nyc_record_day_multiple']}x New York City's record-day average "
        f"({NYC_RECORD_DAY_RATE} requests/s).",
        "",
        "## Reconciliation",
        "",
        f"- acknowledged: {rec['acknowledged']}, stored: {rec['stored']}, lost: {rec['lost']}",
        f"- alerts: {rec['alerts']}, recipients: {rec['recipients']},"
        f" duplicated deliveries: {rec['deliveries_duplicated']}",
    ]
    agency = report.get("agency_deliveries")
    if agency:
        lines.append(
            f"- agency webhook deliveries received during the run: {agency['received']},"
            f" duplicates: {agency['duplicates']}"
        )
    lines += [f"- lost: `{example}`" for example in rec["lost_examples"]]
    lines += [f"- note: {note}" for note in rec["notes"]]

    lines += [
        "",
        "## Criteria",
        "",
        "| criterion | limit | measured | result |",
        "|---|---:|---:|---|",
    ]
    for c in report["checks"]:
        result = "pass" if c["passed"] else "FAIL"
        lines.append(f"| {c['criterion']} | {c['limit']} | {c['measured']} | {result} |")

    lines += [""] + [f"![{name}]({name})" for name in report["charts"]] + [""]
    (directory / "report.md").write_text("\n".join(lines), encoding="utf-8")
