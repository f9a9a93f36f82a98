"""The fray controller process: the task queue, the worker registry, objects and actors.

- ``state``: ``ControllerState``, the state machine (plain single-threaded Python, no I/O);
- ``convert``: state records to and from protobuf messages;
- ``service``: ``ControllerService``, the ``fray.v1.FrayController`` Connect service over the
  state (long polls, error codes), and ``ControllerServer``, which serves it with uvicorn.

Imports ``fray.wire`` only; nothing here imports the worker or the client.
"""
