"""The job domain: a job's record and its ETag-guarded state machine (records.py), where its
images live (blobs.py), what a caller may ask of it (options.py), batches and their fair
feeding (batches.py), and the operations the HTTP API and the timer share (service.py).
It knows storage and images, and nothing of HTTP or Functions."""
