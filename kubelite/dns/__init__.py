"""Cluster DNS: the records of Services and their endpoints, served over UDP and TCP like CoreDNS."""
