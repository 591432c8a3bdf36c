"""The job spec cache reads a job once per process and keeps registries apart."""

from __future__ import annotations

from controllers.jobspecs import JobSpecs
from controllers.jobtypes.hello_world import HelloParams
from controllers.registry import registry
from schemas.ids import JobId
from tests.fakes import FakeDatabase, FakeJobStore


class CountingJobs(FakeJobStore):
    reads = 0

    def get(self, job_id: JobId):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().get(job_id)


def test_a_job_is_read_once_and_its_parameters_validated() -> None:
    jobs = CountingJobs(FakeDatabase())
    job_id = JobId("b" * 64)
    jobs.submit(job_id, "hello_world", {"n": 2, "name": "x"}, ["greet", "reply"])
    specs = JobSpecs(size=2)
    first = specs.of(job_id, jobs, registry)
    again = specs.of(job_id, jobs, registry)
    assert first is again and jobs.reads == 1
    assert first.params == HelloParams(n=2, name="x")
    assert first.controller.job_type == "hello_world"


def test_the_cache_is_bounded() -> None:
    jobs = CountingJobs(FakeDatabase())
    ids = [JobId(c * 64) for c in "cde"]
    for n, job_id in enumerate(ids):
        jobs.submit(job_id, "hello_world", {"n": n + 1}, ["greet", "reply"])
    specs = JobSpecs(size=2)
    for job_id in ids:
        specs.of(job_id, jobs, registry)
    specs.of(ids[0], jobs, registry)  # evicted by the third: read again
    assert jobs.reads == 4
