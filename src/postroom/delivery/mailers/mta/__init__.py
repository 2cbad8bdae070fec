"""Mailers where postroom is the MTA itself: ``mx`` (straight to each domain's mail
hosts), ``relay`` (the ``smtp`` mailer type: one smarthost) and ``local`` (into our own
users' Maildirs).

The SMTP mailers share one outbound client, the asyncio driver of the protocol core
``postroom.smtp.clientconnection``: ``transaction`` (one message: the core's events made
outcomes), ``connect`` (a socket for the core: connect, the TLS handshake when it asks,
bytes both ways), ``pool`` (connection reuse and concurrency limits) and ``wire`` (the
socket edge).

Not to be confused with ``postroom.smtp``: that package holds the protocol cores without
I/O (the outbound client's whole conversation and its trouble table, reply parsing,
command grammar); this one drives real connections with them.
"""
