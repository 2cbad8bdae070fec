"""Mailers that hand a message to a provider's HTTP API (SendGrid, SES, Mailgun, ...).

One module per provider, each that provider's mapping only: how to build its request
and read its answer. They share ``http`` (the ``HttpMailer`` base and the status
tables), ``jsonapi`` (JSON posting and per-recipient outcomes), ``mimeparts`` (the queued
message as parts, for JSON-only APIs), ``rcptsplit`` (envelope recipients as To, Cc and
Bcc within a provider's caps), ``limits`` (sending windows) and ``oauthmailer`` (the base
of the mailers that send as a user with OAuth: Gmail, Microsoft Graph, Zoho).

No SMTP here: the SMTP mailers are in ``mailers.mta``, the protocol cores in
``postroom.smtp``.
"""
