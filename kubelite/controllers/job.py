"""Jobs: run pods to completion, counting finished ones through the tracking finalizer (upstream job controller)."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kubelite.client.controller import Requeue
from kubelite.client.errors import ApiError, is_not_found
from kubelite.client.resources import JOBS, PODS
from kubelite.client.store import NAMESPACE_INDEX, key_of, split_key
from kubelite.client.timestamps import format_time, parse_time
from kubelite.controllers.podcontrol import (
    Obj,
    WorkloadController,
    condition,
    controller_of,
    deletion_rank,
    is_active,
    is_ready,
    is_terminating,
    labels_of,
    phase,
    pod_from_template,
    slow_start_batch,
    utcnow,
)

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
MAX_UNCOUNTED = 500
"""At most this many pods are counted (and their finalizers removed) per sync."""
MAX_PODS_PER_SYNC = 500
MAX_GENERATED_NAME = 58


def completion_index(pod: Obj) -> int | None:
    """The pod's completion index annotation (None when absent or invalid)."""
    value = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX, "")
    return int(value) if value.isdigit() else None


def parse_indexes(text: str | None, completions: int) -> set[int]:
    """"1,3-5" as a set of indexes below completions."""
    indexes: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            indexes.update(range(int(first), min(int(last or first), completions - 1) + 1))
    return indexes


def format_indexes(indexes: set[int]) -> str:
    """A set of indexes as "1,3-5"."""
    ranges = []
    for _, run in itertools.groupby(enumerate(sorted(indexes)), lambda pair: pair[1] - pair[0]):
        values = [v for _, v in run]
        ranges.append(str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}")
    return ",".join(ranges)


def index_generate_name(job: str, index: int) -> str:
    """<job>-<index>- (the job name shortened so the generated name stays short enough)."""
    suffix = f"-{index}-"
    return f"{job[:MAX_GENERATED_NAME - len(suffix)]}{suffix}"


def has_finalizer(pod: Obj) -> bool:
    """The pod still carries the tracking finalizer (it has not been counted)."""
    return TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or [])


def is_finished(job: Obj) -> bool:
    """Complete or Failed."""
    return any((condition(job, t) or {}).get("status") == "True" for t in ("Complete", "Failed"))


def new_condition(type_: str, status: str, reason: str, message: str, now: datetime) -> Obj:
    """A job condition stamped now."""
    return {"type": type_, "status": status, "lastProbeTime": format_time(now),
            "lastTransitionTime": format_time(now), "reason": reason, "message": message}


def ensure_condition(status: Obj, type_: str, value: str, reason: str, message: str, now: datetime) -> bool:
    """ensureJobConditionStatus: set the condition if it differs (a False one is only added over an existing one)."""
    conditions = status.setdefault("conditions", [])
    for i, cond in enumerate(conditions):
        if cond.get("type") == type_:
            if (cond.get("status"), cond.get("reason"), cond.get("message")) == (value, reason, message):
                return False
            conditions[i] = new_condition(type_, value, reason, message, now)
            return True
    if value == "False":
        return False
    conditions.append(new_condition(type_, value, reason, message, now))
    return True


def only_replace_failed(job: Obj) -> bool:
    """Replacement pods wait for failed ones to finish terminating."""
    return job["spec"].get("podReplacementPolicy") == "Failed" or bool(job["spec"].get("podFailurePolicy"))


def is_failed(pod: Obj, job: Obj) -> bool:
    """Failed, or (unless only failed pods are replaced) deleted before succeeding."""
    if phase(pod) == "Failed":
        return True
    if only_replace_failed(job):
        return False
    return bool(pod["metadata"].get("deletionTimestamp")) and phase(pod) != "Succeeded"


def _exit_code_container(status: Obj, requirement: Obj) -> Obj | None:
    """The first terminated container whose non-zero exit code meets an onExitCodes requirement."""
    for container in [*(status.get("containerStatuses") or []), *(status.get("initContainerStatuses") or [])]:
        code = ((container.get("state") or {}).get("terminated") or {}).get("exitCode")
        if not code or requirement.get("containerName") not in (None, container.get("name")):
            continue
        if (code in (requirement.get("values") or [])) == (requirement.get("operator") == "In"):
            return container
    return None


