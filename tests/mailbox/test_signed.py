"""Signed senders (issue 10): a mailbox with a key signs what it sends and
publishes its public key; a receiver with `require_signed=True` handles
only messages signed by the key their claimed sender published, and records
why it refused the others. Sync and async, against the embedded server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cuemsg.cueapi import AsyncCueClient, CueClient
from cuemsg.envelope import (
    SIGNING_KEY_FIELD,
    Meta,
    build_payload,
    new_id,
    signature_of,
    signed_content,
    utcnow,
    with_signature,
)
from cuemsg.mailbox import AsyncMailbox, Mailbox
from cuemsg.signing import SigningKey, generate_key, verify
from tests.mailbox.conftest import POLL, serving

# -- keys ------------------------------------------------------------------------------------


def test_keys_sign_and_verify_and_load_from_file_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = generate_key()
    key = SigningKey.from_text(text)
    assert key.public_key.startswith("ed25519:") and key.public_key != text
    signature = key.sign(b"hello")
    assert verify(key.public_key, b"hello", signature)
    assert not verify(key.public_key, b"hellO", signature)
    assert not verify(SigningKey(generate_key()).public_key, b"hello", signature)
    assert not verify(key.public_key, b"hello", "not base64!")
    assert not verify("ed25519:short", b"hello", signature)
    (tmp_path / "key").write_text(text + "\n")
    assert SigningKey.from_file(tmp_path / "key").public_key == key.public_key
    assert SigningKey.coerce(tmp_path / "key").public_key == key.public_key
    assert SigningKey.coerce(text).public_key == key.public_key
    assert SigningKey.coerce(key) is key
    monkeypatch.setenv("CUEMSG_SIGNING_KEY", text)
    assert SigningKey.from_env().public_key == key.public_key
    assert text not in repr(key)


def test_bad_keys_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="must start with 'ed25519:'"):
        SigningKey.from_text("rsa:abc")
    with pytest.raises(ValueError, match="not valid base64"):
        SigningKey.from_text("ed25519:???")
    with pytest.raises(ValueError, match="32 bytes, not 3"):
        SigningKey.from_text("ed25519:YWJj")
    with pytest.raises(ValueError, match="cannot read the signing key file"):
        SigningKey.from_file(tmp_path / "missing")
    (tmp_path / "bad").write_text("nope")
    with pytest.raises(ValueError, match="bad: a signing key must start"):
        SigningKey.from_file(tmp_path / "bad")
    monkeypatch.delenv("CUEMSG_SIGNING_KEY", raising=False)
    with pytest.raises(ValueError, match="CUEMSG_SIGNING_KEY holds no signing key"):
        SigningKey.from_env()
    monkeypatch.setenv("MY_KEY", "ed25519:YWJj")
    with pytest.raises(ValueError, match="MY_KEY: a signing key must hold 32 bytes"):
        SigningKey.from_env("MY_KEY")


def test_what_is_signed_survives_the_attempt_count_but_not_a_changed_body() -> None:
    meta = Meta(id=new_id(), sender="cue_alice0000000", sent_at=utcnow())
    payload = build_payload(meta=meta, body={"x": 1.5}, task="t", reply_cue_id="cue_alice0000000")
    content = signed_content(payload)
    retried = {**payload, "cuemsg": {**payload["cuemsg"], "attempt": 2}}
    assert signed_content(retried) == content
    assert signed_content({**payload, "task": "other"}) == content  # task is routing only
    changed = build_payload(meta=meta, body={"x": 2}, task="t", reply_cue_id="cue_alice0000000")
    assert signed_content(changed) != content
    signed = with_signature(payload, "c2ln")
    assert signature_of(signed) == "c2ln" and signed_content(signed) == content
    assert signature_of(payload) is None


# -- end to end ------------------------------------------------------------------------------


def _forge(client: CueClient, to: str, *, claims: str, key: SigningKey, body: Any) -> None:
    """Fire a message that says it is from `claims`, signed with someone else's key."""
    meta = Meta(id=new_id(), sender=claims, sent_at=utcnow())
    payload = build_payload(meta=meta, body=body, reply_cue_id=claims)
    client.cues.fire(
        to, payload_override=with_signature(payload, key.sign(signed_content(payload)))
    )


def _outcome_of(client: CueClient, execution_id: str) -> dict[str, Any]:
    exe = client.executions.get(execution_id)
    assert exe.status == "failed", exe
    return dict(exe.raw["outcome"])


