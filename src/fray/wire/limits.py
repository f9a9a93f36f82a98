"""Limits and timing margins that both ends of a call must agree on."""

MAX_ID_LENGTH = 128  # task, worker, actor and object ids, names, owners (characters)
MAX_MESSAGE_BYTES = 2**31 - 1  # large objects and results travel in single messages

# What servers accept (`fray.wire.edge`); a request past a limit is refused with
# resource_exhausted (HTTP 429) naming it, before it is parsed.
DEFAULT_MAX_REQUEST_BYTES = 1 << 30  # a request's body (`--max-request-bytes`)
# Fields and values in one request, at every depth: a message made of many tiny entries takes
# ~60 times its size in memory once parsed, so a request is bounded by count as well as size.
MAX_REQUEST_ELEMENTS = 1_000_000
# A task's longest timeout (`timeout_seconds`; 0 is none), about 23 days: the worker's wait
# for the task (poll(2) counts milliseconds in a C int) cannot be longer.
MAX_TIMEOUT_SECONDS = 2_000_000.0
# Tasks of one client (`TaskSpec.owner`) queued at the controller and not finished yet
# (`fray controller --max-queued-tasks-per-client`).
DEFAULT_MAX_QUEUED_TASKS_PER_CLIENT = 100_000

# How long a client's call to a worker (RunTask, CallActor and their WaitTask/WaitActorCalls)
# asks it to wait for results: a worker that vanished without a word shows within this plus
# WORKER_CALL_MARGIN_MS (~7 s).
WORKER_WAIT_MS = 5_000

# A long poll asks the server to wait up to `wait_ms`; the client's deadline adds a margin,
# so that a slow answer is not mistaken for a dead server.
WORKER_CALL_MARGIN_MS = 2_000  # calls to a worker (RunTask, CallActor, their waits)
CONTROLLER_CALL_MARGIN_MS = 5_000  # calls to the controller (a busier process)
