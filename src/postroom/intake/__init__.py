"""Intake: the single way into the queue (Postfix's cleanup).

Every source (SMTP, the HTTP API, sendmail, `postroom send` and DSNs) opens a ``Submission``
with ``Intake.begin()``, adds recipients, writes the body and commits. Policy (relay,
who may send as whom, local recipients) is decided here, so it is the same for every
source. ``commit()`` returns only when the message is durable in the store.
"""

from postroom.intake.policy import Principal, PrincipalKind, SenderRefusal, SenderRights
from postroom.intake.submission import Intake, Submission

__all__ = ["Intake", "Principal", "PrincipalKind", "SenderRefusal", "SenderRights", "Submission"]
