"""Mailers where postroom is the MTA itself: ``mx`` (straight to each domain's mail
hosts), ``relay`` (the ``smtp`` mailer type: one smarthost) and ``local`` (into our own
users' Maildirs).

The SMTP mailers share one outbound client: ``transaction`` (one transaction and the
table that judges its replies), ``connect`` (opening a session: greeting, EHLO,
STARTTLS, AUTH), ``params`` (MAIL FROM and RCPT TO parameters), ``pool`` (connection
reuse and concurrency limits) and ``wire`` (the socket edge).

Not to be confused with ``postroom.smtp``: that package holds the protocol cores without
I/O (reply parsing, command grammar) shared with the inbound server; this one drives
real connections with them.
"""
