"""The `hub import` progress bar: bytes of the file, or rows up to `--limit`."""

from __future__ import annotations

from pathlib import Path

from hub.cli.imports import ProgressBar
from hub.requests.importers.service import Progress


def _run(limit: int | None, reports: list[Progress]) -> tuple[float, float]:
    bar = ProgressBar(Path("export.csv"), limit=limit)
    with bar as update:
        for report in reports:
            update(report)
    task = bar.bar.tasks[0]
    return task.completed, task.total


def test_progress_counts_bytes_without_limit():
    completed, total = _run(None, [Progress(500, 2000, 10), Progress(2000, 2000, 40)])

    assert completed == 2000
    assert total == 2000


def test_progress_counts_rows_up_to_limit():
    # The import stopped at the limit, a quarter into the file: the bar is full all the same.
    completed, total = _run(25, [Progress(100, 2000, 10), Progress(500, 2000, 25)])

    assert completed == 25
    assert total == 25


def test_progress_full_at_early_file_end():
    # The file ended after 40 rows, before the limit of 1,000.
    completed, total = _run(1000, [Progress(2000, 2000, 40)])

    assert completed == 40
    assert total == 40
