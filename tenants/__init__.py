"""Tenant registry: manifests, onboarding and offboarding, API keys and roles, profiles."""
