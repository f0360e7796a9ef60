"""One router per resource: jobs, batches, and meta (health, info)."""