def match_failure_policy(policy: Obj | None, pod: Obj) -> tuple[str | None, bool]:
    """matchPodFailurePolicy: (the FailJob message, whether the failure counts against backoffLimit)."""
    if not policy:
        return None, True
    status, where = pod.get("status") or {}, f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    for index, rule in enumerate(policy.get("rules") or []):
        action = rule.get("action")
        if rule.get("onExitCodes") is not None:
            container = _exit_code_container(status, rule["onExitCodes"])
            if container is None:
                continue
            code = container["state"]["terminated"]["exitCode"]
            what = (f"Container {container['name']} for pod {where} failed with exit code {code} matching {action} "
                    f"rule at index {index}")
        else:
            patterns = rule.get("onPodConditions") or []
            cond = next((c for c in status.get("conditions") or [] for p in patterns
                         if c.get("type") == p.get("type") and c.get("status") == p.get("status", "True")), None)
            if cond is None:
                continue
            what = f"Pod {where} has condition {cond['type']} matching {action} rule at index {index}"
        if action == "Ignore":
            return None, False
        return (what if action == "FailJob" else None), True
    return None, True


def match_success_policy(policy: Obj | None, completions: int, succeeded: set[int]) -> str | None:
    """matchSuccessPolicy: the message of the first rule the succeeded indexes meet."""
    if not policy or not succeeded:
        return None
    for index, rule in enumerate(policy.get("rules") or []):
        count = rule.get("succeededCount")
        if rule.get("succeededIndexes") is not None:
            wanted = parse_indexes(rule["succeededIndexes"], completions)
            done = len(wanted & succeeded)
            if wanted and (done >= count if count is not None else done == len(wanted)):
                return f"Matched rules at index {index}"
        elif count is not None and len(succeeded) >= count:
            return f"Matched rules at index {index}"
    return None


def past_backoff_on_failure(job: Obj, pods: list[Obj]) -> bool:
    """With restartPolicy OnFailure, container restarts of running pods count against backoffLimit."""
    if (job["spec"]["template"].get("spec") or {}).get("restartPolicy") != "OnFailure":
        return False
    restarts = sum(c.get("restartCount", 0) for p in pods if phase(p) in ("Running", "Pending")
                   for c in [*(p["status"].get("initContainerStatuses") or []),
                             *(p["status"].get("containerStatuses") or [])])
    limit = job["spec"].get("backoffLimit", 6)
    return restarts > 0 if limit == 0 else restarts >= limit


def finish_time(pod: Obj, now: datetime) -> datetime:
    """When a pod finished: its last container's finishedAt, else its deletion time, else now."""
    times = [parse_time(((c.get("state") or {}).get("terminated") or {}).get("finishedAt"))
             for c in (pod.get("status") or {}).get("containerStatuses") or []]
    return max((t for t in times if t), default=None) or parse_time(pod["metadata"].get("deletionTimestamp")) or now


@dataclass
class _Backoff:
    """Failures since the last success and when the last one happened (the pod backoff record)."""

    failures: int = 0
    last_failure: datetime | None = None


@dataclass
class _Sync:
    """What one sync of a job knows (syncJobCtx)."""

    job: Obj
    pods: list[Obj]
    active: list[Obj]
    uncounted_succeeded: set[str]
    uncounted_failed: set[str]
    expected_removals: set[str]
    ready: int = 0
    terminating: int = 0
    succeeded: int = 0
    failed: int = 0
    finished: Obj | None = None
    prev_indexes: set[int] = field(default_factory=set)
    indexes: set[int] = field(default_factory=set)
    backoff: _Backoff = field(default_factory=_Backoff)
    requeue: float | None = None


