"""A local Ray instance started by lnlab listens on loopback only.

Every listening TCP socket of the driver and its descendants (gcs_server, raylet, workers,
agents) is read from ``/proc`` and none may be bound to a non-loopback address.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytestmark = [
    pytest.mark.slow,  # starts a Ray instance (~5 s)
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

LISTEN = "0A"


def _addr(hex_addr: str) -> str:
    host, _ = hex_addr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc/net/tcp6 stores the address as four little-endian 32-bit words
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def _is_loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is IPv4 loopback on a dual-stack socket
    return ip.is_loopback


def listening_sockets() -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket on this machine."""
    out = {}
    for name in ("tcp", "tcp6"):
        p = Path("/proc/net") / name
        if not p.exists():
            continue
        for line in p.read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == LISTEN:
                out[int(f[9])] = (_addr(f[1]), int(f[1].split(":")[1], 16))
    return out


def descendants(root: int) -> set[int]:
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = {root}, [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in found]
        found.update(kids)
        todo.extend(kids)
    return found


def socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(int(target[8:-1]))
    except OSError:
        pass
    return out


def test_parsing_proc_net_addresses():
    assert _addr("0100007F:1F90") == "127.0.0.1"
    assert _addr("00000000:0050") == "0.0.0.0"
    assert _addr("00000000000000000000000001000000:0050") == "::1"
    assert _addr("0000000000000000FFFF00000100007F:0050") == "::ffff:7f00:1"
    assert _is_loopback("::ffff:7f00:1") and _is_loopback("::1")
    assert not _is_loopback("::") and not _is_loopback("0.0.0.0")
    assert not _is_loopback("192.0.2.2")


def test_a_local_ray_instance_listens_on_loopback_only():
    from lnlab.runner.ray_backend import RayBackend

    if ray.is_initialized():
        pytest.skip("Ray is already initialized in this process (not started by lnlab)")
    backend = RayBackend(workers=1)
    try:
        ref = ray.remote(lambda: os.getpid()).remote()  # start a worker too
        assert ray.get(ref, timeout=120) > 0
        listening = listening_sockets()
        ours = {}
        for pid in descendants(os.getpid()):
            for inode in socket_inodes(pid):
                if inode in listening:
                    ours[inode] = (pid, *listening[inode])
        assert ours, "found no listening socket of the Ray processes"
        exposed = {i: v for i, v in ours.items() if not _is_loopback(v[1])}
        assert not exposed, f"listening on non-loopback addresses (pid, addr, port): {exposed}"
    finally:
        backend.close()
