"""Loopback: the only network tests and benchmarks use. Free ports on it, and a guard that
refuses any other address before a child process is pointed at it."""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 (brackets and a zone index allowed) or ``localhost``."""
    if host is None:
        return False
    host = host.strip("[]").split("%")[0]
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(target: str) -> str:
    """``target`` (a URL, ``host:port``, ``[v6]:port`` or a bare host) if it is on
    loopback, else ValueError."""
    if "://" in target:
        host = urllib.parse.urlsplit(target).hostname or ""
    else:
        hostport = target.count(":") == 1 or target.startswith("[")
        host = target.rsplit(":", 1)[0] if hostport else target
    if not is_loopback(host):
        raise ValueError(f"refusing non-loopback target {target!r}: tests stay on loopback")
    return target


def hostport(host: str, port: int) -> str:
    """``host:port`` as a resolver setting spells it (``[::1]:53`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago (racy by nature: whoever binds it may retry)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def raise_open_files_limit(wanted: int = 8192) -> int:
    """Lift the soft RLIMIT_NOFILE (1,000 clients need 1,000 sockets); returns it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target
