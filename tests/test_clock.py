"""The clock override of the CLI and the services: ``$JPKI_NOW`` (and ``$JPKI_NOW_ANCHOR``)."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from jpki.clock import OffsetClock, SystemClock, clock_from_environment, parse_instant

START = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_unset_or_blank_is_the_system_clock():
    assert isinstance(clock_from_environment({}), SystemClock)
    assert isinstance(clock_from_environment({"JPKI_NOW": "  "}), SystemClock)


def test_jpki_now_starts_the_clock_and_it_runs_on():
    clock = clock_from_environment({"JPKI_NOW": "2030-01-02T03:04:05Z"})
    assert isinstance(clock, OffsetClock)
    first = clock.now()
    assert dt.timedelta(0) <= first - START < dt.timedelta(seconds=5)
    assert clock.now() >= first


def test_processes_with_one_anchor_share_one_clock():
    anchor = time.time() - 3600  # the variable was set an hour ago
    clock = clock_from_environment({"JPKI_NOW": START.isoformat(), "JPKI_NOW_ANCHOR": repr(anchor)})
    assert dt.timedelta(minutes=59) < clock.now() - START < dt.timedelta(minutes=61)


def test_a_date_without_offset_is_utc_and_a_jst_one_is_kept():
    assert parse_instant("2030-01-02") == dt.datetime(2030, 1, 2, tzinfo=dt.UTC)
    assert parse_instant("2030-01-02T12:00:00+09:00") == dt.datetime(2030, 1, 2, 3, tzinfo=dt.UTC)


@pytest.mark.parametrize("env, name", [({"JPKI_NOW": "yesterday"}, "JPKI_NOW"),
                                       ({"JPKI_NOW": "2030-01-02", "JPKI_NOW_ANCHOR": "soon"}, "JPKI_NOW_ANCHOR")])
def test_malformed_values_name_the_variable(env, name):
    with pytest.raises(ValueError, match=name):
        clock_from_environment(env)


def test_the_cli_runs_at_jpki_now(cli, tmp_path, monkeypatch):
    """`jpki ca init` as a process issues its roots at $JPKI_NOW, not today."""
    env_home = tmp_path / "h"
    p = cli.process("--json", "ca", "init", home=env_home, card=None, inherit_env=False,
                    env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JPKI_NOW": START.isoformat()})
    assert p.exit_code == 0, p.stderr
    from cryptography import x509

    root = x509.load_pem_x509_certificate((env_home / "ca" / "auth_ca.pem").read_bytes())
    assert abs(root.not_valid_before_utc - START) < dt.timedelta(minutes=5)
    p.json()


def test_a_malformed_jpki_now_is_a_usage_error(cli, tmp_path):
    p = cli.process("ca", "list", home=tmp_path / "h", card=None, inherit_env=False,
                    env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JPKI_NOW": "tomorrow"})
    assert p.exit_code == 2, p.stderr
    assert "JPKI_NOW" in p.stderr and "Traceback" not in p.stderr
