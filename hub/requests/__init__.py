"""The service-request lifecycle: intake, status events, agency routing, SLAs, duplicates."""
