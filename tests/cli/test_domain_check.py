"""``postroom domain check`` as users run it: a real process, a config file whose [dns]
points at a loopback DNS server, the table, the JSON and the exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.mailauth.dkim import KeyRing, record_strings
from tests.support.dns_server import DnsServer

DOMAIN = "good.test"
HELO = "mail.good.test"
IP = "192.0.2.10"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data")
    KeyRing(path).generate(DOMAIN, "s1", "rsa", 2048)
    return path


@pytest.fixture
def dns(data_dir: Path) -> Iterator[DnsServer]:
    record = KeyRing(data_dir).keys(DOMAIN)[0].record()
    zone = {
        DOMAIN: {"MX": [f"10 {HELO}."], "TXT": [f'"v=spf1 ip4:{IP} -all"']},
        HELO: {"A": [IP]},
        f"s1._domainkey.{DOMAIN}": {"TXT": [record_strings(record)]},
        f"_dmarc.{DOMAIN}": {"TXT": ['"v=DMARC1; p=reject"']},
        "10.2.0.192.in-addr.arpa": {"PTR": [f"{HELO}."]},
    }
    with DnsServer(zone) as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, data_dir: Path, dns: DnsServer) -> Path:
    path = tmp_path / "postroom.toml"
    path.write_text(  # data_dir first: one test replaces that line
        f'data_dir = "{data_dir}"\nhostname = "{HELO}"\n'
        f'[dns]\nnameservers = ["{dns.address}"]\ntimeout = 2.0\n'
        f'[delivery]\nsending_addresses = ["{IP}"]\n'
    )
    return path


def postroom(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POSTROOM_CONFIG": str(config), "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "postroom", "domain", "check", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_a_correct_domain_exits_0(config: Path) -> None:
    result = postroom(config, DOMAIN)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Check", "Status", "Finding", "Publish"]
    statuses = {line.split()[0]: line.split()[1] for line in lines[1:-1]}
    assert statuses == {
        "mx": "ok", "spf": "ok", "dkim": "ok", "dmarc": "ok", "ptr": "ok",
        "mta-sts": "ok", "tls-rpt": "ok",
    }  # fmt: skip
    assert lines[-1] == f"{DOMAIN} from {IP} as {HELO}: all required checks ok"


def test_json(config: Path) -> None:
    result = postroom(config, DOMAIN, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["addresses"] == [IP]
    assert report["hostname"] == HELO
    assert {f["check"] for f in report["findings"]} >= {"mx", "spf", "dkim", "dmarc", "ptr"}
    assert all(f["status"] == "ok" and f["fix"] is None for f in report["findings"])


def test_a_fault_exits_1_and_shows_the_record(config: Path, dns: DnsServer) -> None:
    dns.set(f"_dmarc.{DOMAIN}", "TXT")
    result = postroom(config, DOMAIN)
    assert result.returncode == 1
    dmarc = next(line for line in result.stdout.splitlines() if line.startswith("dmarc"))
    assert "missing" in dmarc
    assert dmarc.endswith(
        f"_dmarc.{DOMAIN} TXT v=DMARC1; p=quarantine; rua=mailto:postmaster@{DOMAIN}"
    )
    assert "not ready" in result.stdout.splitlines()[-1]
    assert result.stderr == ""


def test_ip_option_overrides_the_setting(config: Path) -> None:
    result = postroom(config, DOMAIN, "--ip", "198.51.100.7", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["addresses"] == ["198.51.100.7"]
    spf = next(f for f in report["findings"] if f["check"] == "spf")
    assert spf["status"] == "wrong"
    assert spf["fix"] == {
        "name": DOMAIN, "type": "TXT", "value": f"v=spf1 ip4:198.51.100.7 ip4:{IP} -all",
    }  # fmt: skip


def test_a_domain_that_does_not_exist(config: Path) -> None:
    result = postroom(config, "nowhere.test")
    assert result.returncode == 1
    assert result.stderr == "postroom: nowhere.test: no such domain (NXDOMAIN)\n"
    assert result.stdout == ""


def test_a_bad_ip_is_a_usage_error(config: Path) -> None:
    result = postroom(config, DOMAIN, "--ip", "not-an-ip")
    assert result.returncode == 2
    assert "'not-an-ip' is not an IP address" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_dkim_keys_it_names_keygen(config: Path, tmp_path: Path) -> None:
    lines = config.read_text().splitlines()
    other = tmp_path / "nokeys.toml"
    other.write_text("\n".join([f'data_dir = "{tmp_path / "nodata"}"', *lines[1:]]) + "\n")
    report = json.loads(postroom(other, DOMAIN, "--json").stdout)
    dkim = next(f for f in report["findings"] if f["check"] == "dkim")
    assert dkim["status"] == "missing"
    assert f"postroom dkim keygen {DOMAIN}" in dkim["explanation"]


def test_a_failing_lookup_is_one_line(config: Path, dns: DnsServer) -> None:
    dns.servfail.add(f"_dmarc.{DOMAIN}")
    result = postroom(config, DOMAIN)
    assert result.returncode == 1
    assert result.stderr == f"postroom: _dmarc.{DOMAIN}: TXT lookup failed (SERVFAIL)\n"
