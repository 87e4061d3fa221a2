"""Sync: replicas out to the remote database.

Applies the schema (``migrations``) and moves sessions' rows to Turso / sqld or the
embedded local database.
"""
