"""Where webhooks may be sent: the guard against server-side request forgery.

Production: https only, and the host must resolve to public addresses only (no private,
loopback, link-local, CGNAT, multicast, reserved or cloud-metadata address). The check runs at
registration and again at every attempt, and the attempt connects to the very address that
was checked (the URL's host goes in the Host header and TLS SNI, so the certificate is still
verified against the name): a DNS answer that changes between check and connect (rebinding)
cannot redirect the request. Redirects are never followed.
Development: https anywhere, or http to loopback (a receiver on this machine).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from app.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2"))
_LOOPBACK_NAMES = ("localhost",)


class TargetRefused(Exception):
    """The URL may not be called; `code` says why (never the resolved addresses)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Target:
    url: str  # what to connect to (production: the checked address)
    host_header: str | None = None
    sni_hostname: str | None = None


def blocked(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip in METADATA or ip.is_multicast or not ip.is_global


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_loopback_host(host: str) -> bool:
    ip = _literal(host)
    if ip is not None:
        return ip.is_loopback
    return host in _LOOPBACK_NAMES or host.endswith(".localhost")


def _parts(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused("webhook_url_invalid", "The URL cannot be parsed.") from None
    host = (parts.hostname or "").lower().rstrip(".")
    if parts.scheme not in ("http", "https") or not host:
        raise TargetRefused("webhook_url_invalid", "The URL must be http(s) with a host.")
    if parts.username or parts.password:
        raise TargetRefused("webhook_url_invalid", "The URL must not carry credentials.")
    if parts.fragment:
        raise TargetRefused("webhook_url_invalid", "The URL must not have a fragment.")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def check_scheme(url: str, settings: Settings) -> tuple[str, str, int]:
    scheme, host, port = _parts(url)
    if settings.mode == "production" and scheme != "https":
        raise TargetRefused("webhook_url_not_https", "Webhook URLs must use https.")
    if scheme == "http" and not _is_loopback_host(host):
        raise TargetRefused("webhook_url_not_https",
                            "Webhook URLs must use https (http only to loopback in development).")
    return scheme, host, port


async def _addresses(host: str, port: int) -> list[IPAddress]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise TargetRefused("webhook_url_unresolvable", "The URL's host does not resolve.") from None
    out: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    if not out:
        raise TargetRefused("webhook_url_unresolvable", "The URL's host does not resolve.")
    return out


async def resolve(url: str, settings: Settings) -> Target:
    """The address to connect to for this attempt, or TargetRefused."""
    scheme, host, port = check_scheme(url, settings)
    if settings.mode != "production":
        return Target(url=url)
    addresses = await _addresses(host, port)
    if any(blocked(ip) for ip in addresses):
        raise TargetRefused("webhook_url_address_refused",
                            "The URL's host resolves to a private, loopback, link-local or "
                            "metadata address.")
    ip = addresses[0]
    parts = urlsplit(url)
    netloc = f"[{ip}]" if ip.version == 6 else str(ip)
    if parts.port:
        netloc += f":{parts.port}"
    pinned = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = f"[{host}]" if ":" in host else host
    if parts.port:
        host_header += f":{parts.port}"
    return Target(url=pinned, host_header=host_header,
                  sni_hostname=host if _literal(host) is None else None)
