"""The node agent: pod workers, status, node registration and heartbeat, runtimes, images, pod network."""
