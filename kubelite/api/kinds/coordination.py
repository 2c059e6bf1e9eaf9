"""coordination.k8s.io/v1: Leases (leader election, node heartbeats)."""

from __future__ import annotations

from kubelite.api.kinds.common import columns, dig, non_negative, since
from kubelite.api.names import invalid_value
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import AGE_COLUMN, Cause, Column, Obj, Strategy


def lease_validate(lease: Obj) -> list[Cause]:
    """ValidateLease: a positive duration and non-negative transitions."""
    spec = lease.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    causes = (
        [invalid_value("spec.leaseDurationSeconds", duration, "must be greater than 0")]
        if (isinstance(duration, int) and duration <= 0)
        else []
    )
    return causes + non_negative(spec.get("leaseTransitions"), "spec.leaseTransitions")


RESOURCES = [
    ResourceType(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        True,
        Strategy(
            has_status=False,
            validate=lease_validate,
            columns=columns(
                Column(
                    "Holder",
                    description="holderIdentity contains the identity of the holder of a current lease.",
                ),
                AGE_COLUMN,
            ),
            row=lambda o: [
                dig(o, "metadata", "name", default=""),
                dig(o, "spec", "holderIdentity", default=""),
                since(dig(o, "metadata", "creationTimestamp")),
            ],
        ),
        schema="io.k8s.api.coordination.v1.Lease",
    )
]
