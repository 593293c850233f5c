"""Experiment specs (pydantic models loaded from YAML) and the built-in catalogs."""
