"""The HTTP layer: one router per resource, the request guard, error mapping and pixel transport.

health.py /v1/health · models.py /v1/models, /v1/tasks · images.py /v1/images ·
jobs.py /v1/jobs · events.py /v1/events (server-sent events and the hub that feeds them) ·
security.py host, origin, token and size checks · errors.py typed errors -> JSON ·
transport.py PNG and raw pixels in and out · deps.py what handlers get from app.state.
"""
