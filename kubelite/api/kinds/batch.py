"""batch/v1: Jobs and CronJobs."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kubelite.api.kinds.common import (
    child,
    columns,
    dig,
    format_label_selector,
    non_negative,
    seconds_between,
    since,
    validate_label_selector,
)
from kubelite.api.kinds.cron import schedule_error
from kubelite.api.kinds.podspec import default_template, validate_template
from kubelite.api.kinds.workloads import selector_immutable, template_cells, template_labels_match
from kubelite.api.names import invalid_shown, invalid_value
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import (
    AGE_COLUMN,
    Cause,
    Column,
    Obj,
    Strategy,
    human_duration,
    required,
    unsupported,
)

CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID = "controller-uid"
LEGACY_JOB_NAME = "job-name"
CRONJOB_NAME_MAX = 52


def job_defaults(job: Obj) -> None:
    """SetDefaults_Job, then the selector and template labels upstream generates from the uid."""
    spec, meta = job.setdefault("spec", {}), job.setdefault("metadata", {})
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6)
    template_meta = child(child(spec, "template"), "metadata")
    if template_meta.get("labels") and not meta.get("labels"):
        meta["labels"] = dict(template_meta["labels"])
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault(
        "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
    )
    spec.setdefault("manualSelector", False)
    if not spec["manualSelector"]:
        labels = template_meta.setdefault("labels", {})
        for key, value in (
            (LEGACY_JOB_NAME, meta.get("name", "")),
            (JOB_NAME, meta.get("name", "")),
            (LEGACY_CONTROLLER_UID, meta.get("uid", "")),
            (CONTROLLER_UID, meta.get("uid", "")),
        ):
            labels.setdefault(key, value)
        child(child(spec, "selector"), "matchLabels").setdefault(CONTROLLER_UID, meta.get("uid", ""))
    default_template(spec)


def _validate_job_spec(spec: Obj, path: str) -> list[Cause]:
    """The checks a Job and a CronJob's job template share."""
    causes: list[Cause] = []
    for key in (
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ):
        causes += non_negative(spec.get(key), f"{path}.{key}")
    mode = spec.get("completionMode", "NonIndexed")
    if mode not in ("NonIndexed", "Indexed"):
        causes.append(unsupported(f"{path}.completionMode", mode, ["NonIndexed", "Indexed"]))
    elif mode == "Indexed" and spec.get("completions") is None:
        causes.append(
            Cause(
                f"{path}.completions",
                "FieldValueRequired",
                f"{path}.completions: Required value: when completion mode is Indexed",
            )
        )
    causes += validate_template(spec.get("template"), f"{path}.template")
    policy = dig(spec, "template", "spec", "restartPolicy", default="")
    if policy not in ("OnFailure", "Never"):
        causes.append(unsupported(f"{path}.template.spec.restartPolicy", policy, ["OnFailure", "Never"]))
    return causes


def job_validate(job: Obj) -> list[Cause]:
    """ValidateJob: a selector matching the template, plus the job spec checks."""
    spec = job.get("spec") or {}
    selector = spec.get("selector")
    causes = (
        validate_label_selector(selector, "spec.selector")
        if isinstance(selector, dict)
        else [required("spec.selector")]
    )
    causes += template_labels_match(spec, "spec")
    return causes + _validate_job_spec(spec, "spec")


def job_validate_update(new: Obj, old: Obj) -> list[Cause]:
    """Selector, pod template, completion mode and (non-indexed) completions are fixed."""
    spec, before = new.get("spec") or {}, old.get("spec") or {}
    causes = selector_immutable(new, old)
    if spec.get("template") != before.get("template"):
        causes.append(invalid_shown("spec.template", "core.PodTemplateSpec{...}", "field is immutable"))
    if spec.get("completionMode") != before.get("completionMode"):
        causes.append(invalid_value("spec.completionMode", spec.get("completionMode"), "field is immutable"))
    if spec.get("completions") != before.get("completions") and spec.get("completionMode") != "Indexed":
        causes.append(invalid_value("spec.completions", spec.get("completions"), "field is immutable"))
    return causes


def _job_condition(status: Obj, kind: str) -> bool:
    return next(
        (c.get("status") == "True" for c in status.get("conditions") or [] if c.get("type") == kind), False
    )


def job_status(job: Obj) -> str:
    """STATUS: Complete, Failed, Terminating, Suspended, FailureTarget or Running."""
    status = job.get("status") or {}
    if _job_condition(status, "Complete"):
        return "Complete"
    if _job_condition(status, "Failed"):
        return "Failed"
    if dig(job, "metadata", "deletionTimestamp"):
        return "Terminating"
    if _job_condition(status, "Suspended"):
        return "Suspended"
    if _job_condition(status, "FailureTarget"):
        return "FailureTarget"
    return "Running"


