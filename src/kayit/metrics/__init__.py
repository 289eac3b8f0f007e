"""A node's Prometheus metrics and its dashboard, served over HTTP on ``--metrics-port``."""
