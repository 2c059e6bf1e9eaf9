"""Pure logic of the workload controllers: cron schedules, hashes, rollout arithmetic, ranking, policies."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from kubelite.api.kinds.cron import parse_schedule
from kubelite.controllers.cronjob import job_name, most_recent, rfc3339
from kubelite.controllers.daemonset import daemon_tolerations, pin_to_node, should_run, target_node
from kubelite.controllers.deployment import (
    MAX_REPLICAS,
    REVISION,
    REVISION_HISTORY,
    equal_ignore_hash,
    fenceposts,
    max_unavailable,
    new_rs_replicas,
    plan_old_scale_down,
    proportion,
    set_new_rs_annotations,
)
from kubelite.controllers.job import (
    JobController,
    format_indexes,
    index_generate_name,
    match_failure_policy,
    match_success_policy,
    parse_indexes,
)
from kubelite.controllers.podcontrol import (
    Expectations,
    deletion_rank,
    fnv_hash,
    scaled_value,
    semantic_equal,
    slow_start_batch,
)

Obj = dict[str, Any]
UTC_ZONE = ZoneInfo("UTC")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# cron


@pytest.mark.parametrize(("schedule", "after", "expected"), [
    ("*/15 * * * *", "2024-03-01T10:07:00", "2024-03-01T10:15:00"),
    ("*/15 * * * *", "2024-03-01T10:15:00", "2024-03-01T10:30:00"),
    ("5 4 * * *", "2024-03-01T04:05:30", "2024-03-02T04:05:00"),
    ("0 9-17/4 * * mon-fri", "2024-03-01T17:30:00", "2024-03-04T09:00:00"),
    ("0 0 1,15 * *", "2024-02-16T00:00:00", "2024-03-01T00:00:00"),
    ("0 0 29 feb *", "2023-03-01T00:00:00", "2024-02-29T00:00:00"),
    ("30 6 13 * 5", "2024-03-01T00:00:00", "2024-03-01T06:30:00"),
    ("0 12 * JAN,jul SUN", "2024-02-01T00:00:00", "2024-07-07T12:00:00"),
    ("7/20 * * * *", "2024-03-01T10:10:00", "2024-03-01T10:27:00"),
    ("@hourly", "2024-03-01T10:00:00", "2024-03-01T11:00:00"),
    ("@daily", "2024-03-01T10:00:00", "2024-03-02T00:00:00"),
    ("@weekly", "2024-03-01T10:00:00", "2024-03-03T00:00:00"),
    ("@monthly", "2024-03-01T10:00:00", "2024-04-01T00:00:00"),
    ("@yearly", "2024-03-01T10:00:00", "2025-01-01T00:00:00"),
    ("@every 1h30m", "2024-03-01T10:00:00.5", "2024-03-01T11:30:00"),
])
def test_cron_next_activation(schedule: str, after: str, expected: str) -> None:
    assert parse_schedule(schedule, UTC_ZONE).next(at(after)) == at(expected)


def test_day_of_month_and_week_are_ored_unless_one_is_a_star() -> None:
    either = parse_schedule("0 0 13 * 5", UTC_ZONE)
    assert either.next(at("2024-03-01T01:00:00")) == at("2024-03-08T00:00:00"), "a Friday, not the 13th"
    both = parse_schedule("0 0 * * 5", UTC_ZONE)
    assert both.next(at("2024-03-01T01:00:00")) == at("2024-03-08T00:00:00")
    stepped = parse_schedule("0 0 */2 * 5", UTC_ZONE)
    assert stepped.next(at("2024-03-01T01:00:00")) == at("2024-03-03T00:00:00"), "*/2 is no star: OR semantics"


def test_time_zones_and_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    schedule = parse_schedule("0 9 * * *", berlin)
    assert schedule.next(at("2024-03-30T09:00:00")) == at("2024-03-31T07:00:00"), "09:00 CEST is 07:00 UTC"
    assert schedule.next(at("2024-03-29T12:00:00")) == at("2024-03-30T08:00:00"), "09:00 CET is 08:00 UTC"
    prefixed = parse_schedule("CRON_TZ=America/New_York 0 0 * * *", UTC_ZONE)
    assert prefixed.next(at("2024-01-01T00:00:00")) == at("2024-01-01T05:00:00")


@pytest.mark.parametrize("bad", ["* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 7",
                                 "5-1 * * * *", "*/0 * * * *", "@fortnightly", "@every 1x", "a * * * *"])
def test_invalid_schedules_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(bad, UTC_ZONE)


def test_most_recent_missed_time_and_counts() -> None:
    hourly = parse_schedule("0 * * * *", UTC_ZONE)
    assert most_recent(hourly, at("2024-03-01T10:30:00"), at("2024-03-01T10:59:00")) == (None, 0)
    assert most_recent(hourly, at("2024-03-01T10:30:00"), at("2024-03-01T11:10:00")) == (at("2024-03-01T11:00:00"), 1)
    latest, missed = most_recent(hourly, at("2024-03-01T10:30:00"), at("2024-03-06T10:30:00"))
    assert latest == at("2024-03-06T10:00:00") and missed == 120
    weekdays = parse_schedule("0 9 * * 1-5", UTC_ZONE)
    friday, monday = at("2024-03-01T08:00:00"), at("2024-03-04T10:00:00")
    assert most_recent(weekdays, friday, monday)[0] == at("2024-03-04T09:00:00")


def test_job_names_and_scheduled_timestamps() -> None:
    cronjob = {"metadata": {"name": "backup"}}
    assert job_name(cronjob, at("2024-03-01T10:00:00")) == f"backup-{int(at('2024-03-01T10:00:00').timestamp()) // 60}"
    assert rfc3339(at("2024-03-01T10:00:00")) == "2024-03-01T10:00:00Z"
    assert rfc3339(at("2024-03-01T10:00:00").astimezone(ZoneInfo("Asia/Kolkata"))) == "2024-03-01T15:30:00+05:30"


# shared helpers


def test_scaled_values_round_as_asked() -> None:
    assert scaled_value("25%", 10, True) == 3 and scaled_value("25%", 10, False) == 2
    assert scaled_value(2, 10, True) == 2 and scaled_value("3", 10, False) == 3 and scaled_value(None, 5, True) == 0


def test_hash_is_stable_and_depends_on_collision_count() -> None:
    template = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    reordered = {"spec": {"containers": [{"image": "x", "name": "c"}]}, "metadata": {"labels": {"a": "b"}}}
    assert fnv_hash(template) == fnv_hash(reordered)
    assert fnv_hash(template, 1) != fnv_hash(template) != fnv_hash({**template, "spec": {}})
    assert set(fnv_hash(template)) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert semantic_equal({"a": [], "b": {"c": None}, "d": 1}, {"d": 1})


def pod(name: str, node: str = "", phase: str = "Running", ready: bool = False, restarts: int = 0,
        created: str = "2024-03-01T10:00:00Z") -> Obj:
    conditions = [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": created}]
    return {"metadata": {"name": name, "creationTimestamp": created}, "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": conditions,
                       "containerStatuses": [{"name": "c", "restartCount": restarts}]}}


def test_deletion_rank_prefers_unscheduled_pending_unready_restarting_newer() -> None:
    pods = [pod("ready-old", "n1", ready=True), pod("ready-new", "n1", ready=True, created="2024-03-01T11:00:00Z"),
            pod("unready", "n1"), pod("restarting", "n1", restarts=5), pod("pending", "n1", phase="Pending"),
            pod("unscheduled", phase="Pending")]
    order = [p["metadata"]["name"] for p in sorted(pods, key=deletion_rank)]
    assert order == ["unscheduled", "pending", "restarting", "unready", "ready-new", "ready-old"]
    assert sorted(pods[:2], key=lambda p: deletion_rank(p, 2 if p is pods[1] else 1))[0] is pods[1]


def test_expectations_wait_for_observations() -> None:
    expectations = Expectations()
    assert expectations.satisfied("ns/a")
    expectations.expect("ns/a", creations=2, deletions=["ns/p"])
    expectations.creation_observed("ns/a")
    expectations.deletion_observed("ns/a", "ns/p")
    assert not expectations.satisfied("ns/a")
    expectations.lower("ns/a", creations=1)
    assert expectations.satisfied("ns/a")
    expectations.expect("ns/b", creations=1)
    expectations.ttl = 0
    assert expectations.satisfied("ns/b"), "expired expectations no longer block"


def test_slow_start_doubles_batches_and_stops_after_a_failing_one() -> None:
    calls: list[int] = []

    async def call(index: int) -> None:
        calls.append(index)
        if index == 4:
            raise RuntimeError("quota")

    successes, error = asyncio.run(slow_start_batch(20, call))
    assert sorted(calls) == list(range(7)), "batches 1, 2, 4: the third fails, nothing more is tried"
    assert successes == 6 and str(error) == "quota"


# deployment


def deployment(replicas: int, surge: Any = "25%", unavailable: Any = "25%", **annotations: str) -> Obj:
    return {"metadata": {"annotations": annotations, "generation": 1},
            "spec": {"replicas": replicas, "strategy": {"type": "RollingUpdate", "rollingUpdate": {
                "maxSurge": surge, "maxUnavailable": unavailable}}}, "status": {"replicas": replicas}}


def rs(replicas: int, available: int = 0, **annotations: str) -> Obj:
    return {"metadata": {"name": "rs", "annotations": annotations}, "spec": {"replicas": replicas},
            "status": {"availableReplicas": available}}


def test_fenceposts_round_surge_up_and_unavailable_down() -> None:
    assert fenceposts(deployment(10)) == (3, 2)
    assert fenceposts(deployment(1)) == (1, 0)
    assert fenceposts(deployment(4, 0, 0)) == (0, 1), "both zero means one may be unavailable"
    assert max_unavailable(deployment(2, 0, 5)) == 2
    recreate = {"metadata": {}, "spec": {"replicas": 3, "strategy": {"type": "Recreate"}}}
    assert fenceposts(recreate) == (0, 0)


def test_new_replica_set_grows_within_surge() -> None:
    d = deployment(10)
    new = rs(0)
    assert new_rs_replicas(d, [rs(10), new], new) == 3
    assert new_rs_replicas(d, [rs(10), rs(3)], rs(3)) == 3, "already at replicas + maxSurge"
    assert new_rs_replicas(d, [rs(5), rs(6)], rs(6)) == 8


def test_old_sets_scale_down_within_max_unavailable() -> None:
    d = deployment(4)
    old, new = rs(4, 4), rs(1, 0)
    assert plan_old_scale_down(d, [old, new], [old], new) == [(old, 3)], "one of 4 may be unavailable"
    old, new = rs(3, 3), rs(2, 0)
    assert plan_old_scale_down(d, [old, new], [old], new) == [], "3 available is the floor"
    stale, new = rs(3, 4), rs(2, 1)
    assert plan_old_scale_down(d, [stale, new], [stale], new) == [(stale, 2)], \
        "a status still counting the pod its scale-down deleted must not buy a second one"
    older, old, new = rs(2, 0), rs(3, 3), rs(1, 1)
    older["metadata"].update(name="a", creationTimestamp="2024-01-01T00:00:00Z")
    old["metadata"].update(name="b", creationTimestamp="2024-01-02T00:00:00Z")
    assert plan_old_scale_down(d, [older, old, new], [old, older], new) == [(older, 0), (old, 2)], \
        "unready replicas go first, then one ready one"


def test_proportional_shares_of_a_scale_up() -> None:
    d = deployment(20)
    old, new = rs(8, 8, **{MAX_REPLICAS: "13"}), rs(5, 0, **{MAX_REPLICAS: "13"})
    assert proportion(old, d, 12, 0) == 7 and proportion(new, d, 12, 7) == 5
    assert proportion(rs(0), d, 12, 0) == 0
    assert proportion(old, deployment(0), -13, 0) == -8


def test_revision_annotations_keep_history_when_an_old_set_comes_back() -> None:
    d = deployment(3, note="kept", **{"kubectl.kubernetes.io/last-applied-configuration": "{}"})
    back = rs(0, **{REVISION: "1"})
    assert set_new_rs_annotations(d, back, 4, exists=True)
    annotations = back["metadata"]["annotations"]
    assert annotations[REVISION] == "4" and annotations[REVISION_HISTORY] == "1" and annotations["note"] == "kept"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in annotations
    assert not set_new_rs_annotations(d, back, 4, exists=True)
    set_new_rs_annotations(d, back, 6, exists=True)
    assert annotations[REVISION_HISTORY] == "1,4"


def test_templates_compare_without_the_hash_label() -> None:
    plain = {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    hashed = {"metadata": {"labels": {"app": "a", "pod-template-hash": "abc"}},
              "spec": {"containers": [{"name": "c", "image": "x"}], "volumes": []}}
    assert equal_ignore_hash(plain, hashed)
    assert not equal_ignore_hash(plain, {**hashed, "spec": {"containers": [{"name": "c", "image": "y"}]}})


# daemonset


def daemonset(**pod_spec: Any) -> Obj:
    return {"spec": {"template": {"spec": {"containers": [], **pod_spec}}}}


def node(name: str, labels: dict[str, str] | None = None, taints: list[Obj] | None = None) -> Obj:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"taints": taints or []}}


def test_daemon_pods_tolerate_node_problems() -> None:
    tolerations = daemon_tolerations({"tolerations": [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]})
    assert {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"} in tolerations
    assert len(tolerations) == 6
    assert len(daemon_tolerations({"hostNetwork": True})) == 7


def test_should_run_follows_selectors_affinity_and_taints() -> None:
    assert should_run(node("n", {"disk": "ssd"}), daemonset(nodeSelector={"disk": "ssd"})) == (True, True)
    assert should_run(node("n"), daemonset(nodeSelector={"disk": "ssd"})) == (False, False)
    no_schedule = node("n", taints=[{"key": "gpu", "effect": "NoSchedule"}])
    assert should_run(no_schedule, daemonset()) == (False, True), "NoSchedule keeps running pods"
    no_execute = node("n", taints=[{"key": "gpu", "effect": "NoExecute"}])
    assert should_run(no_execute, daemonset()) == (False, False)
    tolerating = daemonset(tolerations=[{"key": "gpu", "operator": "Exists"}])
    assert should_run(no_execute, tolerating) == (True, True)
    cordoned = node("n", taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}])
    assert should_run(cordoned, daemonset()) == (True, True)
    assert should_run(node("n"), daemonset(nodeName="other")) == (False, False)
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}
    assert should_run(node("n", {"zone": "b"}), daemonset(affinity=affinity))[0] is False


def test_daemon_pods_are_pinned_by_node_affinity() -> None:
    affinity = pin_to_node({"podAffinity": {}}, "n1")
    pinned = {"spec": {"affinity": affinity}}
    assert target_node(pinned) == "n1" and "podAffinity" in affinity
    assert target_node({"spec": {"nodeName": "n2", "affinity": affinity}}) == "n2"
    assert target_node({"spec": {}}) is None


# job


def test_completed_indexes_round_trip() -> None:
    assert format_indexes({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert parse_indexes("0-2,5,7-8", 8) == {0, 1, 2, 5, 7}
    assert parse_indexes("", 3) == set() and format_indexes(set()) == ""
    assert index_generate_name("job", 3) == "job-3-"
    assert len(index_generate_name("j" * 70, 12)) == 58


def failed_pod(code: int, conditions: list[Obj] | None = None) -> Obj:
    return {"metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed", "conditions": conditions or [],
                       "containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": code}}}]}}


def test_pod_failure_policy_rules_in_order() -> None:
    policy = {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
        {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [0, 42]}}]}
    assert match_failure_policy(policy, failed_pod(1, [{"type": "DisruptionTarget", "status": "True"}])) == (None,
                                                                                                           False)
    message, counts = match_failure_policy(policy, failed_pod(42))
    assert counts and message == "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"
    assert match_failure_policy(policy, failed_pod(3)) == (None, True)
    assert match_failure_policy(None, failed_pod(3)) == (None, True)


def test_success_policy() -> None:
    policy = {"rules": [{"succeededIndexes": "0,2", "succeededCount": 1}, {"succeededCount": 3}]}
    assert match_success_policy(policy, 5, {1}) is None
    assert match_success_policy(policy, 5, {2}) == "Matched rules at index 0"
    assert match_success_policy(policy, 5, {1, 3, 4}) == "Matched rules at index 1"


def indexed_pod(name: str, index: int | None, ready: bool = False) -> Obj:
    annotations = {} if index is None else {"batch.kubernetes.io/job-completion-index": str(index)}
    return {**pod(name, "n", ready=ready), "metadata": {"name": name, "annotations": annotations,
                                                       "creationTimestamp": "2024-03-01T10:00:00Z"}}


def test_removal_of_duplicate_and_invalid_indexes() -> None:
    job = {"spec": {"completionMode": "Indexed", "completions": 3}}
    pods = [indexed_pod("a", 0, ready=True), indexed_pod("b", 0), indexed_pod("c", 5), indexed_pod("d", None),
            indexed_pod("e", 1)]
    doomed = {p["metadata"]["name"] for p in JobController.removal_candidates(job, pods, 0)}
    assert doomed == {"b", "c", "d"}, "keep the best pod of each valid index"
    assert len(JobController.removal_candidates({"spec": {}}, pods, 2)) == 2


def test_backoff_doubles_from_the_last_failure() -> None:
    controller = object.__new__(JobController)
    controller.backoff_base, controller.backoff_max = 10.0, 360.0
    now = at("2024-03-01T10:00:00")
    controller.now = lambda: now
    controller.backoffs = {}
    failed = [{"metadata": {}, "status": {"containerStatuses": [
        {"state": {"terminated": {"finishedAt": "2024-03-01T09:59:55Z"}}}]}}]
    record = controller.next_backoff("ns/j", [], failed, now)
    assert record.failures == 1 and controller.backoff_remaining(record) == pytest.approx(5.0)
    controller.backoffs["ns/j"] = record
    record = controller.next_backoff("ns/j", [], failed, now)
    assert record.failures == 2 and controller.backoff_remaining(record) == pytest.approx(15.0)
    assert controller.next_backoff("ns/j", [{"metadata": {}, "status": {}}], [], now + timedelta(1)).failures == 0
