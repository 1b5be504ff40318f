"""Composition root for the HTTP API."""
