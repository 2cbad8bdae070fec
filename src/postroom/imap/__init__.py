"""IMAP4rev1 (RFC 3501): sans-IO cores (``tokens``, ``receiver``, ``commands``,
``responses``, ``connection``, ``structure``, ``search``) under an asyncio session.

The cores take bytes and give commands; the session answers them over the mailbox store.
"""
