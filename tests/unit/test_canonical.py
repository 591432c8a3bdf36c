"""Canonical job ids (DESIGN invariant 2): equal parameters, equal id; any change, another id."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from schemas.canonical import canonical_json, job_id_for
from schemas.ids import JOB_ID_PATTERN


class Inner(BaseModel):
    name: str
    weights: list[float] = Field(default_factory=lambda: [1.0, 2.0])


class Params(BaseModel):
    count: int
    label: str = "default"
    ratio: float = 0.5
    tags: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    inner: Inner = Field(default_factory=lambda: Inner(name="x"))
    inners: list[Inner] = Field(default_factory=list)


JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON = st.recursive(
    JSON_LEAF,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
INNER = st.fixed_dictionaries(
    {"name": st.text(max_size=8)},
    optional={"weights": st.lists(st.floats(-1e6, 1e6), max_size=4)},
)
PARAMS = st.fixed_dictionaries(
    {"count": st.integers(0, 10**9)},
    optional={
        "label": st.text(max_size=10),
        "ratio": st.floats(-1e9, 1e9),
        "tags": st.lists(st.text(max_size=5), max_size=4),
        "options": st.dictionaries(st.text(max_size=6), JSON, max_size=4),
        "inner": INNER,
        "inners": st.lists(INNER, max_size=3),
    },
)


def shuffled(value: Any, rng: random.Random) -> Any:
    """Return value with the keys of every nested dict in another order (lists keep theirs)."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


@given(PARAMS, st.randoms(use_true_random=False))
def test_key_order_does_not_change_the_id(raw: dict[str, Any], rng: random.Random) -> None:
    first = Params.model_validate(raw)
    second = Params.model_validate(shuffled(raw, rng))
    assert job_id_for("demo", first) == job_id_for("demo", second)
    assert JOB_ID_PATTERN.fullmatch(job_id_for("demo", first))


@given(PARAMS)
def test_defaults_are_applied(raw: dict[str, Any]) -> None:
    explicit = Params.model_validate(raw).model_dump()
    assert job_id_for("demo", Params.model_validate(raw)) == job_id_for(
        "demo", Params.model_validate(explicit)
    )


def test_omitting_a_defaulted_field_equals_passing_the_default() -> None:
    omitted = Params(count=3)
    given_defaults = Params.model_validate(
        {
            "count": 3,
            "label": "default",
            "ratio": 0.5,
            "tags": [],
            "options": {},
            "inner": {"name": "x", "weights": [1.0, 2.0]},
            "inners": [],
        }
    )
    assert job_id_for("demo", omitted) == job_id_for("demo", given_defaults)


@given(PARAMS, PARAMS)
def test_different_parameters_give_different_ids(a: dict[str, Any], b: dict[str, Any]) -> None:
    first, second = Params.model_validate(a), Params.model_validate(b)
    if json.loads(canonical_json(first)) != json.loads(canonical_json(second)):
        assert job_id_for("demo", first) != job_id_for("demo", second)


@given(PARAMS, st.data())
def test_changing_one_value_changes_the_id(raw: dict[str, Any], data: st.DataObject) -> None:
    base = Params.model_validate(raw)
    field = data.draw(st.sampled_from(["count", "label", "ratio", "tags", "options", "inner"]))
    dumped = base.model_dump()
    if field == "count":
        dumped["count"] = data.draw(st.integers(0, 10**9).filter(lambda v: v != base.count))
    elif field == "label":
        dumped["label"] = data.draw(st.text(max_size=10).filter(lambda v: v != base.label))
    elif field == "ratio":
        dumped["ratio"] = data.draw(st.floats(-1e9, 1e9).filter(lambda v: v != base.ratio))
    elif field == "tags":
        dumped["tags"] = [*base.tags, data.draw(st.text(max_size=5))]
    elif field == "options":
        key = data.draw(st.text(max_size=6))
        dumped["options"] = {**base.options, key: ["changed", base.options.get(key)]}
    else:
        dumped["inner"] = {**dumped["inner"], "name": base.inner.name + "!"}
    changed = Params.model_validate(dumped)
    assert job_id_for("demo", changed) != job_id_for("demo", base)


def test_nested_values_change_the_id() -> None:
    base = Params(count=1, options={"a": {"b": [1, 2, {"c": "d"}]}})
    deeper = Params(count=1, options={"a": {"b": [1, 2, {"c": "e"}]}})
    reordered_list = Params(count=1, options={"a": {"b": [2, 1, {"c": "d"}]}})
    ids = {job_id_for("demo", p) for p in (base, deeper, reordered_list)}
    assert len(ids) == 3


def test_job_type_and_salt_are_part_of_the_id() -> None:
    params = Params(count=1)
    ids = {
        job_id_for("demo", params),
        job_id_for("other", params),
        job_id_for("demo", params, salt="rerun-1"),
        job_id_for("demo", params, salt="rerun-2"),
    }
    assert len(ids) == 4
    assert job_id_for("demo", params, salt="") == job_id_for("demo", params)


def test_canonical_json_is_sorted_and_compact() -> None:
    text = canonical_json(Params(count=2, options={"z": 1, "a": {"y": "é", "b": None}}))
    assert " " not in text.replace('"default"', "")
    assert text.index('"count"') < text.index('"inner"') < text.index('"label"')
    assert '{"a":{"b":null,"y":"é"},"z":1}' in text
