"""Secrets by reference: configuration names where a secret is; workers read it at setup.

The graph tests build the whole job (and the partner-file job) with webhook targets whose secrets
sit in environment variables, and search the serialized runner-API pipeline and every pickled
object in it (Beam compresses pickles: they are decompressed first) for the secret values.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from google.cloud import secretmanager
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from werkzeug import Request, Response

from pipeline import graph
from pipeline.delivery.deliver import DeliverBatchFn
from pipeline.delivery.records import delivery_request
from pipeline.delivery.secret_refs import SecretRef, SecretSource, parse_ref, read_secret
from pipeline.delivery.targets import DeliveryTarget, load_targets, read_target_secrets
from pipeline.deploy import dataflow_graph
from pipeline.local import partner_cli
from pipeline.options import WaybillOptions
from pipeline.partner import job as partner_job
from tests.partner_fixtures import write_config


def whsec(seed: str) -> str:
    return "whsec_" + base64.b64encode(f"{seed}-0123456789abcdefghijkl".encode()[:32]).decode()


# ---------------------------------------------------------------- references


@pytest.mark.parametrize(("text", "ref"), [
    ("env:WAYBILL_SECRET_ERP", SecretRef(SecretSource.ENV, "WAYBILL_SECRET_ERP")),
    ("file:/etc/waybill/erp.secret", SecretRef(SecretSource.FILE, "/etc/waybill/erp.secret")),
    ("file:gs://bucket/erp.secret", SecretRef(SecretSource.FILE, "gs://bucket/erp.secret")),
    ("projects/p/secrets/erp-hook/versions/latest",
     SecretRef(SecretSource.SECRET_MANAGER, "projects/p/secrets/erp-hook/versions/latest")),
])
def test_a_reference_names_its_source_and_prints_as_written(text: str, ref: SecretRef) -> None:
    assert parse_ref(text, "target erp") == ref
    assert str(ref) == text


@pytest.mark.parametrize("text", [
    whsec("inline"), "env:", "env:WAYBILL-SECRET", "file:", "projects/p/secrets/s", "secretmanager://p/s", "", None,
])
def test_anything_else_is_refused_without_repeating_a_possible_secret(text: Any) -> None:
    with pytest.raises(ValueError, match=r"^target erp: a secret is given by reference, never inline: "
                                         r"env:<NAME>, file:<path> or projects/<p>/secrets/<s>/versions/<v>") as error:
        parse_ref(text, "target erp")
    assert whsec("inline") not in str(error.value)


def test_secrets_are_read_from_the_environment_a_file_or_secret_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAYBILL_TEST_SECRET", f" {whsec('env')}\n")
    (tmp_path / "erp.secret").write_text(whsec("file") + "\n")
    asked: list[Any] = []

    class FakeSecretManager:
        def __enter__(self) -> FakeSecretManager:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def access_secret_version(self, request: dict[str, str]) -> Any:
            asked.append(request)
            return secretmanager.AccessSecretVersionResponse(payload={"data": whsec("sm").encode()})

    monkeypatch.setattr(secretmanager, "SecretManagerServiceClient", FakeSecretManager)

    assert read_secret(parse_ref("env:WAYBILL_TEST_SECRET", "t"), "t") == whsec("env")
    assert read_secret(parse_ref(f"file:{tmp_path / 'erp.secret'}", "t"), "t") == whsec("file")
    assert read_secret(parse_ref("projects/p/secrets/erp/versions/3", "t"), "t") == whsec("sm")
    assert asked == [{"name": "projects/p/secrets/erp/versions/3"}]


def test_a_missing_or_empty_secret_names_the_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAYBILL_TEST_UNSET", raising=False)
    monkeypatch.setenv("WAYBILL_TEST_EMPTY", " ")
    with pytest.raises(ValueError, match=r"^target erp: the environment variable WAYBILL_TEST_UNSET "
                                         r"\(env:WAYBILL_TEST_UNSET\) is not set$"):
        read_secret(parse_ref("env:WAYBILL_TEST_UNSET", "target erp"), "target erp")
    with pytest.raises(ValueError, match=r"^target erp: env:WAYBILL_TEST_EMPTY is empty$"):
        read_secret(parse_ref("env:WAYBILL_TEST_EMPTY", "target erp"), "target erp")
    with pytest.raises(ValueError, match=r"^target erp: cannot read file:.*missing.secret"):
        read_secret(parse_ref(f"file:{tmp_path / 'missing.secret'}", "target erp"), "target erp")


# ---------------------------------------------------------------- target configuration


def test_an_inline_secret_in_the_configuration_is_refused_in_one_line() -> None:
    config = [{"target_id": "erp", "url": "https://erp.example.com/h", "secret": whsec("inline")}]
    with pytest.raises(ValueError) as error:
        load_targets(json.dumps(config))
    assert str(error.value) == (
        "delivery target 'erp': an inline secret is refused; give \"secret_ref\": "
        "env:<NAME>, file:<path> or projects/<p>/secrets/<s>/versions/<v>"
    )


@pytest.mark.parametrize(("extra", "error"), [
    ({"secret_ref": whsec("inline")}, r"^target erp: secret_ref: a secret is given by reference, never inline"),
    ({"secret_headers": {"X-Api-Key": "k-123"}},
     r"^target erp: secret_headers\['X-Api-Key'\]: a secret is given by reference, never inline"),
    ({"secret_headers": ["X-Api-Key"]}, r"^target erp: secret_headers is an object \{header name: secret reference\}"),
    ({"headers": {"Authorization": "Bearer abc", "X-Trace": "1"}},
     r"^target erp: headers \['Authorization'\] carry credentials; give them in secret_headers as references"),
    ({"headers": {"x-api-key": "abc"}}, r"^target erp: headers \['x-api-key'\] carry credentials"),
])
def test_secret_references_and_credential_headers_are_checked(extra: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        load_targets(json.dumps([{"target_id": "erp", "url": "https://erp.example.com/h", **extra}]))


def test_a_signing_secret_read_at_setup_must_look_like_whsec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYBILL_TEST_SECRET", "not-a-webhook-secret")
    target = DeliveryTarget("erp", "https://erp.example.com/h", "env:WAYBILL_TEST_SECRET")
    with pytest.raises(ValueError) as error:
        read_target_secrets(target)
    assert str(error.value) == "target erp: secret_ref: the secret at env:WAYBILL_TEST_SECRET must look like whsec_<base64>"
    fn = DeliverBatchFn({"erp": target}, "run")
    with pytest.raises(ValueError, match="target erp: secret_ref: the secret at env:WAYBILL_TEST_SECRET"):
        fn.setup()


def test_a_request_is_signed_and_carries_secret_headers_read_from_a_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, api_key = whsec("signing"), "api-key-from-the-environment"
    (tmp_path / "erp.secret").write_text(secret + "\n")
    monkeypatch.setenv("WAYBILL_TEST_API_KEY", api_key)
    received: list[tuple[bytes, dict[str, str]]] = []

    def hook(request: Request) -> Response:
        received.append((request.get_data(), dict(request.headers)))
        return Response("ok", status=200)

    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("/erp", method="POST").respond_with_handler(hook)
    server.start()
    target = DeliveryTarget("erp", server.url_for("/erp"), f"file:{tmp_path / 'erp.secret'}",
                            headers={"X-Trace": "on"}, secret_headers={"X-Api-Key": "env:WAYBILL_TEST_API_KEY"})
    fn = DeliverBatchFn({"erp": target}, "run", seed=1)
    fn.setup()
    try:
        outputs = list(fn.process([delivery_request("erp", "evt-1", {"event_id": "evt-1"})]))
    finally:
        fn.teardown()
        server.stop()

    assert [o["delivered_ids"] for o in outputs if isinstance(o, dict)] == [["evt-1"]]
    [(body, headers)] = received
    assert Webhook(secret).verify(body, headers) == {"event_id": "evt-1"}
    assert (headers["X-Api-Key"], headers["X-Trace"]) == (api_key, "on")


# ---------------------------------------------------------------- nothing secret in the job graph


UNITS_AND_SUBSCRIBERS = ("erp", "wms", "coldchain", "customs", "sub-m001", "sub-east-exceptions", "sub-m002", "regulator")


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``{environment variable: secret}`` of every webhook target below, set for the test."""
    values = {f"WAYBILL_TEST_SECRET_{i}": whsec(f"target-{i}") for i in range(len(UNITS_AND_SUBSCRIBERS))}
    values["WAYBILL_TEST_API_KEY"] = "api-key-kept-out-of-the-graph"
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def _forms(secret: str) -> list[bytes]:
    """A secret as it could sit in a graph: its text, and for whsec_ secrets the key's base64 and bytes."""
    forms = [secret.encode()]
    if secret.startswith("whsec_"):
        key = secret.removeprefix("whsec_")
        forms += [key.encode(), base64.b64decode(key)]
    return forms


