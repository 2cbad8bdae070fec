"""POP3 (RFC 1939, CAPA RFC 2449, STLS RFC 2595, SASL RFC 5034): a sans-IO core
(``connection``, over ``events`` and ``body``) and its asyncio driver (``session``,
``server``), as for SMTP."""
