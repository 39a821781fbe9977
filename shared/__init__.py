"""The wire protocol and canvas geometry shared by the backend and the editor plug-ins.

Standard library only: the plug-ins copy this package, and Krita's and GIMP's Python have no
numpy or pydantic (tests/test_server_protocol.py checks that importing it loads neither).
"""
