"""Daemon: the long-running worker that schedules intake and sync.

The service loop (``service``), one worker per spool (``lock``), systemd's notify
protocol (``notify``), signals from ``agentspool drain`` (``control``), Prometheus
metrics (``metrics``), retention of synced sessions (``retention``), the daily remote
retention (``remote_retention``) and the local side of ``agentspool delete``
(``deletion``).
"""
