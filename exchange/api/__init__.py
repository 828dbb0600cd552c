"""The HTTP API: one FastAPI app (``app.create_app``), one router per area, problem+json errors."""
