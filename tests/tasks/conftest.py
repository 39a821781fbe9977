"""Every task through the real registry, model store and executor, with tiny random-weight models
in the users' folder layout; test_task_conformance.py runs the suite every task must pass
(task_conformance.py).
"""
