"""Parsing of /proc texts for idle detection (``ds01.runtime.procfs``)."""

from __future__ import annotations

from ds01.runtime.procfs import count_sessions, parse_net_dev, parse_stat

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  999999      10    0    0    0     0          0         0   999999      10    0    0    0     0       0          0
  eth0:    1500      12    0    0    0     0          0         0      700       8    0    0    0     0       0          0
  eth1:     100       1    0    0    0     0          0         0       50       1    0    0    0     0       0          0
"""  # noqa: E501 - the kernel's own layout


def test_net_dev_sums_received_and_sent_bytes_without_loopback() -> None:
    assert parse_net_dev(NET_DEV) == 1500 + 700 + 100 + 50


def test_stat_reads_command_and_parent_even_with_parens_in_the_name() -> None:
    assert parse_stat("42 (python3) S 7 42 42 0 -1") == ("python3", 7)
    assert parse_stat("43 (my (odd) name) R 42 43 43 0 -1") == ("my (odd) name", 42)
    assert parse_stat("garbage") is None


def test_sessions_are_extra_processes_started_from_outside_and_ssh_logins() -> None:
    # 10 is the init (parent 1, outside), 11 its child; 20 an exec (parent 1), 21 its child.
    parents = {10: 1, 11: 10, 20: 1, 21: 20}
    assert count_sessions({10: 1, 11: 10}, {}) == 0
    assert count_sessions(parents, {}) == 1
    commands = {10: "/sbin/docker-init -- sh", 30: "sshd: alice@pts/0", 31: "sshd: /usr/sbin/sshd"}
    assert count_sessions({10: 1, 30: 10, 31: 10}, commands) == 1
