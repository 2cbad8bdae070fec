"""The workloads: accept (and large), relay, idle connections, latency."""
