"""Answer models: lenient decoding, `.raw`, equality. Pure."""

from __future__ import annotations

import msgspec
import pytest

from cuemsg.cueapi.models import (
    Claimed,
    ClaimResult,
    Cue,
    CueList,
    Execution,
    FireResult,
    Info,
    decode_model,
)


def test_raw_keeps_fields_the_model_does_not_know() -> None:
    data = {"id": "cue_1", "name": "n", "run_count": "4", "hosted_only": {"x": 1}}
    cue = decode_model(data, Cue)
    assert cue.run_count == 4  # lenient: a number sent as a string
    assert cue.raw["hosted_only"] == {"x": 1}
    assert cue == Cue(id="cue_1", name="n", run_count=4)  # raw is not compared
    assert Cue(id="x").raw == {}


def test_raw_reaches_nested_models() -> None:
    data = {"cues": [{"id": "a", "extra": 1}, {"id": "b"}], "total": 2, "more": True}
    page = decode_model(data, CueList)
    assert page.raw["more"] is True
    assert page.cues[0].raw["extra"] == 1 and page.cues[1].raw == {"id": "b"}


def test_missing_required_field_fails() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_model({"name": "no id"}, Cue)


def test_conveniences() -> None:
    assert FireResult(id="e").execution_id == "e"
    exe = decode_model({"id": "e", "payload": {"task": "t"}}, Execution)
    assert exe.task == "t"
    assert Execution(id="e", payload={"task": 3}).task is None
    assert ClaimResult(claimed=False).execution is None
    one = Claimed(execution_id="e")
    assert ClaimResult(claimed=True, executions=[one]).execution == one
    assert decode_model({"version": "1"}, Info).extensions == []


def test_models_encode_without_raw() -> None:
    cue = decode_model({"id": "a", "zzz": 1}, Cue)
    assert b"zzz" not in msgspec.json.encode(cue)
