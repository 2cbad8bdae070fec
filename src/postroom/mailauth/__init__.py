"""Mail authentication: DKIM signing and inbound SPF, DKIM and DMARC checks."""
