"""Small helpers shared across fray that have nothing to do with the wire, one module each.

* :mod:`fray.common.sizes`: ``parse_bytes``, the one reader of sizes such as ``"8GiB"``.
* :mod:`fray.common.remote_errors`: packing an exception in one process and re-raising it in
  another with its remote traceback attached as ``__cause__``.
* :mod:`fray.common.watchdog`: ``exit_when_gone``, ending a child process whose parent died
  (standard library only, so job processes can carry its source).
* :mod:`fray.common.processes`: starting, reading and stopping child processes.
* :mod:`fray.common.deadlines`: ``deadline_after`` and ``time_left`` for timeouts.
* :mod:`fray.common.net`: ``free_port``.
* :mod:`fray.common.batching`: ``batch_length``, how many items make one batch (by count and
  size).

Nothing here imports the rest of fray, except :mod:`fray.errors` (for ``RemoteTraceback``).
"""
