"""The Service proxy: Services and EndpointSlices to nftables rules on each node (kube-proxy's nftables mode)."""