def _graph_bytes(p: beam.Pipeline) -> list[bytes]:
    """The serialized runner-API pipeline and every pickled object in it, decompressed."""
    proto = p.to_runner_api()
    pickled = list(dataflow_graph.pickled_objects(proto))
    assert pickled and all(o.data is not None for o in pickled), [o for o in pickled if o.data is None]
    return [proto.SerializeToString()] + [o.data for o in pickled if o.data is not None]


@pytest.mark.slow
def test_no_configured_secret_is_in_the_job_graph(tmp_path: Path, secrets_in_env: dict[str, str]) -> None:
    targets: list[dict[str, Any]] = [{"target_id": target_id, "url": f"https://{target_id}.example.com/hook",
                "secret_ref": f"env:WAYBILL_TEST_SECRET_{i}"} for i, target_id in enumerate(UNITS_AND_SUBSCRIBERS)]
    targets[0]["secret_headers"] = {"X-Api-Key": "env:WAYBILL_TEST_API_KEY"}
    (tmp_path / "targets.json").write_text(json.dumps(targets))
    argv = [f"--output_dir={tmp_path / 'out'}", f"--delivery_targets={tmp_path / 'targets.json'}",
            "--supervision_target=regulator", "--events=10"]
    options = WaybillOptions(argv)
    p = beam.Pipeline(options=options)
    graph.build(p, options)

    blobs = _graph_bytes(p)

    # The search looks where the targets are: their references are in the pickled delivery DoFn.
    assert any(b"env:WAYBILL_TEST_SECRET_0" in blob and b"env:WAYBILL_TEST_API_KEY" in blob for blob in blobs)
    found = [name for name, value in secrets_in_env.items() for form in _forms(value) for blob in blobs if form in blob]
    assert found == []


@pytest.mark.slow
def test_no_points_api_or_feedback_secret_is_in_the_partner_job_graph(tmp_path: Path, secrets_in_env: dict[str, str]) -> None:
    keys = write_config(tmp_path, feedback_target={"url": "https://acme.example.com/f", "secret_ref": "env:WAYBILL_TEST_SECRET_1"})
    args, _ = partner_cli.argument_parser().parse_known_args([
        f"--inbox={tmp_path}", f"--partner_keys={keys}", "--points_api=https://points.example.com/c",
        "--points_api_secret_ref=env:WAYBILL_TEST_SECRET_0", f"--output_dir={tmp_path / 'out'}"])
    p = beam.Pipeline()
    partner_job.build(p, args, streaming=False, run_id=partner_job.new_run_id())

    blobs = _graph_bytes(p)

    assert any(b"env:WAYBILL_TEST_SECRET_0" in blob for blob in blobs)
    assert any(b"env:WAYBILL_TEST_SECRET_1" in blob for blob in blobs)
    assert [form for name in ("WAYBILL_TEST_SECRET_0", "WAYBILL_TEST_SECRET_1") for form in _forms(secrets_in_env[name])
            for blob in blobs if form in blob] == []
