"""Azure Functions entry points (Python v2 model). Wiring only: the work is in processing/."""

import logging

import azure.functions as func

from processing import wiring

wiring.observe(functions_host=True)
wiring.preload_engine()  # the networks load as the host starts this process, not at its first message
# The HTTP API (FastAPI) answers every route; host.json sets routePrefix "" so it sees /api/... itself.
app = func.AsgiFunctionApp(app=wiring.http_app(), http_auth_level=func.AuthLevel.ANONYMOUS)


@app.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%", connection="AzureWebJobsStorage")
def restore_job(msg: func.QueueMessage) -> None:
    # Raising lets the host retry (up to maxDequeueCount, then the poison queue).
    outcome = wiring.job_handler().handle_trigger_message(msg.get_body(), msg.dequeue_count or 1)
    logging.info("message %s: %s %s", msg.id, outcome.status, outcome.detail)


@app.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%-poison", connection="AzureWebJobsStorage")
def fail_poisoned_job(msg: func.QueueMessage) -> None:
    job_id = wiring.mark_poisoned(msg.get_body())
    logging.warning("poison message %s: job %s marked failed", msg.id, job_id)


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False, use_monitor=False)
def purge_expired_jobs(timer: func.TimerRequest) -> None:
    wiring.housekeeping()
