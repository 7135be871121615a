"""Parsing of /proc texts for idle detection (``ds01.runtime.procfs``)."""

from __future__ import annotations

from ds01.runtime.procfs import parse_net_dev

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  999999      10    0    0    0     0          0         0   999999      10    0    0    0     0       0          0
  eth0:    1500      12    0    0    0     0          0         0      700       8    0    0    0     0       0          0
  eth1:     100       1    0    0    0     0          0         0       50       1    0    0    0     0       0          0
"""  # noqa: E501 - the kernel's own layout


def test_net_dev_sums_received_and_sent_bytes_without_loopback() -> None:
    assert parse_net_dev(NET_DEV) == 1500 + 700 + 100 + 50
