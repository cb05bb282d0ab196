"""The partner key configuration's feedback_target: a folder or a webhook, refused otherwise."""
from __future__ import annotations

import base64
import json

import pytest

from pipeline.partner.keys import load_partners

KEY = base64.b64encode(bytes(32)).decode()


def partner_with(target: object) -> dict:
    return {"P": {"keys": {"k": KEY}, "members": ["M1"], "feedback_target": target}}


def test_a_folder_or_a_webhook_is_a_feedback_target() -> None:
    folder = load_partners(json.dumps(partner_with({"folder": "gs://acme/outbox"})), str)["P"]
    assert (folder.feedback_folder, folder.feedback_webhook()) == ("gs://acme/outbox", None)
    hook = load_partners(json.dumps(partner_with({"url": "https://acme.example.com/f", "secret_ref": "env:X"})), str)["P"]
    target = hook.feedback_webhook()
    assert target is not None and (target.target_id, target.url, target.secret_ref) == (
        "feedback-P", "https://acme.example.com/f", "env:X")
    assert hook.feedback_folder is None
    assert load_partners(json.dumps({"P": {"keys": {"k": KEY}, "members": []}}), str)["P"].feedback_target == {}


@pytest.mark.parametrize("target, message", [
    ({"folder": ""}, r"a folder feedback_target is \{\"folder\": <a path>\}"),
    ({"folder": "/x", "secret_ref": "env:X"}, "a folder feedback_target is"),
    ({"folder": "/x", "url": "https://x.example.com"}, r"feedback_target is \{\"folder\": <path>\} or \{\"url\""),
    ({}, r"feedback_target is \{\"folder\": <path>\} or"),
    ("outbox/", r"feedback_target is \{\"folder\": <path>\} or"),
    ({"url": "https://x.example.com/f", "secret": "whsec_x"}, "feedback-P': an inline secret is refused"),
    ({"url": "ftp://x.example.com/f"}, "feedback-P"),
])
def test_a_bad_feedback_target_is_refused_naming_the_partner(target: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_partners(json.dumps(partner_with(target)), str)
