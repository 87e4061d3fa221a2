"""The web viewer: ``agentspool ui``, a local, read-only view of sessions.

This stage owns the viewer's HTTP server (``server.py``, the standard library's
``ThreadingHTTPServer``), where its rows come from (``sources.py``: the spool's
replicas and worker state, or the remote database), the SQL it reads one session
with (``queries.py``: paged, never a whole session at once), and the page itself
(``static/``: hand-written HTML, CSS and JS shipped as package data, no CDN).
It only reads: every SQLite file is opened ``mode=ro`` (or ``immutable=1``, see
``agentspool.worker.readonly``), and it creates no file in the spool.
"""
