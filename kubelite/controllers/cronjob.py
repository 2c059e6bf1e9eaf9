"""CronJobs: a Job at each scheduled time, with concurrency, deadlines and history (upstream cronjob v2)."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kubelite.api.kinds.cron import Schedule, parse_schedule
from kubelite.client.controller import Requeue
from kubelite.client.errors import ApiError, is_already_exists, is_conflict, is_not_found
from kubelite.client.resources import CRONJOBS, JOBS
from kubelite.client.store import NAMESPACE_INDEX
from kubelite.client.timestamps import format_time, parse_time
from kubelite.controllers.podcontrol import (
    Obj,
    WorkloadController,
    condition,
    controller_of,
    controller_ref,
    describe,
    utcnow,
)

SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
NEXT_SCHEDULE_DELTA = 0.1
"""Seconds added to the requeue for the next schedule, against clock skew."""
MANY_MISSED = 100
STATUS_ATTEMPTS = 5
def local_zone() -> tzinfo:
    """The controller's local time zone (TZ, else /etc/localtime, else UTC), where schedules without one run."""
    try:
        if os.environ.get("TZ"):
            return ZoneInfo(os.environ["TZ"].lstrip(":"))
        with Path("/etc/localtime").open("rb") as localtime:
            return ZoneInfo.from_file(localtime)
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return UTC


def most_recent(schedule: Schedule, earliest: datetime, now: datetime) -> tuple[datetime | None, int]:
    """mostRecentScheduleTime: the latest activation in (earliest, now] and roughly how many were missed."""
    first = schedule.next(earliest)
    if first is None or now < first:
        return None, 0
    second = schedule.next(first)
    if second is None or now < second:
        return first, 1
    interval = round((second - first).total_seconds())
    if interval < 1:
        raise ValueError("time difference between two schedules is less than 1 second")
    missed = int((now - first).total_seconds()) // interval + 1
    latest = None
    moment: datetime | None = first + timedelta(seconds=(missed - 2) * interval)
    while (moment := schedule.next(moment)) is not None and moment <= now:
        latest = moment
    return latest, missed


def rfc3339(moment: datetime) -> str:
    """Go's time.RFC3339 in the moment's own zone: Z for UTC, else the offset."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S%z")
    return text[:-5] + "Z" if text.endswith("+0000") else f"{text[:-2]}:{text[-2:]}"


def job_name(cronjob: Obj, scheduled: datetime) -> str:
    """<cronjob>-<scheduled time in minutes since the epoch>: one Job per scheduled time."""
    return f"{cronjob['metadata']['name']}-{int(scheduled.timestamp()) // 60}"


def listed(cronjob: Obj, uid: str) -> bool:
    """The job of this uid is in the cronjob's status.active."""
    return any(ref.get("uid") == uid for ref in (cronjob.get("status") or {}).get("active") or [])


def finished_type(job: Obj) -> str | None:
    """Complete or Failed, when the job has finished."""
    return next((t for t in ("Complete", "Failed") if (condition(job, t) or {}).get("status") == "True"), None)


