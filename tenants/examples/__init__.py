"""Example tenant manifests shipped as package data (`tenants.manifest.example_paths`)."""
