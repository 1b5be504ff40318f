"""Each format parses the real exports row by row, and bad files and rows get clear errors."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.core.errors import InvalidInput, InvalidInputGroup
from hub.requests.importers import FORMATS, get_format
from hub.requests.importers.localtime import LocalTimes, load_zone
from hub.requests.importers.readers import ExportFile, FileFormatError

# (format, file under the shared data folder, zone, rows, rows with no location at all)
REAL_FILES = [
    ("nyc-csv", "311_records/nyc/NYC311-5.csv", "America/New_York", 5, 0),
    ("nyc-csv", "311_records/nyc/nyc311-100.csv", "America/New_York", 100, 3),
    ("nyc-csv", "311_records/nyc/311_Service_Requests.csv", "America/New_York", 1000, 58),
    ("nyc-json", "311_records/nyc/NYC311-5.json", "America/New_York", 5, 0),
    ("nyc-json", "311_records/nyc/fhrw-4uyv.json", "America/New_York", 1000, 0),
    ("sf-csv", "311_records/sf/cases_sample_10000(no-geo).csv", "America/Los_Angeles", 10000, 23),
    ("boston-csv", "311_records/boston/boston311-100.csv", "America/New_York", 100, 1),
    ("boston-jsonl", "311_records/boston/boston311-10.jsonl", "America/New_York", 10, 1),
    ("open311-json", "open311/open311status/service_requests.json", "America/Chicago", 2, 0),
]


def parse_file(name: str, path: Path, zone: str = "America/New_York"):
    fmt = FORMATS[name]
    times = LocalTimes(load_zone(zone))
    records, errors = [], []
    with ExportFile(path) as export:
        for position, row in fmt.rows(export):
            try:
                records.append(fmt.parse_row(position, row, times))
            except InvalidInput as error:
                errors.append((position, error))
    return records, errors


@pytest.mark.parametrize(("name", "relative", "zone", "rows", "unlocated"), REAL_FILES)
def test_real_export_parses(shared_data, name, relative, zone, rows, unlocated):
    records, errors = parse_file(name, shared_data / relative, zone)
    assert errors == []
    assert len(records) == rows
    assert len({r.source_id for r in records}) == rows
    assert sum(1 for r in records if r.lat is None and r.address is None) == unlocated
    assert all(r.requested_at.tzinfo is UTC for r in records)


def test_nyc_csv_and_json_agree(shared_data):
    from_csv, _ = parse_file("nyc-csv", shared_data / "311_records/nyc/NYC311-5.csv")
    from_json, _ = parse_file("nyc-json", shared_data / "311_records/nyc/NYC311-5.json")
    assert [r.source_id for r in from_csv] == [r.source_id for r in from_json]
    assert [r.requested_at for r in from_csv] == [r.requested_at for r in from_json]
    assert [r.status for r in from_csv] == [r.status for r in from_json]
    assert FORMATS["nyc-csv"].source == FORMATS["nyc-json"].source


def test_nyc_first_row_fields(shared_data):
    records, _ = parse_file("nyc-csv", shared_data / "311_records/nyc/NYC311-5.csv")
    first = records[0]
    assert first.source_id == "34675190"
    assert first.category == "Noise - Residential"
    # 10/31/2016 11:07:15 PM in New York (EDT, UTC-4).
    assert first.requested_at == datetime(2016, 11, 1, 3, 7, 15, tzinfo=UTC)
    assert first.status == "closed"
    assert first.resolution == "no_action"
    assert first.channel == "mobile"
    assert first.lat == pytest.approx(40.8002938)


def test_nyc_socrata_statuses(shared_data):
    records, _ = parse_file("nyc-json", shared_data / "311_records/nyc/fhrw-4uyv.json")
    counts = Counter(r.status for r in records)
    assert counts == {"closed": 966, "acknowledged": 29, "submitted": 5}


def test_sf_point_and_pacific_time(shared_data):
    path = shared_data / "311_records/sf/cases_sample_10000(no-geo).csv"
    records, _ = parse_file("sf-csv", path, "America/Los_Angeles")
    first = records[0]
    assert first.source_id == "3600298"
    assert first.lat == pytest.approx(37.774007256355)
    assert first.lon == pytest.approx(-122.395680023339)
    # 04/30/2014 02:51:52 PM in San Francisco (PDT, UTC-7).
    assert first.requested_at == datetime(2014, 4, 30, 21, 51, 52, tzinfo=UTC)
    assert first.subcategory == "Odor"


def test_boston_placeholder_point_is_no_location(shared_data):
    records, _ = parse_file("boston-csv", shared_data / "311_records/boston/boston311-100.csv")
    first = records[0]
    assert first.source_id == "101004143000"
    assert first.lat is None
    assert first.lon is None


def test_open311_offsets_kept(shared_data):
    path = shared_data / "open311/open311status/service_requests.json"
    records, _ = parse_file("open311-json", path, "America/Los_Angeles")
    assert records[0].requested_at == datetime(2014, 7, 12, 15, 58, 43, tzinfo=UTC)
    assert records[0].service_code == "4ffa9cad6018277d4000007b"
    assert records[1].status_note == "Locked"


# -- malformed files --------------------------------------------------------------------------


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def read_all(name: str, path: Path) -> None:
    parse_file(name, path)


def test_missing_columns_are_named(tmp_path, shared_data):
    sf = shared_data / "311_records/sf/cases_sample_10000(no-geo).csv"
    with pytest.raises(FileFormatError) as caught:
        read_all("nyc-csv", sf)
    message = caught.value.message
    assert "'Unique Key'" in message
    assert "'Complaint Type'" in message
    assert "NYC 311 Service Requests CSV" in message


def test_empty_file(tmp_path):
    with pytest.raises(FileFormatError, match="is empty"):
        read_all("boston-csv", write(tmp_path, "empty.csv", ""))


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf \n\t\r\n", b" " * 70_000])
def test_empty_json_file(tmp_path, content):
    with pytest.raises(FileFormatError, match="empty.json is empty") as raised:
        read_all("nyc-json", write(tmp_path, "empty.json", content))
    assert "does not start with" not in str(raised.value)


def test_csv_given_to_json_format(tmp_path, shared_data):
    with pytest.raises(FileFormatError, match="does not start with a JSON array") as raised:
        read_all("nyc-json", shared_data / "311_records/nyc/NYC311-5.csv")
    assert "\n" not in str(raised.value)
    assert "CSV formats" in str(raised.value)


def test_json_object_not_array(tmp_path):
    path = write(tmp_path, "one.json", json.dumps({"service_request_id": "1"}))
    with pytest.raises(FileFormatError, match="contains no records"):
        read_all("open311-json", path)


def test_json_array_of_scalars(tmp_path):
    with pytest.raises(FileFormatError, match="record 1 is not a JSON object"):
        read_all("open311-json", write(tmp_path, "numbers.json", "[1, 2]"))


def test_truncated_json(tmp_path):
    path = write(tmp_path, "cut.json", '[{"service_request_id": "1", "status": "op')
    with pytest.raises(FileFormatError, match="not a valid JSON array"):
        read_all("open311-json", path)


def test_binary_csv(tmp_path):
    path = write(tmp_path, "binary.csv", b"\xff\xfe\x00\x01garbage\x00\n")
    with pytest.raises(FileFormatError, match="not a UTF-8 CSV"):
        read_all("nyc-csv", path)


def test_bad_jsonl_line_is_named(tmp_path):
    path = write(tmp_path, "bad.jsonl", '{"case_enquiry_id": 1}\nnot json\n')
    with pytest.raises(FileFormatError, match="line 2"):
        read_all("boston-jsonl", path)


def test_unknown_format_lists_known():
    with pytest.raises(InvalidInput) as caught:
        get_format("chicago-csv")
    assert "nyc-csv" in caught.value.message
    assert "chicago-csv" in caught.value.message


# -- malformed rows ---------------------------------------------------------------------------

BOSTON_HEADER = (
    "case_enquiry_id,open_dt,closed_dt,case_status,closure_reason,case_title,type,location,"
    "latitude,longitude,source\n"
)
BAD_BOSTON_ROWS = [
    # (row, column, reason)
    (
        "1,2022-13-01 10:00:00,,Open, ,T,Needle Pickup,1 Main St,42.35,-71.06,Self Service",
        "open_dt",
        "invalid_time",
    ),
    ("2,,,Open, ,T,Needle Pickup,1 Main St,42.35,-71.06,Self Service", "open_dt", "missing_value"),
    (
        "3,2022-01-01 10:00:00,,Reopened, ,T,Needle Pickup,1 Main St,42.35,-71.06,Self Service",
        "case_status",
        "unknown_status",
    ),
    (
        "4,2022-01-01 10:00:00,,Open, ,T,Needle Pickup,1 Main St,north,-71.06,Self Service",
        "latitude/longitude",
        "invalid_coordinates",
    ),
    (
        "5,2022-01-01 10:00:00,,Open, ,T,Needle Pickup,1 Main St,95,-71.06,Self Service",
        "latitude/longitude",
        "invalid_coordinates",
    ),
    (
        "6,2022-01-01 10:00:00,,Open, ,T,Needle Pickup,1 Main St,42.35,,Self Service",
        "latitude/longitude",
        "invalid_coordinates",
    ),
    (
        ",2022-01-01 10:00:00,,Open, ,T,Needle Pickup,1 Main St,42.35,-71.06,Self Service",
        "case_enquiry_id",
        "missing_value",
    ),
    (
        "8,2022-01-01 10:00:00,,Open, ,T, ,1 Main St,42.35,-71.06,Self Service",
        "type",
        "missing_value",
    ),
    (
        "9,2022-01-01 10:00:00,,Open, ,T,Needle Pickup,1 Main St,nan,nan,Self Service",
        "latitude/longitude",
        "invalid_coordinates",
    ),
]


@pytest.mark.parametrize(("row", "column", "reason"), BAD_BOSTON_ROWS)
def test_bad_row_names_column_and_reason(tmp_path, row, column, reason):
    path = write(tmp_path, "bad.csv", BOSTON_HEADER + row + "\n")
    records, errors = parse_file("boston-csv", path)
    assert records == []
    assert len(errors) == 1
    position, error = errors[0]
    assert position == 2
    assert error.column == column
    assert error.reason == reason


def test_row_error_never_quotes_coordinates(tmp_path):
    row = "4,2022-01-01 10:00:00,,Open, ,T,Needle Pickup,1 Main St,42.123456,-200.5,Self Service"
    _, errors = parse_file("boston-csv", write(tmp_path, "bad.csv", BOSTON_HEADER + row + "\n"))
    assert "42.123456" not in errors[0][1].message
    assert "-200.5" not in errors[0][1].message


def test_multiline_field_keeps_line_numbers(tmp_path):
    rows = (
        '1,2022-01-01 10:00:00,,Open,"first\nsecond",T,Needle Pickup,1 Main St,42.35,-71.06,x\n'
        "2,bad date,,Open, ,T,Needle Pickup,1 Main St,42.35,-71.06,x\n"
    )
    records, errors = parse_file("boston-csv", write(tmp_path, "multi.csv", BOSTON_HEADER + rows))
    assert len(records) == 1
    assert errors[0][0] == 4


def test_short_row_reads_missing_columns_as_blank(tmp_path):
    path = write(tmp_path, "short.csv", BOSTON_HEADER + "1,2022-01-01 10:00:00,,Open\n")
    _, errors = parse_file("boston-csv", path)
    assert errors[0][1].column == "type"
    assert errors[0][1].reason == "missing_value"


def test_bad_row_lists_every_problem(tmp_path):
    row = "1,2022-13-01 10:00:00,,Reopened, ,T, ,1 Main St,north,-71.06,x\n"
    _, errors = parse_file("boston-csv", write(tmp_path, "bad.csv", BOSTON_HEADER + row))

    [(position, error)] = errors
    assert position == 2
    assert isinstance(error, InvalidInputGroup)
    problems = [(problem.column, problem.reason) for problem in error.errors]
    assert problems == [
        ("case_status", "unknown_status"),
        ("open_dt", "invalid_time"),
        ("latitude/longitude", "invalid_coordinates"),
        ("type", "missing_value"),
    ]


def test_missing_json_field_not_reported_again_as_empty(tmp_path):
    line = '{"case_enquiry_id": "1", "open_dt": "2022-01-01 10:00:00", "case_status": "Gone"}\n'
    _, errors = parse_file("boston-jsonl", write(tmp_path, "bad.jsonl", line))

    [(_, error)] = errors
    problems = [(problem.column, problem.reason) for problem in error.errors]
    assert problems == [("type", "missing_column"), ("case_status", "unknown_status")]