def job_row(job: Obj) -> list[Any]:
    """NAME STATUS COMPLETIONS DURATION AGE CONTAINERS IMAGES SELECTOR, as upstream printJob."""
    spec, status, meta = job.get("spec") or {}, job.get("status") or {}, job.get("metadata") or {}
    succeeded = status.get("succeeded", 0)
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    elif (spec.get("parallelism") or 0) > 1:
        completions = f"{succeeded}/1 of {spec['parallelism']}"
    else:
        completions = f"{succeeded}/1"
    start, end = status.get("startTime"), status.get("completionTime")
    duration = "" if not start else since(start) if not end else human_duration(seconds_between(start, end))
    return [
        meta.get("name", ""),
        job_status(job),
        completions,
        duration,
        since(meta.get("creationTimestamp")),
        *template_cells(spec),
        format_label_selector(spec.get("selector")),
    ]


WIDE_TEMPLATE_COLUMNS = (
    Column("Containers", priority=1, description="Names of each container in the template."),
    Column("Images", priority=1, description="Images referenced by each container in the template."),
    Column("Selector", priority=1, description="A label query over pods that should match the pod count."),
)
JOB_COLUMNS = columns(
    Column("Status", description="Status of the job."),
    Column("Completions", description="The number of pods which reached phase Succeeded."),
    Column("Duration", description="Time required to complete the job."),
    AGE_COLUMN,
    *WIDE_TEMPLATE_COLUMNS,
)


def cronjob_defaults(cronjob: Obj) -> None:
    """SetDefaults_CronJob: Allow, not suspended, keep 3 successful and 1 failed job."""
    spec = cronjob.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    default_template(child(child(spec, "jobTemplate"), "spec"))


def cronjob_validate(cronjob: Obj) -> list[Cause]:
    """ValidateCronJob: name length, schedule, time zone, policy, limits, job template."""
    spec, name = cronjob.get("spec") or {}, dig(cronjob, "metadata", "name", default="")
    causes: list[Cause] = []
    if len(name) > CRONJOB_NAME_MAX:
        causes.append(
            invalid_value("metadata.name", name, f"must be no more than {CRONJOB_NAME_MAX} characters")
        )
    schedule = spec.get("schedule") or ""
    if not schedule:
        causes.append(required("spec.schedule"))
    elif "TZ" in schedule:
        causes.append(
            invalid_value(
                "spec.schedule", schedule, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
            )
        )
    elif (error := schedule_error(schedule)) is not None:
        causes.append(invalid_value("spec.schedule", schedule, error))
    zone = spec.get("timeZone")
    if zone is not None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            causes.append(invalid_value("spec.timeZone", zone, f"unknown time zone {zone}"))
    policy = spec.get("concurrencyPolicy") or ""
    if policy not in ("Allow", "Forbid", "Replace"):
        causes.append(unsupported("spec.concurrencyPolicy", policy, ["Allow", "Forbid", "Replace"]))
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        causes += non_negative(spec.get(key), f"spec.{key}")
    return causes + _validate_job_spec(dig(spec, "jobTemplate", "spec", default={}), "spec.jobTemplate.spec")


def cronjob_row(cronjob: Obj) -> list[Any]:
    """NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE ..., as upstream printCronJob."""
    spec, status, meta = cronjob.get("spec") or {}, cronjob.get("status") or {}, cronjob.get("metadata") or {}
    suspend = spec.get("suspend")
    job_spec = dig(spec, "jobTemplate", "spec", default={})
    return [
        meta.get("name", ""),
        spec.get("schedule", ""),
        spec.get("timeZone") or "<none>",
        "<unset>" if suspend is None else str(bool(suspend)),
        len(status.get("active") or []),
        since(status["lastScheduleTime"]) if status.get("lastScheduleTime") else "<none>",
        since(meta.get("creationTimestamp")),
        *template_cells(job_spec),
        format_label_selector(job_spec.get("selector")),
    ]


CRONJOB_COLUMNS = columns(
    Column("Schedule", description="The schedule in Cron format."),
    Column("Timezone", description="The time zone name for the given schedule."),
    Column(
        "Suspend",
        type="boolean",
        description="This flag tells the controller to suspend subsequent executions.",
    ),
    Column("Active", type="integer", description="A list of pointers to currently running jobs."),
    Column(
        "Last Schedule", description="Information when was the last time the job was successfully scheduled."
    ),
    AGE_COLUMN,
    *WIDE_TEMPLATE_COLUMNS,
)

RESOURCES = [
    ResourceType(
        "batch",
        "v1",
        "Job",
        "jobs",
        True,
        Strategy(
            columns=JOB_COLUMNS,
            row=job_row,
            defaults=job_defaults,
            validate=job_validate,
            validate_update=job_validate_update,
            selectable_fields=lambda o: {"status.successful": str(dig(o, "status", "succeeded", default=0))},
        ),
        categories=("all",),
        subresources=("status",),
        schema="io.k8s.api.batch.v1.Job",
    ),
    ResourceType(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        True,
        Strategy(
            columns=CRONJOB_COLUMNS, row=cronjob_row, defaults=cronjob_defaults, validate=cronjob_validate
        ),
        short_names=("cj",),
        categories=("all",),
        subresources=("status",),
        schema="io.k8s.api.batch.v1.CronJob",
    ),
]
