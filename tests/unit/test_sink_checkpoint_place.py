"""Which group, topic and partition a Kafka sink checkpoint's name stands for (`pg2neo status` groups by it)."""

from __future__ import annotations

import pytest

from pg2neo.transport.sink_status import CheckpointPlace, checkpoint_place


@pytest.mark.parametrize(
    ("name", "place"),
    [
        ("kafka:g:base", CheckpointPlace("g")),
        ("kafka:g:pg.public.people:0", CheckpointPlace("g", "pg.public.people", 0)),
        ("kafka:team:a:pg.public.people:12", CheckpointPlace("team:a", "pg.public.people", 12)),
        ("kafka:team:a:base", CheckpointPlace("team:a")),
        ("outbox", None),
        ("kafka::base", None),
        ("kafka:g:topic:x", None),
        ("kafka:g:topic", None),
    ],
)
def test_a_checkpoint_name_says_its_group_topic_and_partition(name: str, place: CheckpointPlace | None) -> None:
    assert checkpoint_place(name) == place
