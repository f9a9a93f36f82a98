"""What the controller, the workers and the clients share on the wire.

- ``pb``: protobuf messages and Connect stubs generated from ``proto/`` (proto package
  ``fray.v1``: the wire names ``fray.v1.FrayController`` and ``fray.v1.FrayWorker``);
- ``serving``: serving a Connect app with uvicorn (token check, error mapping, JSON codec);
- ``payload``: cloudpickled functions, arguments, values and errors, and ``ObjectRef``;
- ``controller_client``: a retrying ``FrayController`` client.

Modules here import nothing from ``fray.controller``, ``fray.worker`` or ``fray.client``.
"""
