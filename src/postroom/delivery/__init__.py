"""Delivery: from "due" to "done".

The scheduler claims due recipients from the store, the router picks each one's mailer
chain and walks it on failover, mailers return one ``Outcome`` per recipient, and the
scheduler records them, schedules retries (``backoff``) and sends DSNs (``dsn``).
"""
