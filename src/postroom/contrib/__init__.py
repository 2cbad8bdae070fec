"""Integrations of ``postroom.client`` with application frameworks (each an optional extra)."""
