"""The host and address checks behind residents' alert webhooks."""

from __future__ import annotations

import ipaddress

import pytest

from hub.core.public_hosts import address_problem, host_problem

ADDRESS_KINDS = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "::1": "loopback",
    "10.20.30.40": "private",
    "172.16.0.1": "private",
    "172.31.255.254": "private",
    "192.168.0.1": "private",
    "fd00::1": "private",
    "169.254.169.254": "link-local",
    "fe80::1": "link-local",
    "224.0.0.251": "multicast",
    "ff02::1": "multicast",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "100.64.0.1": "reserved",
    "192.0.2.10": "reserved",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    # IPv6 forms that carry an IPv4 address are judged by it.
    "::ffff:10.0.0.1": "private",
    "64:ff9b::a9fe:a9fe": "link-local",
    "2002:7f00:1::": "loopback",
    # Public addresses.
    "8.8.8.8": None,
    "172.32.0.1": None,
    "2606:4700:4700::1111": None,
    "::ffff:8.8.8.8": None,
}


@pytest.mark.parametrize(("text", "kind"), ADDRESS_KINDS.items())
def test_address_kind(text: str, kind: str | None) -> None:
    assert address_problem(ipaddress.ip_address(text)) == kind


HOST_PROBLEMS = {
    "127.0.0.1": "is a loopback address",
    "[::1]": "is a loopback address",
    "0.0.0.0": "is an unspecified address",
    "2130706433": "is an IPv4 address in a legacy numeric form",
    "0x7f.1": "is an IPv4 address in a legacy numeric form",
    "localhost": "names the local machine or network",
    "LOCALHOST.": "names the local machine or network",
    "api.localhost": "names the local machine or network",
    "printer.local": "names the local machine or network",
    "metadata.google.internal": "names the local machine or network",
    "router.home.arpa": "names the local machine or network",
    "intranet": "is a name without a dot, which resolves only on a local network",
    "": "is missing",
    "alerts.app.example.org": None,
    "alerts.app.example.org.": None,
    "8.8.8.8": None,
    "internal.example.org": None,
}


@pytest.mark.parametrize(("host", "problem"), HOST_PROBLEMS.items())
def test_host_problem(host: str, problem: str | None) -> None:
    assert host_problem(host) == problem
