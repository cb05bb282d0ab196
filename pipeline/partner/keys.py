"""Partner key configuration: each partner's AES-256 keys, known members and limits (JSON).

Example (``--partner_keys``; read by the workers, never part of the job graph)::

    {"ACME-BANK": {"keys": {"k2026": "<base64 of 32 random bytes>"}, "feedback_key": "k2026",
                   "members_file": "acme-members.txt", "max_points": 100000,
                   "feedback_target": {"url": "https://acme.example.com/waybill/feedback",
                                       "secret_ref": "env:ACME_FEEDBACK_SECRET"}}}
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.delivery.targets import DeliveryTarget, target_from_config

FEEDBACK_PREFIX = "feedback-"  # a partner's feedback target is the delivery target feedback-<partner_id>


@dataclass(frozen=True)
class Partner:
    """One partner's keys and rules.

    Args:
        partner_id: as written in the envelope and on every row.
        keys: ``{key_id: 32-byte AES-256 key}``; files may use any of them (rotation).
        feedback_key_id: the key feedback and exception files are encrypted with.
        members: the member ids points may be credited to.
        max_points: the largest credit one row may carry.
        feedback_target: where answers are sent besides the run's ``feedback/`` folder:
            ``{"folder": <path, local or gs://>}`` or a webhook ``{"url": ..., "secret_ref": ...}``
            (a delivery target, see :mod:`pipeline.delivery.targets`); empty: not sent.
    """

    partner_id: str
    keys: Mapping[str, bytes]
    feedback_key_id: str
    members: frozenset[str] = field(default_factory=frozenset)
    max_points: int = 1_000_000
    feedback_target: Mapping[str, Any] = field(default_factory=dict)

    @property
    def feedback_target_id(self) -> str:
        return f"{FEEDBACK_PREFIX}{self.partner_id}"

    @property
    def feedback_folder(self) -> Optional[str]:
        folder: Optional[str] = self.feedback_target.get("folder")
        return folder

    def feedback_webhook(self) -> Optional[DeliveryTarget]:
        """The feedback webhook as a delivery target ``feedback-<partner_id>``, if one is configured."""
        if "url" not in self.feedback_target:
            return None
        return target_from_config({"target_id": self.feedback_target_id, **self.feedback_target})


def load_partners(text: str, read_text: Callable[[str], str]) -> dict[str, Partner]:
    """Partners from the JSON key configuration::

        {"ACME-BANK": {"keys": {"k2026": "<base64 of 32 random bytes>"}, "feedback_key": "k2026",
                       "members_file": "acme-members.txt", "max_points": 100000}}

    ``members`` (a list) or ``members_file`` (one id a line, read with ``read_text``) is required;
    ``feedback_key`` defaults to the last key listed; ``max_points`` to 1,000,000.

    Raises:
        ValueError: naming the partner and the bad key.
    """
    config = json.loads(text)
    if not isinstance(config, dict) or not config:
        raise ValueError("the partner key configuration is a JSON object {partner_id: {...}}, got none")
    partners = {}
    for partner_id, obj in config.items():
        known = {"keys", "feedback_key", "members", "members_file", "max_points", "feedback_target"}
        if not isinstance(obj, dict) or set(obj) - known:
            raise ValueError(f"partner {partner_id!r}: an object with keys from {sorted(known)}, got {obj!r:.80}")
        keys = {}
        for key_id, b64 in dict(obj.get("keys") or {}).items():
            key = base64.b64decode(b64, validate=True)
            if len(key) != 32:
                raise ValueError(f"partner {partner_id!r}: key {key_id!r} must be 32 bytes (base64), got {len(key)}")
            keys[key_id] = key
        if not keys:
            raise ValueError(f"partner {partner_id!r}: 'keys' must name at least one key")
        feedback_key = obj.get("feedback_key", list(keys)[-1])
        if feedback_key not in keys:
            raise ValueError(f"partner {partner_id!r}: feedback_key {feedback_key!r} is not one of {sorted(keys)}")
        if ("members" in obj) == ("members_file" in obj):
            raise ValueError(f"partner {partner_id!r}: give exactly one of 'members' (a list) or 'members_file'")
        listed = obj["members"] if "members" in obj else read_text(obj["members_file"]).split()
        partner = Partner(partner_id, keys, feedback_key, frozenset(str(m).strip() for m in listed),
                          int(obj.get("max_points", 1_000_000)), _feedback_target(partner_id, obj.get("feedback_target")))
        partner.feedback_webhook()  # a bad webhook target fails here, naming the partner's target
        partners[partner_id] = partner
    return partners


def _feedback_target(partner_id: str, obj: Any) -> Mapping[str, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, dict) or ("folder" in obj) == ("url" in obj):
        raise ValueError(f"partner {partner_id!r}: feedback_target is {{\"folder\": <path>}} or {{\"url\": ..., "
                         f"\"secret_ref\": ...}}, got {obj!r:.80}")
    if "folder" in obj and (set(obj) != {"folder"} or not isinstance(obj["folder"], str) or not obj["folder"].strip()):
        raise ValueError(f"partner {partner_id!r}: a folder feedback_target is {{\"folder\": <a path>}}, got {obj!r:.80}")
    return dict(obj)


def new_key() -> str:
    """A fresh AES-256 key, base64, for the configuration."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()
