"""``postroom dkim``: keys created, listed, shown, rotated and activated, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import dkim
import pytest


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "postroom.toml"
    path.write_text(f'hostname = "mail.test"\ndata_dir = "{tmp_path / "data"}"\n')
    return path


def postroom(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POSTROOM_CONFIG": str(config), "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "postroom", "dkim", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )


RECORD = re.compile(r'^(?P<name>\S+)\. IN TXT (?P<strings>(?:"[^"]{1,255}" ?)+)$', re.M)


def record_value(output: str) -> tuple[str, str]:
    match = RECORD.search(output)
    assert match is not None, output
    return match["name"], "".join(re.findall(r'"([^"]*)"', match["strings"]))


def test_keygen_prints_the_record_to_publish(config: Path, tmp_path: Path) -> None:
    done = postroom(config, "keygen", "example.test", "--selector", "mail1")
    assert done.returncode == 0, done.stderr
    name, value = record_value(done.stdout)
    assert name == "mail1._domainkey.example.test"
    assert value.startswith("v=DKIM1; k=rsa; p=")
    dkim.evaluate_pk(name.encode(), value.encode())  # a key record dkimpy accepts
    key = tmp_path / "data" / "dkim" / "example.test" / "mail1.rsa.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ed = postroom(config, "keygen", "example.test", "--algorithm", "ed25519")
    assert ed.returncode == 0, ed.stderr
    name, value = record_value(ed.stdout)
    assert re.fullmatch(r"e\d{6}\._domainkey\.example\.test", name)
    assert value.startswith("v=DKIM1; k=ed25519; p=")
    shown = postroom(config, "show", "example.test")
    assert shown.returncode == 0
    assert len(RECORD.findall(shown.stdout)) == 2
    listed = json.loads(postroom(config, "list", "--json").stdout)
    assert sorted((k["algorithm"], k["active"]) for k in listed) == [
        ("ed25519", True),
        ("rsa", True),
    ]


def test_rotate_then_activate(config: Path) -> None:
    assert postroom(config, "keygen", "example.test", "--selector", "old").returncode == 0
    rotated = postroom(config, "rotate", "example.test")
    assert rotated.returncode == 0, rotated.stderr
    new_name, _ = record_value(rotated.stdout)
    new = new_name.split(".")[0]
    assert "postroom dkim activate example.test " + new in rotated.stdout
    keys = {
        k["selector"]: k["active"] for k in json.loads(postroom(config, "list", "--json").stdout)
    }
    assert keys == {"old": True, new: False}  # the old key signs until activate
    activated = postroom(config, "activate", "example.test", new)
    assert activated.returncode == 0
    keys = {
        k["selector"]: k["active"] for k in json.loads(postroom(config, "list", "--json").stdout)
    }
    assert keys == {"old": False, new: True}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("keygen", "not a domain"), "is not a domain name"),
        (("keygen", "example.test", "--selector", "a_b"), "is not a selector"),
        (("keygen", "example.test", "--bits", "512"), "1024 to 8192"),
        (("show", "example.test"), "no DKIM keys for example.test"),
        (("rotate", "example.test"), "no DKIM keys for example.test"),
        (("activate", "example.test", "nope"), "has no key with selector 'nope'"),
    ],
)
def test_errors_are_one_line(config: Path, args: tuple[str, ...], message: str) -> None:
    done = postroom(config, *args)
    assert done.returncode == 1
    assert done.stderr.startswith("postroom: ")
    assert message in done.stderr
    assert done.stderr.count("\n") == 1
