"""Numbered SQL migrations (``NNN_name.sql``), shipped as package data."""
