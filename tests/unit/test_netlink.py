"""The netlink wire format (pure), and rtnetlink requests against the kernel in a private network namespace (root)."""

from __future__ import annotations

import errno
import os
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from kubelite.kubelet.network import netlink as nl
from kubelite.kubelet.network.rtnl import MAIN_TABLE, Neighbour, Route, Rtnl
from kubelite.kubelet.runtime import syscalls
from kubelite.kubelet.runtime.namespaces import in_fresh_thread


def test_attributes_are_padded_and_parse_back_with_nesting() -> None:
    packed = nl.string(3, "eth0") + nl.nested(18, nl.string(1, "veth"), nl.u8(7, 1)) + nl.be16(15, 8472)
    assert len(nl.string(3, "eth0")) == 12, "4 bytes of header, 'eth0\\0', padded to 4"
    attrs = nl.parse_attrs(packed)
    assert nl.read_string(attrs[3]) == "eth0"
    assert nl.read_be16(attrs[15]) == 8472
    inner = nl.parse_attrs(attrs[18])
    assert nl.read_string(inner[1]) == "veth" and inner[7] == b"\x01"
    assert 18 | nl.NLA_F_NESTED not in attrs, "the nested flag is masked off the type"


def test_truncated_attributes_end_the_parse() -> None:
    assert nl.parse_attrs(nl.u32(4, 1500)[:6]) == {}
    assert nl.parse_attrs(b"\x02\x00\x04\x00") == {}, "a length below the header's is not followed"


def _in_private_netns() -> list[object]:
    syscalls.unshare(syscalls.CLONE_NEWNET)
    seen: list[object] = []
    with Rtnl() as r:
        lo = r.link("lo")
        assert lo is not None and lo.index == 1
        seen.append(r.link("no-such-link"))
        r.add_bridge("br-test", 1400)
        with pytest.raises(nl.NetlinkError) as exists:
            r.add_bridge("br-test", 1400)
        seen.append(exists.value.code)
        bridge = r.link("br-test")
        assert bridge is not None and bridge.kind == "bridge" and bridge.mtu == 1400
        r.set_up(bridge.index)
        r.add_address(bridge.index, IPv4Interface("10.77.0.1/24"))
        seen.append(r.addresses(bridge.index))
        route = Route(IPv4Network("10.78.0.0/24"), IPv4Address("10.77.0.9"), 0, 0, 44, MAIN_TABLE)
        r.replace_route(route)
        r.replace_route(route)
        ours = [x for x in r.routes() if x.protocol == 44]
        seen.append([(x.dst, x.gateway, x.oif == bridge.index) for x in ours])
        r.delete_route(ours[0])
        seen.append([x for x in r.routes() if x.protocol == 44])
        r.add_vxlan("vx-test", 7, "10.77.0.1", 8472, "0e:00:00:00:00:01", 1350, None)
        vxlan = r.link("vx-test")
        assert vxlan is not None
        seen.append(vxlan.vxlan)
        r.replace_neighbour(Neighbour(vxlan.index, "10.79.0.0", "0e:00:00:00:00:02"))
        r.replace_fdb(Neighbour(vxlan.index, "192.0.2.7", "0e:00:00:00:00:02"))
        seen.append((r.neighbours(vxlan.index), r.fdb(vxlan.index)))
        r.delete_link(vxlan.index)
        r.delete_link(bridge.index)
        seen.append(r.link("br-test"))
    return seen


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
async def test_rtnl_requests_in_a_private_namespace() -> None:
    missing, exists, addresses, routes, left, vxlan, (neighbours, fdb), deleted = \
        await in_fresh_thread(_in_private_netns)
    assert missing is None, "a missing link is None, not an error"
    assert exists == errno.EEXIST, "the kernel's refusal comes back as NetlinkError with its errno"
    assert [a for _, a in addresses] == [IPv4Interface("10.77.0.1/24")]
    assert routes == [(IPv4Network("10.78.0.0/24"), IPv4Address("10.77.0.9"), True)], "replace is idempotent"
    assert left == []
    assert vxlan == (7, "10.77.0.1", 8472, 0)
    assert neighbours == [Neighbour(neighbours[0].index, "10.79.0.0", "0e:00:00:00:00:02")]
    assert [(e.dst, e.mac) for e in fdb] == [("192.0.2.7", "0e:00:00:00:00:02")]
    assert deleted is None
