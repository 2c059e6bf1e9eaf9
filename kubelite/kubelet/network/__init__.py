"""The pod network: a node bridge, a veth per pod, host-local IPAM and nftables NAT, done in-process."""
