"""Intake: the single way into the queue (Postfix's cleanup).

Every source (SMTP, the HTTP API, sendmail, `postroom send` and DSNs) opens a ``Submission``
with ``Intake.begin()``, adds recipients, writes the body and commits. Policy (relay,
who may send as whom, local recipients) is decided here, so it is the same for every
source. Every message passes the same clean-up (``cleanup.py``: canonical line endings, a
readable header block, Bcc and forged Authentication-Results removed, Date and
Message-ID completed). ``commit()`` returns only when the message is durable in the store.
"""

from postroom.intake.policy import (
    ANY_SENDER,
    FieldRefusal,
    Principal,
    PrincipalKind,
    SenderRefusal,
    SenderRights,
)
from postroom.intake.submission import Intake, Queued, Submission

__all__ = [
    "ANY_SENDER",
    "FieldRefusal",
    "Intake",
    "Principal",
    "PrincipalKind",
    "Queued",
    "SenderRefusal",
    "SenderRights",
    "Submission",
]
