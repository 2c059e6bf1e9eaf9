"""The scheduler: a scheduling queue, a node cache and a plugin framework modelled on kube-scheduler."""
