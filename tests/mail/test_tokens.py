"""Signed tokens: read back only what was signed, for the purpose it was signed for."""

from __future__ import annotations

import stat
from pathlib import Path

from postroom.ids import new_queue_id
from postroom.mail.tokens import TokenKey, TokenSigner

KEY = bytes(range(32))


def test_url_token_reads_back_its_fields() -> None:
    signer = TokenSigner(KEY)
    token = signer.sign(
        "click", "0123456789ABCDEF", "a@example.net", "https://example.org/?a=1&b=2"
    )

    assert signer.read("click", token) == (
        "0123456789ABCDEF",
        "a@example.net",
        "https://example.org/?a=1&b=2",
    )


def test_url_token_is_refused_for_another_purpose_a_changed_field_or_another_key() -> None:
    signer = TokenSigner(KEY)
    token = signer.sign("open", "0123456789ABCDEF", "a@example.net")
    payload, mac = token.split(".")
    forged = TokenSigner(KEY).sign("open", "0123456789ABCDEF", "b@example.net").split(".")[0]

    assert signer.read("click", token) is None
    assert signer.read("open", f"{forged}.{mac}") is None
    assert TokenSigner(bytes(32)).read("open", token) is None
    for garbage in ("", ".", "x", "é.é", f"{payload}.", f"{payload}.{mac}x"):
        assert signer.read("open", garbage) is None


def test_verp_token_survives_case_folding_and_refuses_forgeries() -> None:
    signer = TokenSigner(KEY)
    queue_id = new_queue_id(1_800_000_000.0)
    token = signer.verp(queue_id)

    assert token == token.lower() and token.isalnum()
    assert signer.read_verp(token) == queue_id
    assert signer.read_verp(token.upper()) == queue_id
    other = new_queue_id(1_800_000_001.0)
    assert signer.read_verp(other.lower() + token[16:]) is None
    assert signer.read_verp(token[:-1]) is None
    assert TokenSigner(bytes(32)).read_verp(token) is None


def test_key_file_is_made_once_private_and_then_reused(tmp_path: Path) -> None:
    first = TokenKey.load(tmp_path)
    second = TokenKey.load(tmp_path)

    assert first == second and len(first) == 32
    assert stat.S_IMODE((tmp_path / TokenKey.FILE).stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [tmp_path / TokenKey.FILE]
