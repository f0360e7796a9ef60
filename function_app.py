"""Azure Functions entry points (Python v2 model). Wiring only: the work is in processing/."""

import logging

import azure.functions as func

from processing import runtime
from processing.ratelimit import purge_idle_buckets
from processing.worker import mark_poisoned

# The HTTP API (FastAPI) answers every route; host.json sets routePrefix "" so it sees /api/... itself.
app = func.AsgiFunctionApp(app=runtime.http_app(), http_auth_level=func.AuthLevel.ANONYMOUS)


@app.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%", connection="AzureWebJobsStorage")
def restore_job(msg: func.QueueMessage) -> None:
    # Raising lets the host retry (up to maxDequeueCount, then the poison queue).
    outcome = runtime.job_handler().handle_message(msg.get_body(), msg.dequeue_count or 1)
    logging.info("message %s: %s %s", msg.id, outcome.status, outcome.detail)
    if outcome.retry_after is not None:
        # Another instance holds a live lease on the job. The host deletes this message
        # when we return, so put a copy back for when that lease runs out: if the holder
        # died, this copy takes the job over.
        runtime.storage().jobs_queue.send_message(msg.get_body(), visibility_timeout=int(outcome.retry_after))


@app.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%-poison", connection="AzureWebJobsStorage")
def fail_poisoned_job(msg: func.QueueMessage) -> None:
    job_id = mark_poisoned(runtime.storage().settings, runtime.storage(), msg.get_body())
    logging.warning("poison message %s: job %s marked failed", msg.id, job_id)


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False, use_monitor=False)
def purge_expired_jobs(timer: func.TimerRequest) -> None:
    service = runtime.job_service()
    service.purge_expired()
    service.requeue_stale()
    purge_idle_buckets(service.settings, service.storage)
