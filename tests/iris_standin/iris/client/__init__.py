"""``iris.client``: the high-level client layer."""

from iris.actor.resolver import FixedResolver, ResolvedEndpoint, Resolver, ResolveResult
from iris.client.client import (
    EndpointRegistry,
    IrisClient,
    IrisContext,
    Job,
    JobAlreadyExists,
    JobFailedError,
    LocalClientConfig,
    LogEntry,
    Task,
    get_iris_ctx,
    iris_ctx,
    iris_ctx_scope,
)

__all__ = [
    "EndpointRegistry",
    "FixedResolver",
    "IrisClient",
    "IrisContext",
    "Job",
    "JobAlreadyExists",
    "JobFailedError",
    "LocalClientConfig",
    "LogEntry",
    "ResolveResult",
    "ResolvedEndpoint",
    "Resolver",
    "Task",
    "get_iris_ctx",
    "iris_ctx",
    "iris_ctx_scope",
]
