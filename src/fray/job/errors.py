"""The exceptions fray raises to its users; they live in :mod:`fray.errors`.

Kept so that ``from fray.job.errors import TaskTimeoutError`` goes on working.
"""

from fray.errors import *  # noqa: F403
from fray.errors import __all__  # noqa: F401