def test_a_forged_sender_is_caught_and_never_handled(
    client: CueClient, mailboxes: Callable[..., Mailbox]
) -> None:
    alice_key, mallory_key = SigningKey(generate_key()), SigningKey(generate_key())
    alice = mailboxes("alice", signing_key=alice_key)
    mallory = mailboxes("mallory", signing_key=mallory_key)
    plain = mailboxes("plain")
    bob = mailboxes("bob", require_signed=True)
    assert client.cues.get(alice.address).payload[SIGNING_KEY_FIELD] == alice_key.public_key

    genuine = alice.send(bob.address, {"from": "alice"})
    _forge(client, bob.address, claims=alice.address, key=mallory_key, body={"from": "mallory"})
    unsigned = plain.send(bob.address, {"from": "plain"})
    # Alice's signed message with its body changed on the way.
    meta = Meta(id=new_id(), sender=alice.address, sent_at=utcnow())
    payload = build_payload(meta=meta, body={"pay": 1}, reply_cue_id=alice.address)
    signed = with_signature(payload, alice_key.sign(signed_content(payload)))
    client.cues.fire(bob.address, payload_override={**signed, "message": {"pay": 1000}})

    handled: list[Any] = []
    with serving(bob, lambda m: handled.append(m.body)):
        deadline = ticking(10)
        while bob.stats.unsigned < 3 or not handled:
            assert deadline(), bob.stats
    assert handled == [{"from": "alice"}]
    assert bob.stats.unsigned == 3 and bob.stats.received == 1
    assert client.executions.get(genuine.execution_id).status == "success"
    refused = client.executions.list(cue_id=bob.address, status="failed").executions
    errors = sorted(e.raw["outcome"]["error"] for e in refused)
    assert len(errors) == 3
    assert (
        sum(
            "forged: the signature does not match the key of the claimed sender" in e
            for e in errors
        )
        == 2
    )
    assert any("unsigned: this mailbox accepts only signed messages" in e for e in errors)
    outcome = _outcome_of(client, unsigned.execution_id)
    assert outcome["metadata"]["cuemsg"]["reason"] == "unsigned"
    mallory.close()


def test_a_sender_without_a_published_key_or_cue_is_refused(
    client: CueClient, mailboxes: Callable[..., Mailbox]
) -> None:
    key = SigningKey(generate_key())
    quiet = mailboxes("quiet")  # no key published on its cue
    bob = mailboxes("bob2", require_signed=True)
    _forge(client, bob.address, claims=quiet.address, key=key, body=1)
    _forge(client, bob.address, claims="cue_nosuchcue000", key=key, body=2)
    assert [m.body for m in bob.receive(wait=1)] == []
    errors = sorted(
        e.raw["outcome"]["error"]
        for e in client.executions.list(cue_id=bob.address, status="failed").executions
    )
    assert ["publishes no signing key" in e for e in errors] == [True, True]


def test_a_new_key_is_read_again_and_unsigned_mail_is_fine_without_require_signed(
    client: CueClient, mailboxes: Callable[..., Mailbox], tmp_path: Path
) -> None:
    first, second = generate_key(), generate_key()
    bob = mailboxes("bob3", require_signed=True)
    carol = mailboxes("carol", signing_key=first)
    carol.send(bob.address, "one")
    assert [m.body for m in bob.receive(wait=1)] == ["one"]
    carol.close()
    (tmp_path / "carol.key").write_text(second)
    carol = mailboxes("carol", signing_key=tmp_path / "carol.key")  # a new key, republished
    carol.send(bob.address, "two")
    assert [m.body for m in bob.receive(wait=1)] == ["two"]
    relaxed = mailboxes("relaxed")
    mailboxes("anyone").send(relaxed.address, "hi")
    assert [m.body for m in relaxed.receive(wait=1)] == ["hi"]


def test_requests_and_replies_are_signed(
    client: CueClient, mailboxes: Callable[..., Mailbox]
) -> None:
    asker = mailboxes("asker", signing_key=generate_key(), require_signed=True)
    answerer = mailboxes("answerer", signing_key=generate_key(), require_signed=True)
    with serving(answerer, lambda m: {"echo": m.body}):
        assert asker.request(answerer.address, "hi", timeout=10) == {"echo": "hi"}
    assert answerer.stats.unsigned == 0


def ticking(seconds: float) -> Callable[[], bool]:
    """A callable that sleeps a moment and says whether `seconds` have not yet passed."""
    import time

    end = time.monotonic() + seconds

    def wait() -> bool:
        time.sleep(0.05)
        return time.monotonic() < end

    return wait


@pytest.mark.anyio
async def test_async_mailboxes_sign_and_check_too(aclient: AsyncCueClient) -> None:
    key = SigningKey(generate_key())
    async with (
        AsyncMailbox.open(aclient, "a-alice", poll_wait=POLL, signing_key=key) as alice,
        AsyncMailbox.open(aclient, "a-plain", poll_wait=POLL) as plain,
        AsyncMailbox.open(aclient, "a-bob", poll_wait=POLL, require_signed=True) as bob,
    ):
        await alice.send(bob.address, "signed")
        await plain.send(bob.address, "unsigned")
        got = [m.body async for m in bob.receive(wait=1)]
        assert got == ["signed"]
        assert bob.stats.unsigned == 1
