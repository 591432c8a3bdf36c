"""Job types and the engine that runs them. The extension API is re-exported here."""

from controllers.base import (
    AggregateContext,
    BaseController,
    BuildContext,
    FailurePolicy,
    FinalizeContext,
    RetryPolicy,
    Stage,
    TaskContext,
)
from controllers.registry import Registry, register, registry
from schemas.exceptions import PermanentTaskError

__all__ = [
    "AggregateContext",
    "BaseController",
    "BuildContext",
    "FailurePolicy",
    "FinalizeContext",
    "PermanentTaskError",
    "Registry",
    "RetryPolicy",
    "Stage",
    "TaskContext",
    "register",
    "registry",
]
