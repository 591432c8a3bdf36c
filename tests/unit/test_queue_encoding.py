"""Queue message encoding, size and delay rules, without a queue service."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest
from azure.storage.queue import TextBase64EncodePolicy
from hypothesis import given
from hypothesis import strategies as st

from azstorage import MessageEncoding, wire_size, wire_text
from lightsout.devservices import azurite_connection_string, free_port
from repositories.queues import (
    QueueRepository,
    decode_wire_text,
    read_message_encoding,
    visibility_seconds,
)
from schemas.exceptions import ConfigurationError, MessageTooLarge, QueueError
from schemas.ids import JobId, make_task_id
from schemas.messages import MAX_MESSAGE_BYTES, TaskQueueMessage
from schemas.settings import Settings

JOB = JobId("ab" * 32)
ENCODINGS: list[MessageEncoding] = ["base64", "none"]


def write_host_json(tmp_path: Path, queues: dict[str, object]) -> Path:
    path = tmp_path / "host.json"
    path.write_text(json.dumps({"version": "2.0", "extensions": {"queues": queues}}))
    return path


def test_encoding_defaults_to_base64_when_unset(tmp_path: Path) -> None:
    assert read_message_encoding(write_host_json(tmp_path, {"batchSize": 16})) == "base64"
    assert read_message_encoding(tmp_path / "absent.json") == "base64"


@pytest.mark.parametrize(("value", "expected"), [("none", "none"), ("Base64", "base64")])
def test_encoding_is_read_from_host_json(tmp_path: Path, value: str, expected: str) -> None:
    path = write_host_json(tmp_path, {"messageEncoding": value})
    assert read_message_encoding(path) == expected


def test_unknown_encoding_names_the_setting(tmp_path: Path) -> None:
    path = write_host_json(tmp_path, {"messageEncoding": "utf8"})
    with pytest.raises(ConfigurationError, match=r"messageEncoding.*'utf8'"):
        read_message_encoding(path)


def test_malformed_host_json_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "host.json"
    path.write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"host\.json"):
        read_message_encoding(path)


def test_the_app_host_json_matches_the_functions_default() -> None:
    assert read_message_encoding(Path(__file__).resolve().parents[2] / "host.json") == "base64"


@given(st.text())
def test_base64_wire_text_is_what_the_functions_host_decodes(text: str) -> None:
    wire = wire_text(text, "base64")
    assert wire == TextBase64EncodePolicy().encode(text)
    assert decode_wire_text(wire, "base64") == text


@given(st.text(), st.sampled_from(ENCODINGS))
def test_wire_size_is_the_utf8_size_of_the_wire_text(text: str, encoding: MessageEncoding) -> None:
    assert wire_size(text, encoding) == len(wire_text(text, encoding).encode("utf-8"))


def test_base64_grows_a_message_by_four_thirds() -> None:
    assert wire_size("x" * 3000, "base64") == 4000
    assert wire_size("é" * 3, "base64") == 8  # six UTF-8 bytes


def test_plain_text_is_sent_unchanged() -> None:
    assert wire_text('{"a":1}', "none") == '{"a":1}'
    assert decode_wire_text('{"a":1}', "none") == '{"a":1}'


def test_a_body_that_is_not_base64_fails_loud() -> None:
    with pytest.raises(QueueError, match="not base64"):
        decode_wire_text('{"job_id": "x"}', "base64")


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [(None, None), (timedelta(0), 0), (timedelta(seconds=1.2), 2), (timedelta(days=7), 604800)],
)
def test_delay_becomes_whole_seconds_rounded_up(delay: timedelta | None, seconds: int) -> None:
    assert visibility_seconds(delay) == seconds


@pytest.mark.parametrize("delay", [timedelta(seconds=-1), timedelta(days=7, seconds=1)])
def test_delay_out_of_range_is_refused(delay: timedelta) -> None:
    with pytest.raises(ValueError, match="7 days"):
        visibility_seconds(delay)


def test_bad_connection_string_fails_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="connection string"):
        QueueRepository("AccountName=x", "a-jobs", "a-tasks")


def test_oversized_message_is_refused_before_any_network_call() -> None:
    # Nothing listens on the port: had a send been tried, QueueUnavailable would say so.
    repo = QueueRepository(azurite_connection_string(free_port()), "u-jobs", "u-tasks")
    ids = [make_task_id(JOB, 3, i) for i in range(2048)]
    big = TaskQueueMessage.model_construct(job_id=JOB, stage=3, task_ids=ids)
    with pytest.raises(MessageTooLarge) as caught:
        repo.send_tasks([big])
    size = wire_size(big.model_dump_json(), "base64")
    assert size > MAX_MESSAGE_BYTES
    assert JOB in str(caught.value)
    assert "stage=3" in str(caught.value)
    assert str(size) in str(caught.value)


def test_base64_of_json_round_trips_through_the_standard_library() -> None:
    msg = TaskQueueMessage(job_id=JOB, stage=1, task_ids=[make_task_id(JOB, 1, 0)])
    wire = wire_text(msg.model_dump_json(), "base64")
    assert TaskQueueMessage.model_validate_json(base64.b64decode(wire)) == msg


def test_repository_takes_its_queue_names_from_settings() -> None:
    settings = Settings(
        storage_connection=azurite_connection_string(free_port()),
        database_url="postgresql://localhost/x",
        jobs_queue="my-jobs",
        tasks_queue="my-tasks",
    )
    with QueueRepository.from_settings(settings, "none") as repo:
        assert repo.queues == ("my-jobs", "my-tasks", "my-jobs-poison", "my-tasks-poison")
        assert (repo.jobs_poison_queue, repo.tasks_poison_queue) == (
            settings.jobs_poison_queue,
            settings.tasks_poison_queue,
        )
        assert repo.encoding == "none"
