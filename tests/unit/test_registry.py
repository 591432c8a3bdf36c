"""The job-type registry refuses wrongly declared job types, naming what is wrong."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import pytest
from pydantic import BaseModel

import controllers.jobtypes  # noqa: F401  # registers the built-in job types
from controllers.base import (
    BaseController,
    BuildContext,
    FailurePolicy,
    RetryPolicy,
    Stage,
    TaskContext,
)
from controllers.registry import Registry, problems_of, registry
from schemas.exceptions import JobTypeError


class Params(BaseModel):
    n: int = 1


def plan(ctx: BuildContext[Params]) -> list[dict[str, Any]]:
    return [{}]


def run(ctx: TaskContext[Params]) -> dict[str, Any]:
    return {}


def stage(name: str = "one", **options: Any) -> Stage[Params]:
    return Stage(name, build=plan, run=run, **options)


class Undeclared(BaseController[Params]):
    """Stages without a parameters model."""

    declared: ClassVar[list[Stage[Params]]] = [stage()]

    def define_stages(self) -> list[Stage[Params]]:
        return list(self.declared)


class Declared(Undeclared):
    parameters = Params


def job_type(
    name: str | None = "demo", base: type[Undeclared] = Declared, **attributes: Any
) -> type[Undeclared]:
    """Return a new job type class; `name=None` leaves job_type unset."""
    namespace = attributes | ({} if name is None else {"job_type": name})
    return cast(type[Undeclared], type("Demo", (base,), namespace))


def refusal(cls: type[Undeclared]) -> str:
    types = Registry()
    with pytest.raises(JobTypeError) as refused:
        types.register(cls)
    assert list(types) == []  # nothing of a refused job type is kept
    return str(refused.value)


def test_a_valid_job_type_registers_and_is_returned() -> None:
    types = Registry()
    cls = job_type("demo")
    assert types.register(cls) is cls  # usable as a class decorator
    assert "demo" in types
    assert isinstance(types.get("demo"), cls)


def test_a_route_name_cannot_be_a_job_type() -> None:
    # POST /api/jobs/purge is the purge route, not a submission of a job type "purge".
    with pytest.raises(JobTypeError, match="'purge' is reserved"):
        Registry().register(job_type("purge"))


def test_a_job_type_name_is_registered_once() -> None:
    types = Registry()
    types.register(job_type("demo"))
    with pytest.raises(JobTypeError, match=r"job type registered twice \(job_type='demo'\)"):
        types.register(job_type("demo"))


@pytest.mark.parametrize("name", ["", "Demo", "1demo", "de-mo", "de mo", "d" * 64, None])
def test_bad_job_type_names_are_refused(name: str | None) -> None:
    assert refusal(job_type(name)) == "Demo.job_type must match ^[a-z][a-z0-9_]{0,62}$"


def test_repeated_stage_names_are_refused() -> None:
    message = refusal(job_type(declared=[stage("one"), stage("two"), stage("one")]))
    assert message == (
        "job type 'demo' is declared wrongly: stage names repeat: ['one', 'two', 'one']"
    )


def test_a_bad_stage_name_is_refused() -> None:
    message = refusal(job_type(declared=[stage("one"), stage("Two")]))
    assert "stage 2 name 'Two' must match ^[a-z][a-z0-9_]{0,62}$" in message


@pytest.mark.parametrize("per_message", [-1, 513])
def test_tasks_per_message_out_of_range_is_refused(per_message: int) -> None:
    message = refusal(job_type(declared=[stage("one", tasks_per_message=per_message)]))
    assert message.endswith("stage 'one': tasks_per_message must be 1..512, or AUTO_PACKING (0)")


@pytest.mark.parametrize("per_message", [0, 1, 512])
def test_tasks_per_message_at_the_limits_is_accepted(per_message: int) -> None:
    Registry().register(job_type(declared=[stage("one", tasks_per_message=per_message)]))


def test_a_missing_or_wrong_parameters_model_is_refused() -> None:
    for cls in (
        job_type(base=Undeclared),
        job_type(parameters=dict),
        job_type(parameters=Params()),
    ):
        assert refusal(cls) == (
            "job type 'demo' is declared wrongly: `parameters` must be a Pydantic model class"
        )


def test_a_job_type_without_stages_is_refused() -> None:
    assert refusal(job_type(declared=[])).endswith("declared wrongly: it declares no stage")


def test_attempts_and_failure_fraction_are_checked() -> None:
    message = refusal(
        job_type(
            declared=[stage("one", max_attempts=0)],
            retry=RetryPolicy(max_attempts=0),
            failure_policy=FailurePolicy(max_failed_fraction=1.5),
        )
    )
    assert message == (
        "job type 'demo' is declared wrongly: stage 'one': max_attempts must be >= 1;"
        " failure_policy.max_failed_fraction must be within 0..1;"
        " retry.max_attempts must be >= 1"
    )


def test_an_unknown_job_type_names_the_known_ones() -> None:
    types = Registry()
    with pytest.raises(JobTypeError, match=r"^unknown job type 'demo'; known: none$"):
        types.get("demo")
    types.register(job_type("zeta"))
    types.register(job_type("alpha"))
    with pytest.raises(JobTypeError, match=r"^unknown job type 'demo'; known: alpha, zeta$"):
        types.get("demo")
    assert [c.job_type for c in types] == ["alpha", "zeta"]


def test_the_built_in_job_types_are_declared_rightly() -> None:
    assert {"hello_world", "noop_fanout", "prime_count"} <= {c.job_type for c in registry}
    assert all(problems_of(controller) == [] for controller in registry)


@pytest.mark.parametrize("name", ["cancel", "retry", "purge"])
def test_names_of_the_operator_routes_are_reserved(name: str) -> None:
    # POST /api/jobs/cancel must never be mistaken for submitting a job of type "cancel".
    assert "reserved by the API" in refusal(job_type(name))
