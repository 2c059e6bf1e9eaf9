"""Container runtimes behind one CRI-shaped interface: runc, containerd, and a fake for hollow nodes."""
