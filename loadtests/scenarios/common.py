"""What every scenario shares: the run configuration, raw samples and acknowledgement records.

The harness writes the run configuration (tenants, API keys, valid points, profiles) to a JSON
file and passes its path in `HUB_LOADTEST_CONFIG`. Each Locust process appends every request's
raw latency to `samples-<pid>.csv` in the run's record directory, so the report's percentiles
come from raw samples. It appends every acknowledged `service_request_id`, token or contact id
to `acks-<pid>.jsonl`, which reconciliation looks up in the database.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from locust import events
from locust.contrib.fasthttp import FastHttpUser

CONFIG_ENV = "HUB_LOADTEST_CONFIG"
OPEN311 = "/open311/v2"


@lru_cache(maxsize=1)
def config() -> dict[str, Any]:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"{CONFIG_ENV} is not set; run scenarios through `hub loadtest`")
    return json.loads(Path(path).read_text(encoding="utf-8"))


class RecordFiles:
    """Append-only sample and acknowledgement files of this process, flushed line by line."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        self._lock = threading.Lock()
        self._samples = (directory / f"samples-{pid}.csv").open("a", encoding="utf-8")
        self._acks = (directory / f"acks-{pid}.jsonl").open("a", encoding="utf-8")

    def sample(self, name: str, milliseconds: float, ok: bool) -> None:
        with self._lock:
            self._samples.write(f"{time.time():.3f},{name},{milliseconds:.3f},{int(ok)}\n")
            self._samples.flush()

    def ack(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._acks.write(json.dumps(record) + "\n")
            self._acks.flush()


_records: RecordFiles | None = None


def records() -> RecordFiles:
    global _records
    if _records is None:
        _records = RecordFiles(Path(config()["record_dir"]))
    return _records


@events.request.add_listener
def _on_request(
    request_type: str, name: str, response_time: float, exception: Any = None, **_kwargs: Any
) -> None:
    records().sample(name, float(response_time or 0.0), exception is None)


def pick_weighted(weights: dict[str, float]) -> str:
    names = list(weights)
    return random.choices(names, weights=[weights[n] for n in names])[0]


class TenantUser(FastHttpUser):
    """A client of one tenant (city app, web form or agent desk), chosen per user."""

    abstract = True

    def on_start(self) -> None:
        self.tenant = random.choice(config()["tenants"])
        self.profile = self.tenant["profile"]
        self.filed: list[str] = []

    def service_code(self) -> str:
        """Pick a service by the profile's rank shares mapped onto the tenant's catalog order."""
        codes = self.tenant["service_codes"]
        shares = self.profile["service_rank_shares"]
        ranked = shares[:-1][: len(codes)]
        rank = random.choices(range(len(ranked) + 1), weights=[*ranked, shares[-1]])[0]
        if rank < len(ranked):
            return codes[rank]
        return random.choice(codes)

    def post_request(self) -> None:
        lat, lon = random.choice(self.tenant["points"])
        code = self.service_code()
        form = {
            "jurisdiction_id": self.tenant["jurisdiction_id"],
            "api_key": self.tenant["api_key"],
            "service_code": code,
            "lat": f"{lat:.6f}",
            "long": f"{lon:.6f}",
            "description": "Load test request; no action needed.",
        }
        for attribute, value in self.tenant["attributes"].get(code, {}).items():
            form[f"attribute[{attribute}]"] = value
        with self.client.post(
            f"{OPEN311}/requests.json",
            data=form,
            name="POST /open311/v2/requests.json",
            catch_response=True,
        ) as response:
            if response.status_code not in (200, 201):
                # The body is the GeoReport error list, which never echoes the request.
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return
            try:
                body = response.json()
                item = body[0] if isinstance(body, list) else body
            except (ValueError, IndexError, KeyError, TypeError):
                response.failure("acknowledgement is not a GeoReport JSON list")
                return
            request_id = item.get("service_request_id")
            token = item.get("token")
            if not request_id and not token:
                response.failure("acknowledgement has neither service_request_id nor token")
                return
            records().ack(
                {
                    "tenant_id": self.tenant["tenant_id"],
                    "service_request_id": request_id,
                    "token": token,
                }
            )
            if request_id:
                self.filed.append(str(request_id))
                del self.filed[:-50]

    def get_request(self) -> None:
        if not self.filed:
            self.post_request()
            return
        request_id = random.choice(self.filed)
        self.client.get(
            f"{OPEN311}/requests/{request_id}.json",
            params={"jurisdiction_id": self.tenant["jurisdiction_id"]},
            name="GET /open311/v2/requests/{id}.json",
        )

    def list_requests(self) -> None:
        self.client.get(
            f"{OPEN311}/requests.json",
            params={"jurisdiction_id": self.tenant["jurisdiction_id"], "status": "open"},
            name="GET /open311/v2/requests.json",
        )

    def get_services(self) -> None:
        self.client.get(
            f"{OPEN311}/services.json",
            params={"jurisdiction_id": self.tenant["jurisdiction_id"]},
            name="GET /open311/v2/services.json",
        )

    def profile_operation(self) -> None:
        """Run one operation drawn from the tenant profile's operation shares."""
        getattr(self, pick_weighted(self.profile["operations"]))()
