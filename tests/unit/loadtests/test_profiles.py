"""Stored load profiles match what their derivation gives on the real 311 exports."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loadtests.profiles import OPERATIONS, PROFILE_DIR, derive, load_profile, read_rows

SOURCES = {
    "nyc": ["311_records/nyc/311_Service_Requests.csv", "311_records/nyc/nyc311-100.csv"],
    "sf": ["311_records/sf/cases_sample_10000(no-geo).csv"],
    "boston": ["311_records/boston/boston311-100.csv"],
}


@pytest.mark.parametrize("city", sorted(SOURCES))
def test_profile_matches_real_records(city: str, shared_data: Path) -> None:
    derived = derive(city, read_rows(shared_data / path for path in SOURCES[city]))
    stored = yaml.safe_load((PROFILE_DIR / f"{city}.yaml").read_text(encoding="utf-8"))

    assert stored == derived


@pytest.mark.parametrize("path", sorted(PROFILE_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_profile_shares_are_distributions(path: Path) -> None:
    profile = load_profile(path)

    assert sum(profile["hourly_arrivals"]) == pytest.approx(1.0, abs=0.01)
    assert sum(profile["service_rank_shares"]) == pytest.approx(1.0, abs=0.01)
    assert set(profile["operations"]) == set(OPERATIONS)
    assert sum(profile["operations"].values()) == pytest.approx(1.0, abs=0.01)
    assert profile["operations"]["post_request"] > 0


def test_profile_holds_numbers_only(shared_data: Path) -> None:
    rows = read_rows([shared_data / SOURCES["boston"][0]])
    text = (PROFILE_DIR / "boston.yaml").read_text(encoding="utf-8")

    service_names = {row["type"] for row in rows if row["type"]}
    assert not [name for name in service_names if name in text]


def test_load_profile_rejects_short_curve(tmp_path: Path) -> None:
    path = tmp_path / "short.yaml"
    path.write_text(
        "hourly_arrivals: [1.0]\nservice_rank_shares: [1.0]\noperations: {post_request: 1}\n"
    )

    with pytest.raises(ValueError, match="24 shares"):
        load_profile(path)
