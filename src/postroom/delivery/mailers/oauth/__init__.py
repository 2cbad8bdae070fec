"""OAuth 2.0 for the API mailers that send as a user: ``flow`` (authorizing with
``postroom mailer authorize`` and renewing access tokens) and ``tokens`` (the token
files at rest). The mailers themselves are in ``mailers.api`` (``oauthmailer`` is
their shared base).

Nothing here speaks SMTP (that is ``mailers.mta`` and the ``postroom.smtp`` cores).
"""
