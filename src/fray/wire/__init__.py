"""What the controller, the workers and the clients share on the wire.

- ``pb``: protobuf messages and Connect stubs generated from ``proto/`` (proto package
  ``fray.v1``: the wire names ``fray.v1.FrayController`` and ``fray.v1.FrayWorker``);
- ``serving``: serving a Connect app with uvicorn (token check, error mapping, JSON codec);
- ``edge``: what every request passes first (bad input and oversized requests answered with
  4xx Connect errors, the request limits, the backstop against stray exceptions);
- ``payload``: cloudpickled functions, arguments, values and errors, and ``ObjectRef``;
- ``controller_client``: a retrying ``FrayController`` client; ``probe``: checking an
  address (malformed URLs, "no fray controller at URL", a worker or another server there);
- ``auth``: the token; ``tls``: TLS settings (server cert/key, the CA clients trust, handshake
  errors); ``limits``: sizes and long-poll margins both ends agree on;
- ``metrics``: what both servers' ``GET /metrics`` share (RPC latency, the text answer);
- ``faults``: RPC fault injection for tests (``$FRAY_TESTING_RPC_FAILURE``).

Modules here import nothing from ``fray.controller``, ``fray.worker`` or ``fray.client``.
"""
