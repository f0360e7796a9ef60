"""Where a job's images live: every blob of a job is under ``<job id>/`` in the uploads or
results container, so deleting a job is deleting one prefix in each."""

from __future__ import annotations

from ..images.codec import extension


def input_blob_name(job_id: str) -> str:
    return f"{job_id}/input.png"


def result_blob_name(job_id: str, fmt: str) -> str:
    return f"{job_id}/restored.{extension(fmt)}"


def before_blob_name(job_id: str) -> str:
    return f"{job_id}/before.png"


def face_blob_name(job_id: str, index: int, which: str) -> str:
    return f"{job_id}/faces/{index}-{which}.png"


def job_prefix(job_id: str) -> str:
    return f"{job_id}/"
