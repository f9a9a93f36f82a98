"""Limits and timing margins that both ends of a call must agree on."""

MAX_ID_LENGTH = 128  # task, worker, actor and object ids, names, owners (characters)
MAX_MESSAGE_BYTES = 2**31 - 1  # large objects and results travel in single messages

# How long a client's call to a worker (RunTask, CallActor and their WaitTask/WaitActorCalls)
# asks it to wait for results: a worker that vanished without a word shows within this plus
# WORKER_CALL_MARGIN_MS (~7 s).
WORKER_WAIT_MS = 5_000

# A long poll asks the server to wait up to `wait_ms`; the client's deadline adds a margin,
# so that a slow answer is not mistaken for a dead server.
WORKER_CALL_MARGIN_MS = 2_000  # calls to a worker (RunTask, CallActor, their waits)
CONTROLLER_CALL_MARGIN_MS = 5_000  # calls to the controller (a busier process)
