"""Checks that keep requests to URLs that users give on the public internet.

A URL that a city app registers on behalf of a resident must not make the hub send requests to
its own machine or network, which is server-side request forgery. That rules out loopback,
private networks, the cloud metadata service at 169.254.169.254 and other addresses that are
not globally reachable. `host_problem` checks a URL's host when the URL is stored, and
`address_problem` checks each address that the host resolves to when a request is sent,
because DNS can change in between.
"""

from __future__ import annotations

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 1918 and the IPv6 unique local addresses (RFC 4193).
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
# IPv6 prefixes that carry an IPv4 address: NAT64 (RFC 6052) in the last 32 bits, and 6to4
# (RFC 3056) in bits 16 to 47. Such an address reaches the IPv4 address it carries.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Names that resolve only on the local machine or network: RFC 6761 (localhost), RFC 6762
# (.local, mDNS), RFC 8375 (.home.arpa), and .internal, which ICANN reserved for private use
# and which cloud providers use for their metadata service (metadata.google.internal).
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa", ".localdomain")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(address: IPAddress) -> str | None:
    """Return the kind of a non-public address (`loopback`, `private`, `link-local`,
    `multicast`, `unspecified` or `reserved`), or None for a public one.

    An IPv6 address that carries an IPv4 address (IPv4-mapped, 6to4, NAT64) is judged by the
    IPv4 address. `reserved` covers the other special-purpose ranges of the IANA registries,
    such as 100.64.0.0/10 (carrier-grade NAT), 240.0.0.0/4 and the documentation ranges.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_problem(embedded)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if any(address in network for network in _PRIVATE_NETWORKS):
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


def parse_address(host: str) -> IPAddress | None:
    """Return the IP address that `host` writes, with or without IPv6 brackets, or None for a
    host name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_legacy_ipv4(host: str) -> bool:
    # inet_aton also reads forms such as 2130706433, 127.1 and 0x7f.0.0.1, which socket
    # libraries resolve to IPv4 addresses without a DNS lookup.
    if not all(char in "0123456789abcdefx." for char in host):
        return False
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def host_problem(host: str) -> str | None:
    """Return why a URL's host is not a public one, as the end of a sentence that starts with
    "the host", or None when the host may be public.

    Rejects IP addresses that `address_problem` rejects, IPv4 addresses in legacy numeric forms,
    names of the local machine or network (localhost, *.local, *.internal and the like) and
    single-label names, which resolve through the local search domains. A name that passes may
    still resolve to a non-public address, so the sender checks the addresses again.
    """
    name = host.strip().lower().rstrip(".")
    if not name:
        return "is missing"
    address = parse_address(name)
    if address is not None:
        kind = address_problem(address)
        if kind is None:
            return None
        article = "an" if kind[0] in "aeiou" else "a"
        return f"is {article} {kind} address"
    if _is_legacy_ipv4(name):
        return "is an IPv4 address in a legacy numeric form"
    if name == "localhost" or name.endswith(_LOCAL_SUFFIXES):
        return "names the local machine or network"
    if "." not in name:
        return "is a name without a dot, which resolves only on a local network"
    return None
