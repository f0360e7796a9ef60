"""The HTTP face: app.py assembles the FastAPI app from middleware.py and gate.py (what every
request passes), errors.py (domain errors as JSON), deps.py, schemas.py and one router per
resource in routes/."""