class CronJobController(WorkloadController):
    """Starts the Jobs of each CronJob on schedule and keeps its active list and history."""

    name = "cronjob"
    component = "cronjob-controller"
    kind = "CronJob"

    def setup(self) -> None:
        """Watch cronjobs and their jobs; the clock can be replaced (tests)."""
        super().setup()
        self.cronjobs = self.watch(CRONJOBS)
        self.jobs = self.watch(JOBS, keys=self._owner_keys)
        self.now: Callable[[], datetime] = utcnow

    async def reconcile(self, key: str) -> Requeue | None:
        """sync: clean up old jobs, reconcile the active list, start the due job, requeue for the next one."""
        cached = self.cronjobs.store.get(key)
        if cached is None:
            return None
        uid, namespace = cached["metadata"]["uid"], cached["metadata"]["namespace"]
        jobs = [j for j in self.jobs.store.by_index(NAMESPACE_INDEX, namespace)
                if (controller_of(j) or {}).get("uid") == uid]
        if any(not finished_type(j) and not listed(cached, j["metadata"]["uid"]) for j in jobs):
            cached = await self.client.get(CRONJOBS, cached["metadata"]["name"], namespace)
        cronjob = copy.deepcopy(cached)
        status = cronjob.setdefault("status", {})
        await self.cleanup(cronjob, jobs)
        try:
            after = await self.sync(cronjob, jobs)
        finally:
            if status != (cached.get("status") or {}):
                await self.write_status(cronjob)
        return Requeue(after=after) if after is not None else None

    async def write_status(self, cronjob: Obj) -> None:
        """PUT the status, onto the latest object after a conflict, so a job just started stays in status.active."""
        for attempt in range(STATUS_ATTEMPTS):
            try:
                await self.client.update_status(CRONJOBS, cronjob)
                return
            except ApiError as exc:
                if not is_conflict(exc) or attempt == STATUS_ATTEMPTS - 1:
                    raise
            meta = cronjob["metadata"]
            cronjob = {**await self.client.get(CRONJOBS, meta["name"], meta["namespace"]), "status": cronjob["status"]}

    async def sync(self, cronjob: Obj, jobs: list[Obj]) -> float | None:
        """syncCronJob: reconcile status.active, start the due job; seconds until the next schedule."""
        status, spec, now = cronjob["status"], cronjob["spec"], self.now()
        uids = set()
        for job in jobs:
            uids.add(job["metadata"]["uid"])
            active, done = listed(cronjob, job["metadata"]["uid"]), finished_type(job)
            if not active and not done:
                self.recorder.event(cronjob, "Warning", "UnexpectedJob", "Saw a job that the controller did not "
                                    f"create or forgot: {job['metadata']['name']}")
            elif active and done:
                self.drop_active(cronjob, job["metadata"]["uid"])
                self.recorder.event(cronjob, "Normal", "SawCompletedJob",
                                    f"Saw completed job: {job['metadata']['name']}, condition: {done}")
            if done == "Complete":
                completed = (job.get("status") or {}).get("completionTime")
                last = status.get("lastSuccessfulTime")
                if completed and (not last or parse_time(completed) > parse_time(last)):
                    status["lastSuccessfulTime"] = completed
        for ref in list(status.get("active") or []):
            if ref.get("uid") in uids:
                continue
            try:
                await self.client.get(JOBS, ref["name"], ref.get("namespace") or cronjob["metadata"]["namespace"])
            except ApiError as exc:
                if not is_not_found(exc):
                    raise
                self.recorder.event(cronjob, "Normal", "MissingJob", f"Active job went missing: {ref['name']}")
                self.drop_active(cronjob, ref.get("uid"))
        if cronjob["metadata"].get("deletionTimestamp") or spec.get("suspend"):
            return None
        try:
            zone = ZoneInfo(spec["timeZone"]) if spec.get("timeZone") else local_zone()
        except (ValueError, ZoneInfoNotFoundError) as exc:
            self.recorder.event(cronjob, "Warning", "UnknownTimeZone", f'invalid timeZone: "{spec["timeZone"]}": {exc}')
            return None
        try:
            schedule = parse_schedule(spec["schedule"], zone)
        except (ValueError, ZoneInfoNotFoundError) as exc:
            self.recorder.event(cronjob, "Warning", "UnparseableSchedule",
                                f'unparseable schedule: "{spec["schedule"]}" : {exc}')
            return None
        try:
            scheduled, missed = most_recent(schedule, self.earliest(cronjob, now, deadline=True), now)
        except ValueError as exc:
            self.recorder.event(cronjob, "Warning", "InvalidSchedule", f"invalid schedule: {spec['schedule']} : {exc}")
            return None
        if missed > MANY_MISSED:
            self.recorder.event(cronjob, "Warning", "TooManyMissedTimes", "too many missed start times. Set or "
                                "decrease .spec.startingDeadlineSeconds or check clock skew")
        if scheduled is None:
            return self.until_next(cronjob, schedule, now)
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None and scheduled + timedelta(seconds=deadline) < now:
            self.recorder.event(cronjob, "Warning", "MissSchedule", "Missed scheduled time to start a job: "
                                + scheduled.strftime("%a, %d %b %Y %H:%M:%S +0000"))
            return self.until_next(cronjob, schedule, now)
        name = job_name(cronjob, scheduled)
        if (any(ref.get("name") == name for ref in status.get("active") or [])
                or status.get("lastScheduleTime") == format_time(scheduled)):
            return self.until_next(cronjob, schedule, now)
        policy = spec.get("concurrencyPolicy", "Allow")
        if policy == "Forbid" and status.get("active"):
            self.recorder.event(cronjob, "Normal", "JobAlreadyActive", "Not starting job because prior execution is "
                                "running and concurrency policy is Forbid")
            return self.until_next(cronjob, schedule, now)
        if policy == "Replace":
            for ref in list(status.get("active") or []):
                if not await self.delete_job(cronjob, ref["name"], ref.get("uid")):
                    raise RuntimeError(f"could not replace job {ref['name']}")
        job = await self.start(cronjob, name, scheduled, zone)
        if job is None:
            return self.until_next(cronjob, schedule, now)
        status.setdefault("active", []).append(
            {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
             "namespace": job["metadata"]["namespace"], "uid": job["metadata"]["uid"],
             "resourceVersion": job["metadata"]["resourceVersion"]})
        status["lastScheduleTime"] = format_time(scheduled)
        return self.until_next(cronjob, schedule, now)

    @staticmethod
    def earliest(cronjob: Obj, now: datetime, deadline: bool) -> datetime:
        """The last schedule time (else creation), no earlier than startingDeadlineSeconds ago when asked."""
        earliest = (parse_time(cronjob["status"].get("lastScheduleTime"))
                    or parse_time(cronjob["metadata"].get("creationTimestamp")) or now)
        seconds = cronjob["spec"].get("startingDeadlineSeconds")
        if deadline and seconds is not None:
            earliest = max(earliest, now - timedelta(seconds=seconds))
        return earliest

    def until_next(self, cronjob: Obj, schedule: Schedule, now: datetime) -> float:
        """nextScheduleTimeDuration: seconds from now to the schedule after the most recent one (plus 100 ms)."""
        try:
            latest = most_recent(schedule, self.earliest(cronjob, now, deadline=False), now)[0]
        except ValueError:
            latest = now
        following = schedule.next(latest or self.earliest(cronjob, now, deadline=False))
        return max((following - now).total_seconds(), 0.0) + NEXT_SCHEDULE_DELTA if following else 3600.0

    async def start(self, cronjob: Obj, name: str, scheduled: datetime, zone: tzinfo) -> Obj | None:
        """Create the Job of a scheduled time (or take the existing one it made); None if another owner has it."""
        template = cronjob["spec"]["jobTemplate"]
        meta = template.get("metadata") or {}
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": name, "namespace": cronjob["metadata"]["namespace"],
                            "labels": dict(meta.get("labels") or {}),
                            "annotations": {**(meta.get("annotations") or {}),
                                            SCHEDULED_TIMESTAMP: rfc3339(scheduled.astimezone(zone))},
                            "ownerReferences": [controller_ref(cronjob)]},
               "spec": copy.deepcopy(template.get("spec") or {})}
        try:
            created = await self.client.create(JOBS, job)
        except ApiError as exc:
            if not is_already_exists(exc):
                self.recorder.event(cronjob, "Warning", "FailedCreate", f"Error creating job: {describe(exc)}")
                raise
            existing = await self.client.get(JOBS, name, cronjob["metadata"]["namespace"])
            mine = (controller_of(existing) or {}).get("uid") == cronjob["metadata"]["uid"]
            return existing if mine and not listed(cronjob, existing["metadata"]["uid"]) else None
        self.recorder.event(cronjob, "Normal", "SuccessfulCreate", f"Created job {name}")
        return created

    @staticmethod
    def drop_active(cronjob: Obj, uid: str | None) -> None:
        """Remove a job from status.active."""
        active = [r for r in cronjob["status"].get("active") or [] if r.get("uid") != uid]
        if active:
            cronjob["status"]["active"] = active
        else:
            cronjob["status"].pop("active", None)

    async def delete_job(self, cronjob: Obj, name: str, uid: str | None) -> bool:
        """Delete a job (and, in the background, its pods) and forget it; False if that failed."""
        try:
            await self.client.delete(JOBS, name, cronjob["metadata"]["namespace"], propagation_policy="Background")
        except ApiError as exc:
            if not is_not_found(exc):
                self.recorder.event(cronjob, "Warning", "FailedDelete", f"Deleted job: {describe(exc)}")
                return False
        self.drop_active(cronjob, uid)
        self.recorder.event(cronjob, "Normal", "SuccessfulDelete", f"Deleted job {name}")
        return True

    async def cleanup(self, cronjob: Obj, jobs: list[Obj]) -> None:
        """Delete the oldest finished jobs beyond successfulJobsHistoryLimit / failedJobsHistoryLimit."""
        for kind, limit in (("Complete", cronjob["spec"].get("successfulJobsHistoryLimit")),
                            ("Failed", cronjob["spec"].get("failedJobsHistoryLimit"))):
            done = [j for j in jobs if finished_type(j) == kind]
            if limit is None or len(done) <= limit:
                continue
            done.sort(key=lambda j: (not (j.get("status") or {}).get("startTime"),
                                     (j.get("status") or {}).get("startTime") or "", j["metadata"]["name"]))
            for job in done[:len(done) - limit]:
                await self.delete_job(cronjob, job["metadata"]["name"], job["metadata"]["uid"])
