"""Secrets by reference: configuration files and command lines say where a secret is, never what it is.

A reference is one of:

* ``env:<NAME>``: the environment variable ``NAME`` of the process that reads it;
* ``file:<path>``: the text of a file, local or ``gs://`` (surrounding whitespace dropped);
* ``projects/<p>/secrets/<s>/versions/<v>``: a Google Cloud Secret Manager secret version
  (``<v>`` a number or ``latest``), read with the ``google-cloud-secret-manager`` client.

The delivery layer reads its secrets in ``DoFn.setup``, on the worker, so the pickled DoFns, the
job graph and what Dataflow stages hold the reference only.

>>> str(parse_ref("env:WAYBILL_SECRET_ERP", "target erp"))
'env:WAYBILL_SECRET_ERP'
>>> parse_ref("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "target erp")
Traceback (most recent call last):
...
ValueError: target erp: a secret is given by reference, never inline: env:<NAME>, file:<path> or projects/<p>/secrets/<s>/versions/<v>
"""
from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

REFERENCE_FORMS = "env:<NAME>, file:<path> or projects/<p>/secrets/<s>/versions/<v>"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_VERSION = re.compile(r"^projects/[^/]+/secrets/[^/]+/versions/[^/]+$")


class SecretSource(str, enum.Enum):
    """Where a referenced secret is kept."""

    ENV = "env"
    FILE = "file"
    SECRET_MANAGER = "secret_manager"


@dataclass(frozen=True)
class SecretRef:
    """Where one secret is: ``name`` is the variable, the path or the secret version."""

    source: SecretSource
    name: str

    def __str__(self) -> str:
        return self.name if self.source is SecretSource.SECRET_MANAGER else f"{self.source.value}:{self.name}"


def parse_ref(text: object, what: str) -> SecretRef:
    """The reference ``text`` (see the module docstring); ``what`` names its owner in errors.

    Raises:
        ValueError: ``text`` is no reference, for example a secret written inline. The message
            never repeats a value that might be the secret itself.
    """
    if isinstance(text, str):
        if text.startswith("env:") and _ENV_NAME.match(text[4:]):
            return SecretRef(SecretSource.ENV, text[4:])
        if text.startswith("file:") and text[5:].strip():
            return SecretRef(SecretSource.FILE, text[5:])
        if _SECRET_VERSION.match(text):
            return SecretRef(SecretSource.SECRET_MANAGER, text)
    shown = f"; got {text!r}" if isinstance(text, str) and text.startswith(("env:", "file:", "projects/")) else ""
    raise ValueError(f"{what}: a secret is given by reference, never inline: {REFERENCE_FORMS}{shown}")


def read_secret(ref: SecretRef, what: str) -> str:
    """The secret ``ref`` points to, without surrounding whitespace.

    Raises:
        ValueError: an unset variable, an unreadable file or secret version, or an empty secret;
            the message names ``what`` and the reference, never the value.
    """
    if ref.source is SecretSource.ENV:
        value = os.environ.get(ref.name)
        if value is None:
            raise ValueError(f"{what}: the environment variable {ref.name} ({ref}) is not set")
    elif ref.source is SecretSource.FILE:
        try:
            with FileSystems.open(ref.name, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
                value = stream.read().decode("utf-8")
        except OSError as error:
            raise ValueError(f"{what}: cannot read {ref}: {error}") from error
        except UnicodeDecodeError as error:
            raise ValueError(f"{what}: {ref} is not UTF-8 text") from error
    else:
        value = _secret_manager_value(ref.name, what)
    value = value.strip()
    if not value:
        raise ValueError(f"{what}: {ref} is empty")
    return value


def _secret_manager_value(version: str, what: str) -> str:
    try:
        from google.cloud import secretmanager
    except ImportError as error:
        raise ValueError(f"{what}: reading {version} needs the google-cloud-secret-manager package") from error
    with secretmanager.SecretManagerServiceClient() as client:
        response = client.access_secret_version(request={"name": version})
    data: bytes = response.payload.data
    return data.decode("utf-8")
