"""What changed since the state was last saved: the marks the registries leave for the journal.

The registries and `Transitions` mark, by id, every task, worker, actor, object and finished
log they add, change or remove; `journal` later turns the marks into rows (a marked id that is
no longer in its registry was removed; a forgotten task leaves its row number). Marks are
insertion-ordered (dicts used as ordered sets), so new tasks are saved in the order they were
submitted. A `Changes` that is not `enabled` (a controller without durable state) keeps
nothing.
"""

from __future__ import annotations


class Changes:
    """Ids of what changed, by kind; `take` hands them over and starts afresh."""

    __slots__ = (
        "enabled",
        "new_tasks",
        "tasks",
        "workers",
        "new_actors",
        "actors",
        "objects",
        "owners",
        "gone_rows",
        "new_jobs",
        "jobs",
    )

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled
        self.new_tasks: dict[str, None] = {}  # added since the last save (also in `tasks`)
        self.tasks: dict[str, None] = {}  # added, changed or removed
        self.workers: dict[str, None] = {}
        self.new_actors: dict[str, None] = {}
        self.actors: dict[str, None] = {}
        self.objects: dict[str, None] = {}
        self.owners: dict[str, None] = {}  # finished logs appended to, read or expired
        self.gone_rows: list[int] = []  # saved rows of tasks forgotten (evicted, replaced)
        self.new_jobs: dict[str, None] = {}  # added since the last save (also in `jobs`)
        self.jobs: dict[str, None] = {}  # added, changed or forgotten

    def new_task(self, task_id: str) -> None:
        if self.enabled:
            self.new_tasks[task_id] = None
            self.tasks[task_id] = None

    def task(self, task_id: str) -> None:
        if self.enabled:
            self.tasks[task_id] = None

    def gone_row(self, row: int) -> None:
        if self.enabled and row:
            self.gone_rows.append(row)

    def worker(self, worker_id: str) -> None:
        if self.enabled:
            self.workers[worker_id] = None

    def new_actor(self, actor_id: str) -> None:
        if self.enabled:
            self.new_actors[actor_id] = None
            self.actors[actor_id] = None

    def actor(self, actor_id: str) -> None:
        if self.enabled:
            self.actors[actor_id] = None

    def object(self, object_id: str) -> None:
        if self.enabled:
            self.objects[object_id] = None

    def owner(self, owner: str) -> None:
        if self.enabled:
            self.owners[owner] = None

    def new_job(self, job_id: str) -> None:
        if self.enabled:
            self.new_jobs[job_id] = None
            self.jobs[job_id] = None

    def job(self, job_id: str) -> None:
        if self.enabled:
            self.jobs[job_id] = None

    def __bool__(self) -> bool:
        return bool(
            self.tasks
            or self.workers
            or self.actors
            or self.objects
            or self.owners
            or self.gone_rows
            or self.jobs
        )

    def take(self) -> Changes:
        """The marks so far (as a new `Changes`); this one starts empty."""
        taken = Changes(self.enabled)
        for name in Changes.__slots__[1:]:
            setattr(taken, name, getattr(self, name))
            setattr(self, name, [] if name == "gone_rows" else {})
        return taken
