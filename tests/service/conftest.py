"""The real server under uvicorn on loopback (server_fixtures.py), serving the product's tasks and
the test-only ones (extra_tasks.py): the protocol, jobs, events, limits, security and faults.
"""
