"""Composition root for the `hub` command."""
