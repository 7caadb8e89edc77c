"""The contract's topic names have one definition (`schemas.topics`)."""

from __future__ import annotations

from typing import get_args

import streams.topics
from schemas import topics
from schemas.replay import ReplayLine


def test_the_input_topic_type_lists_the_input_topic_names() -> None:
    # a Literal cannot name constants: the type repeats the strings, this keeps them equal
    assert get_args(topics.InputTopic) == topics.INPUT_TOPICS
    assert ReplayLine.model_json_schema()["properties"]["topic"]["enum"] == list(
        topics.INPUT_TOPICS
    )


def test_streams_re_exports_the_names_instead_of_defining_them() -> None:
    for name in ("INPUT_TOPICS", "OUTPUT_TOPICS", "COMPACTED_TOPICS", "APPEND_TIME_TOPICS"):
        assert getattr(streams.topics, name) is getattr(topics, name)
