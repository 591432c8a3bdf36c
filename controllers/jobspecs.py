"""What a task message needs of its job and that cannot change: type and parameters.

A job's id is the hash of its type and canonical parameters (DESIGN invariant 2), so
the pair read once for an id stays right for as long as the process lives, whatever
database it talks to. Caching it spares every task message a read of the job row and a
validation of its parameters.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from controllers.base import BaseController
from controllers.ports import JobStore
from controllers.registry import Registry
from schemas.ids import JobId

MAX_JOBS = 4096


@dataclass(frozen=True)
class JobSpec:
    controller: BaseController[Any]
    params: Any
    # Held so that the registry's id(), part of the key, cannot be reused while cached.
    registry: Registry


class JobSpecs:
    """A bounded, thread-safe cache of job id -> (job type, validated parameters)."""

    def __init__(self, size: int = MAX_JOBS) -> None:
        self._size = size
        self._specs: OrderedDict[tuple[int, JobId], JobSpec] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, job_id: JobId, jobs: JobStore, registry: Registry) -> JobSpec:
        """Return the job's type and parameters, reading the job only the first time."""
        key = (id(registry), job_id)
        with self._lock:
            spec = self._specs.get(key)
            if spec is not None and spec.registry is registry:
                self._specs.move_to_end(key)
                return spec
        job = jobs.get(job_id)
        controller = registry.get(job.job_type)
        params = controller.parameters.model_validate(job.parameters)
        spec = JobSpec(controller, params, registry)
        with self._lock:
            self._specs[key] = spec
            while len(self._specs) > self._size:
                self._specs.popitem(last=False)
        return spec


job_specs = JobSpecs()
