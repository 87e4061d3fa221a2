"""Scripted stand-ins for the remote services real clients talk to (served on 127.0.0.1)."""
