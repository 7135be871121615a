"""Parsing of /proc texts for idle detection (``ds01.runtime.procfs``)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from ds01.runtime.procfs import parse_net_dev, process_cgroup, process_user

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  999999      10    0    0    0     0          0         0   999999      10    0    0    0     0       0          0
  eth0:    1500      12    0    0    0     0          0         0      700       8    0    0    0     0       0          0
  eth1:     100       1    0    0    0     0          0         0       50       1    0    0    0     0       0          0
"""  # noqa: E501 - the kernel's own layout


def test_net_dev_sums_received_and_sent_bytes_without_loopback() -> None:
    assert parse_net_dev(NET_DEV) == 1500 + 700 + 100 + 50


def test_a_process_cgroup_and_user_and_none_once_it_is_gone(tmp_path: Path) -> None:
    (tmp_path / "77").mkdir()
    (tmp_path / "77/cgroup").write_text("0::/system.slice/docker-abc.scope\n")
    assert process_cgroup(77, tmp_path) == "0::/system.slice/docker-abc.scope\n"
    assert process_user(77, tmp_path) == pwd.getpwuid(os.geteuid()).pw_name
    assert process_cgroup(78, tmp_path) is None
    assert process_user(78, tmp_path) is None
