"""Overflow routing to partner contact centers, disaster mode and surge planning.

The pure pieces (`hysteresis`, `eligibility`, `routing`, `erlang`, `arrivals`, `simulation`)
touch no database. `board` keeps every center's live state in memory per process, `service`
routes and works contacts, `api` serves them under `/api/v1/overflow`, and `tasks` writes the
audit entry of each routing decision.
"""