class JobController(WorkloadController):
    """Creates a job's pods up to parallelism, counts them as they finish, and marks the job Complete or Failed."""

    name = "job"
    component = "job-controller"
    kind = "Job"

    def setup(self) -> None:
        """Watch jobs and their pods; keep finalizer-removal expectations and pod backoff records."""
        super().setup()
        self.jobs = self.watch(JOBS)
        self.pods = self.watch_pods(self.jobs)
        self.pods.add_handlers(on_update=lambda old, new: self._removal_seen(new, gone=False),
                               on_delete=lambda pod: self._removal_seen(pod, gone=True))
        self.removing: dict[str, set[str]] = {}
        self.backoffs: dict[str, _Backoff] = {}
        self.now: Callable[[], datetime] = utcnow
        self.backoff_base, self.backoff_max = 10.0, 360.0

    def _removal_seen(self, pod: Obj, gone: bool) -> None:
        if gone or not has_finalizer(pod):
            for key in self._owner_keys(pod):
                self.removing.get(key, set()).discard(pod["metadata"]["uid"])

    async def reconcile(self, key: str) -> Requeue | None:
        """syncJob: count finished pods, decide whether the job is done, otherwise create or delete pods."""
        cached = self.jobs.store.get(key)
        if cached is None or is_finished(cached):
            if cached is None:
                self.expectations.forget(key)
                self.removing.pop(key, None)
            self.backoffs.pop(key, None)
            await self.release_pods(key, cached)
            return None
        mode = cached["spec"].get("completionMode", "NonIndexed")
        if mode not in ("NonIndexed", "Indexed"):
            self.recorder.event(cached, "Warning", "UnknownCompletionMode",
                                "Skipped Job sync because completion mode is unknown")
            return None
        job = copy.deepcopy(cached)
        spec, status = job["spec"], job.setdefault("status", {})
        uncounted = status.setdefault("uncountedTerminatedPods", {})
        satisfied = self.expectations.satisfied(key)
        selector = self.selector(job)
        pods = await self.claim(PODS, job, self.pods.store.by_index(NAMESPACE_INDEX, job["metadata"]["namespace"]),
                                lambda p: selector.matches(labels_of(p)))
        now = self.now()
        ctx = _Sync(job, pods, [p for p in pods if is_active(p)], set(uncounted.get("succeeded") or []),
                    set(uncounted.get("failed") or []), set(self.removing.get(key, ())))
        ctx.ready, ctx.terminating = sum(map(is_ready, ctx.active)), sum(map(is_terminating, pods))
        active = len(ctx.active)
        new_succeeded = [p for p in self.countable(ctx, ctx.uncounted_succeeded) if phase(p) == "Succeeded"]
        new_failed = [p for p in self.countable(ctx, ctx.uncounted_failed) if is_failed(p, job)]
        policy = spec.get("podFailurePolicy")
        ctx.succeeded = status.get("succeeded", 0) + len(new_succeeded) + len(ctx.uncounted_succeeded)
        ctx.failed = (status.get("failed", 0) + sum(match_failure_policy(policy, p)[1] for p in new_failed)
                      + len(ctx.uncounted_failed))
        suspended = bool(spec.get("suspend"))
        if not status.get("startTime") and not suspended:
            status["startTime"] = format_time(now)
        ctx.backoff = self.next_backoff(key, new_succeeded, new_failed, now)
        self.judge(ctx, now)
        suspend_changed, error = False, None
        if ctx.finished is not None:
            deleted, deleted_ready, error = await self.delete_pods(job, ctx.active, key=None)
            if deleted != active or not satisfied:
                ctx.finished = None
            active -= deleted
            ctx.terminating += deleted
            ctx.ready -= deleted_ready
        else:
            managed = satisfied and not job["metadata"].get("deletionTimestamp")
            if managed:
                active, error = await self.manage(key, ctx)
            completions = spec.get("completions")
            if (ctx.succeeded > 0 if completions is None else ctx.succeeded >= completions) and active == 0:
                ctx.finished = new_condition("SuccessCriteriaMet", "True", "CompletionsReached",
                                             "Reached expected number of succeeded pods", now)
            elif managed and suspended:
                if suspend_changed := ensure_condition(status, "Suspended", "True", "JobSuspended", "Job suspended",
                                                       now):
                    self.recorder.event(job, "Normal", "Suspended", "Job suspended")
            elif managed:
                if suspend_changed := ensure_condition(status, "Suspended", "False", "JobResumed", "Job resumed", now):
                    self.recorder.event(job, "Normal", "Resumed", "Job resumed")
                    status["startTime"] = format_time(now)
        needs_flush = suspend_changed or (active, ctx.ready, ctx.terminating) != (
            status.get("active", 0), status.get("ready"), status.get("terminating"))
        status.update(active=active, ready=ctx.ready, terminating=ctx.terminating)
        await self.track(key, ctx, needs_flush)
        if error is not None:
            raise error
        return Requeue(after=ctx.requeue) if ctx.requeue else None

    def countable(self, ctx: _Sync, uncounted: set[str]) -> list[Obj]:
        """getValidPodsWithFilter: pods not counted yet (finalizer on, not listed, valid index)."""
        completions = ctx.job["spec"].get("completions") or 0
        indexed = ctx.job["spec"].get("completionMode") == "Indexed"
        return [p for p in ctx.pods if has_finalizer(p) and p["metadata"]["uid"] not in uncounted
                and p["metadata"]["uid"] not in ctx.expected_removals
                and (not indexed or ((ix := completion_index(p)) is not None and ix < completions))]

    def judge(self, ctx: _Sync, now: datetime) -> None:
        """Set ctx.finished from the pod failure policy, backoffLimit, active deadline or success policy."""
        job, spec, status = ctx.job, ctx.job["spec"], ctx.job["status"]
        met = condition(job, "SuccessCriteriaMet")
        ctx.finished = met if (met or {}).get("status") == "True" else None
        target = condition(job, "FailureTarget")
        if ctx.finished is None and (target or {}).get("status") == "True":
            ctx.finished = new_condition("Failed", "True", target["reason"], target.get("message", ""), now)
        elif ctx.finished is None and spec.get("podFailurePolicy"):
            message = next((m for p in ctx.pods if is_failed(p, job)
                            if (m := match_failure_policy(spec["podFailurePolicy"], p)[0])), None)
            if message:
                ctx.finished = new_condition("FailureTarget", "True", "PodFailurePolicy", message, now)
        deadline, started = spec.get("activeDeadlineSeconds"), parse_time(status.get("startTime"))
        if ctx.finished is None:
            if ctx.failed > spec.get("backoffLimit", 6) or past_backoff_on_failure(job, ctx.pods):
                ctx.finished = new_condition("FailureTarget", "True", "BackoffLimitExceeded",
                                             "Job has reached the specified backoff limit", now)
            elif deadline is not None and started is not None and not spec.get("suspend"):
                left = (started + timedelta(seconds=deadline) - now).total_seconds()
                if left <= 0:
                    ctx.finished = new_condition("FailureTarget", "True", "DeadlineExceeded",
                                                 "Job was active longer than specified deadline", now)
                else:
                    ctx.requeue = left
        if spec.get("completionMode") == "Indexed":
            completions = spec["completions"]
            ctx.prev_indexes = parse_indexes(status.get("completedIndexes"), completions)
            ctx.indexes = ctx.prev_indexes | {ix for p in ctx.pods if phase(p) == "Succeeded" and has_finalizer(p)
                                              if (ix := completion_index(p)) is not None and ix < completions}
            ctx.succeeded = len(ctx.indexes)
            if ctx.finished is None and (message := match_success_policy(spec.get("successPolicy"), completions,
                                                                         ctx.indexes)):
                ctx.finished = new_condition("SuccessCriteriaMet", "True", "SuccessPolicy", message, now)

    async def manage(self, key: str, ctx: _Sync) -> tuple[int, Exception | None]:
        """manageJob: delete surplus (or, suspended, all) active pods, else create up to the wanted number."""
        job, spec = ctx.job, ctx.job["spec"]
        active = len(ctx.active)
        if spec.get("suspend"):
            want = 0
        elif spec.get("completions") is None:
            want = active if ctx.succeeded > 0 else spec.get("parallelism", 1)
        else:
            want = max(min(spec["completions"] - ctx.succeeded, spec.get("parallelism", 1)), 0)
        doomed = self.removal_candidates(job, ctx.active, max(active - want, 0))[:MAX_PODS_PER_SYNC]
        if doomed:
            removed, removed_ready, error = await self.delete_pods(job, doomed, key=key)
            ctx.terminating += removed
            ctx.ready -= removed_ready
            return active - removed, error
        diff = want - (ctx.terminating if only_replace_failed(job) else 0) - active
        if diff <= 0:
            return active, None
        if wait := self.backoff_remaining(ctx.backoff):
            ctx.requeue = min(ctx.requeue or wait, wait)
            return active, None
        diff = min(diff, MAX_PODS_PER_SYNC)
        indexes: list[int] = []
        if spec.get("completionMode") == "Indexed":
            taken = ctx.indexes | {completion_index(p) for p in ctx.active}
            indexes = list(itertools.islice((i for i in range(spec["completions"]) if i not in taken), diff))
            diff = len(indexes)
        self.expectations.expect(key, creations=diff)
        template = copy.deepcopy(spec["template"])
        meta = template.setdefault("metadata", {})
        meta["finalizers"] = [*(meta.get("finalizers") or []), TRACKING_FINALIZER]
        name = job["metadata"]["name"]

        async def create(i: int) -> None:
            """Create the i-th new pod (with its completion index when indexed)."""
            if not indexes:
                await self.create_pod(job, pod_from_template(template, job, generateName=f"{name}-"))
                return
            indexed = copy.deepcopy(template)
            indexed["metadata"].setdefault("annotations", {})[COMPLETION_INDEX] = str(indexes[i])
            indexed["metadata"].setdefault("labels", {})[COMPLETION_INDEX] = str(indexes[i])
            indexed["spec"]["hostname"] = f"{name}-{indexes[i]}"
            await self.create_pod(job, pod_from_template(indexed, job,
                                                         generateName=index_generate_name(name, indexes[i])))

        successes, error = await slow_start_batch(diff, create)
        self.expectations.lower(key, creations=diff - successes)
        return active + successes, error

    @staticmethod
    def removal_candidates(job: Obj, pods: list[Obj], at_least: int) -> list[Obj]:
        """activePodsForRemoval: duplicate and out-of-range indexes, then the least valuable pods."""
        doomed, left = [], list(pods)
        if job["spec"].get("completionMode") == "Indexed":
            left = []
            by_index = sorted(pods, key=lambda p: (completion_index(p) is None, completion_index(p) or 0))
            for index, group in itertools.groupby(by_index, completion_index):
                ranked = sorted(group, key=deletion_rank)
                if index is None or index >= job["spec"]["completions"]:
                    doomed += ranked
                else:
                    doomed += ranked[:-1]
                    left.append(ranked[-1])
        if len(doomed) < at_least:
            doomed += sorted(left, key=deletion_rank)[:at_least - len(doomed)]
        return doomed

    async def delete_pods(self, job: Obj, pods: list[Obj], key: str | None) -> tuple[int, int, Exception | None]:
        """Delete pods (with a key: expected, finalizer removed first): (deleted, of which ready, first error)."""
        if key is not None:
            self.expectations.expect(key, deletions=[key_of(p) for p in pods])

        async def one(pod: Obj) -> Exception | None:
            """Delete one pod, its failure returned."""
            try:
                if key is not None and has_finalizer(pod):
                    await self.remove_finalizer(pod)
                if not await self.delete_pod(job, pod) and key is not None:
                    self.expectations.deletion_observed(key, key_of(pod))
            except Exception as exc:
                if key is not None:
                    self.expectations.deletion_observed(key, key_of(pod))
                return exc
            return None

        results = await asyncio.gather(*(one(p) for p in pods))
        errors = [e for e in results if e is not None]
        ready = sum(is_ready(p) for p, e in zip(pods, results, strict=True) if e is None)
        return len(pods) - len(errors), ready, errors[0] if errors else None

    async def remove_finalizer(self, pod: Obj) -> None:
        """Drop the tracking finalizer from a pod (gone already is fine)."""
        patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER],
                              "uid": pod["metadata"]["uid"]}}
        try:
            await self.client.patch(PODS, pod["metadata"]["name"], patch, pod["metadata"]["namespace"],
                                    type="strategic")
        except ApiError as exc:
            if not is_not_found(exc):
                raise

    async def release_pods(self, key: str, job: Obj | None) -> None:
        """Remove the finalizer from the pods of a finished or deleted job."""
        namespace, name = split_key(key)
        for pod in self.pods.store.by_index(NAMESPACE_INDEX, namespace or ""):
            ref = controller_of(pod) or {}
            if (has_finalizer(pod) and ref.get("kind") == "Job" and ref.get("name") == name
                    and (job is None or ref.get("uid") == job["metadata"]["uid"])):
                await self.remove_finalizer(pod)

    async def track(self, key: str, ctx: _Sync, needs_flush: bool) -> None:
        """trackJobStatusAndRemoveFinalizers: uncounted pods, finalizers removed, counters, final condition."""
        job, status, now = ctx.job, ctx.job["status"], self.now()
        spec, uncounted = job["spec"], status["uncountedTerminatedPods"]
        indexed, completions = spec.get("completionMode") == "Indexed", spec.get("completions") or 0
        with_finalizer = {p["metadata"]["uid"] for p in ctx.pods
                          if has_finalizer(p) and p["metadata"]["uid"] not in ctx.expected_removals}
        needs_flush = self.count_uncounted(status, with_finalizer) or needs_flush
        to_remove, new_indexes, full = [], 0, False
        for pod in ctx.pods:
            uid, failed = pod["metadata"]["uid"], is_failed(pod, job)
            if not has_finalizer(pod) or uid in ctx.expected_removals:
                continue
            if not (job["metadata"].get("deletionTimestamp") or ctx.finished or phase(pod) == "Succeeded" or failed):
                continue
            to_remove.append(pod)
            index = completion_index(pod)
            if phase(pod) == "Succeeded" and uid not in ctx.uncounted_failed:
                if indexed and index is not None and index < completions and index not in ctx.prev_indexes:
                    new_indexes += 1
                    needs_flush = True
                elif not indexed and uid not in ctx.uncounted_succeeded:
                    uncounted.setdefault("succeeded", []).append(uid)
                    needs_flush = True
            elif failed or (ctx.finished and ctx.finished["type"] != "SuccessCriteriaMet"):
                valid = not indexed or (index is not None and index < completions)
                counts = match_failure_policy(spec.get("podFailurePolicy"), pod)[1]
                if uid not in ctx.uncounted_failed and valid and counts:
                    uncounted.setdefault("failed", []).append(uid)
                    needs_flush = True
            if new_indexes + sum(len(uncounted.get(f) or []) for f in ("succeeded", "failed")) >= MAX_UNCOUNTED:
                full = True
                break
        if indexed:
            text = format_indexes(ctx.indexes)
            needs_flush = needs_flush or text != status.get("completedIndexes", "")
            status.update(succeeded=len(ctx.indexes), completedIndexes=text)
        finished = ctx.finished
        if finished is not None and finished["type"] == "FailureTarget":
            status.setdefault("conditions", []).append(finished)
            needs_flush = True
            finished = new_condition("Failed", "True", finished["reason"], finished["message"], now)
        if finished is not None and finished["type"] == "SuccessCriteriaMet":
            if (condition(job, "SuccessCriteriaMet") or {}).get("status") != "True":
                status.setdefault("conditions", []).append(finished)
                needs_flush = True
            finished = new_condition("Complete", "True", finished["reason"], finished["message"], now)
        if needs_flush:
            await self.flush(job)
            self.backoffs[key] = ctx.backoff
            needs_flush = False
        removed, error = await self.remove_finalizers(key, to_remove)
        needs_flush = self.count_uncounted(status, with_finalizer - removed)
        if error is not None:
            if needs_flush:
                await self.flush(job)
            raise error
        done = not full and finished is not None and self.enact_finished(status, finished, ctx.terminating, now)
        if done or needs_flush:
            await self.flush(job)
        if done and finished is not None:
            if finished["type"] == "Complete":
                self.recorder.event(job, "Normal", "Completed", "Job completed")
            else:
                self.recorder.event(job, "Warning", finished["reason"], finished["message"])

    @staticmethod
    def count_uncounted(status: Obj, with_finalizer: set[str]) -> bool:
        """Move uncounted pods whose finalizer is gone into succeeded/failed; True if any moved."""
        uncounted, changed = status["uncountedTerminatedPods"], False
        for field_ in ("succeeded", "failed"):
            uids = uncounted.get(field_) or []
            keep = [u for u in uids if u in with_finalizer]
            if len(keep) != len(uids):
                status[field_] = status.get(field_, 0) + len(uids) - len(keep)
                if keep:
                    uncounted[field_] = keep
                else:
                    uncounted.pop(field_)
                changed = True
        return changed

    @staticmethod
    def enact_finished(status: Obj, finished: Obj, terminating: int, now: datetime) -> bool:
        """Add Complete or Failed once no pod is uncounted or still terminating."""
        uncounted = status["uncountedTerminatedPods"]
        if uncounted.get("succeeded") or uncounted.get("failed") or terminating > 0:
            return False
        ensure_condition(status, finished["type"], finished["status"], finished["reason"], finished["message"], now)
        if finished["type"] == "Complete":
            status["completionTime"] = finished["lastTransitionTime"]
        return True

    async def flush(self, job: Obj) -> None:
        """Write the job's status, keeping its resourceVersion current."""
        job["metadata"] = (await self.client.update_status(JOBS, job))["metadata"]

    async def remove_finalizers(self, key: str, pods: list[Obj]) -> tuple[set[str], Exception | None]:
        """Remove the tracking finalizer from pods, expecting to see it gone: (uids done, first error)."""
        uids = {p["metadata"]["uid"] for p in pods}
        self.removing.setdefault(key, set()).update(uids)

        async def one(pod: Obj) -> Exception | None:
            """Remove one pod's finalizer, its failure returned."""
            try:
                await self.remove_finalizer(pod)
            except Exception as exc:
                self.removing[key].discard(pod["metadata"]["uid"])
                return exc
            return None

        results = await asyncio.gather(*(one(p) for p in pods))
        failed = {p["metadata"]["uid"] for p, e in zip(pods, results, strict=True) if e is not None}
        return uids - failed, next((e for e in results if e is not None), None)

    def next_backoff(self, key: str, succeeded: list[Obj], failed: list[Obj], now: datetime) -> _Backoff:
        """newBackoffRecord: failures since the last success and the time of the last one."""
        record = copy.copy(self.backoffs.get(key, _Backoff()))
        failures = sorted(finish_time(p, now) for p in failed)
        if succeeded:
            last_success = max(finish_time(p, now) for p in succeeded)
            failures = [t for t in failures if t > last_success]
            record = _Backoff()
        if failures:
            record.failures += len(failures)
            record.last_failure = failures[-1]
        return record

    def backoff_remaining(self, record: _Backoff) -> float:
        """Seconds before a replacement pod may be created: 10 s doubling per failure, up to 6 minutes."""
        if not record.failures or record.last_failure is None:
            return 0.0
        delay = min(self.backoff_base * 2 ** (record.failures - 1), self.backoff_max)
        return max(delay - (self.now() - record.last_failure).total_seconds(), 0.0)
