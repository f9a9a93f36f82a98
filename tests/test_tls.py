"""TLS: a controller and a worker serving HTTPS with a certificate this module makes (its own CA),
clients verifying them with that CA (`tls_ca=` or $FRAY_TLS_CA), and the ways it fails: a client
without the CA, plain HTTP to a TLS port, HTTPS to a plain port, half a key pair, a worker the
client cannot verify. Also the warning for a server off loopback without TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cloudpickle
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fray_fixtures import recorded_task, stop_process, wait_for
from fray_tasks import add

from fray.client.context import FrayContext
from fray.common.processes import start_python
from fray.controller.server import ControllerServer
from fray.errors import ActorError, ControllerUnavailableError
from fray.job import create_job_ctx
from fray.local_cluster import LocalFrayCluster
from fray.wire import tls
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb
from fray.worker.worker import Worker

cloudpickle.register_pickle_by_value(sys.modules[__name__])

# ---------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca: str  # the CA that signed `cert`
    cert: str  # for localhost and 127.0.0.1
    key: str
    stranger_ca: str  # another CA
    stranger_cert: str  # for localhost and 127.0.0.1, signed by `stranger_ca`
    stranger_key: str  # its key (which does not match `cert`)


Key = ec.EllipticCurvePrivateKey


def _issue(name: str, key: Key, issuer: x509.Certificate | None, issuer_key: Key) -> bytes:
    """A PEM certificate for `key`: a CA's (self-signed when `issuer` is None), or a server's
    for localhost and 127.0.0.1 signed by `issuer`."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
        builder = builder.add_extension(usage, critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, key, stranger_ca_key, stranger_key = (
        ec.generate_private_key(ec.SECP256R1()) for _ in range(4)
    )
    ca_pem = _issue("fray test CA", ca_key, None, ca_key)
    stranger_pem = _issue("stranger CA", stranger_ca_key, None, stranger_ca_key)
    stranger = x509.load_pem_x509_certificate(stranger_pem)
    files = {
        "ca": ca_pem,
        "cert": _issue("localhost", key, x509.load_pem_x509_certificate(ca_pem), ca_key),
        "key": _key_pem(key),
        "stranger_ca": stranger_pem,
        "stranger_cert": _issue("localhost", stranger_key, stranger, stranger_ca_key),
        "stranger_key": _key_pem(stranger_key),
    }
    for name, data in files.items():
        (directory / f"{name}.pem").write_bytes(data)
    return Pki(**{name: str(directory / f"{name}.pem") for name in files})


@pytest.fixture(scope="module")
def secure(pki: Pki) -> Iterator[LocalFrayCluster]:
    """A controller process and a worker process (2 slots), both serving HTTPS only."""
    with LocalFrayCluster(
        workers=1,
        concurrency=2,
        heartbeat_timeout=2.0,
        tls_cert=pki.cert,
        tls_key=pki.key,
        tls_ca=pki.ca,
    ) as cluster:
        yield cluster


def workers_at(address: str, pki: Pki) -> list[pb.Worker]:
    client = ControllerClient(address, tls_ca=pki.ca, retry_timeout=5)
    try:
        return list(client.call(client.rpc.list_workers, pb.ListWorkersRequest()).workers)
    finally:
        client.close()


def only_worker(cluster: LocalFrayCluster, pki: Pki) -> pb.Worker:
    (worker,) = workers_at(cluster.address, pki)
    return worker


def wait_until_idle(cluster: LocalFrayCluster, pki: Pki) -> None:
    """Until the controller sees the worker's slots free (so that a task goes directly)."""

    def idle() -> bool:
        worker = only_worker(cluster, pki)
        return not worker.task_ids and worker.direct_running == 0

    wait_for(idle, 10, "the worker to be idle")


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=30
    )


def run_nested(x: int) -> int:
    """A task that runs a task itself, through the context it finds on its worker."""
    from fray.job import get_default_job_ctx

    ctx = get_default_job_ctx()
    return int(ctx.get(ctx.run(add, x, 1)))


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def bump(self) -> int:
        self.count += 1
        return self.count


# ---------------------------------------------------------------------- working


def test_controller_and_worker_serve_https(secure: LocalFrayCluster, pki: Pki) -> None:
    assert secure.address.startswith("https://127.0.0.1:")
    assert only_worker(secure, pki).address.startswith("https://127.0.0.1:")


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "queued"])
def test_tasks_run_over_tls(
    secure: LocalFrayCluster, pki: Pki, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tls.CA_ENV, pki.ca)  # for the fixtures' helpers (and the nested task)
    wait_until_idle(secure, pki)
    with FrayContext(secure.address, tls_ca=pki.ca, direct=direct) as ctx:
        future = ctx.run(add, 2, 3)
        assert future.result(30) == 5
        ref = ctx.put(40)
        assert ctx.get(ctx.run(add, ref, 2), timeout=30) == 42
        assert ctx.get(ctx.run(run_nested, 6), timeout=30) == 7
    assert recorded_task(secure.address, future.task_id).direct is direct


def test_an_actor_over_tls(secure: LocalFrayCluster, pki: Pki) -> None:
    with FrayContext(secure.address, tls_ca=pki.ca) as ctx:
        counter = ctx.create_actor(Counter)
        assert ctx.get([counter.bump.remote() for _ in range(3)], timeout=30) == [1, 2, 3]


def test_create_job_ctx_takes_the_ca_from_the_environment_or_an_argument(
    secure: LocalFrayCluster, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tls.CA_ENV, pki.ca)
    ctx = create_job_ctx("fray", controller_address=secure.address)
    assert isinstance(ctx, FrayContext)
    try:
        assert ctx.get(ctx.run(add, 1, 1), timeout=30) == 2
    finally:
        ctx.close()
    monkeypatch.delenv(tls.CA_ENV)
    ctx = create_job_ctx("fray", controller_address=secure.address, tls_ca=pki.ca)
    assert isinstance(ctx, FrayContext)
    try:
        assert ctx.get(ctx.run(add, 2, 2), timeout=30) == 4
    finally:
        ctx.close()


def test_fray_status_over_tls(secure: LocalFrayCluster, pki: Pki) -> None:
    def status(*args: str) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "fray",
            "status",
            "--json",
            "--controller",
            secure.address,
            *args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAY_")}
        return subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)

    done = status("--tls-ca", pki.ca)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["workers"] == 1

    refused = status()  # the system store does not know our CA
    assert refused.returncode == 1
    assert "TLS handshake" in refused.stderr and "FRAY_TLS_CA" in refused.stderr


def test_curl_with_the_ca(secure: LocalFrayCluster, pki: Pki) -> None:
    url = f"{secure.address}/fray.v1.FrayController/GetClusterSummary?encoding=json&message=%7B%7D"
    done = curl("--cacert", pki.ca, url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["workers"] == 1
    health = curl("--cacert", pki.ca, only_worker(secure, pki).address + "/healthz")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["status"] == "ok"
    assert curl(url).returncode == 60  # curl's "peer certificate cannot be authenticated"


# ---------------------------------------------------------------------- failing


@pytest.mark.parametrize("trusting", ["system store", "stranger CA"])
def test_a_client_that_cannot_verify_the_controller_fails_at_once(
    secure: LocalFrayCluster, pki: Pki, trusting: str
) -> None:
    ca = "" if trusting == "system store" else pki.stranger_ca
    advice = "FRAY_TLS_CA" if trusting == "system store" else pki.stranger_ca
    started = time.monotonic()
    with pytest.raises(ControllerUnavailableError, match="TLS handshake") as made:
        FrayContext(secure.address, tls_ca=ca, retry_timeout=30)  # its first call says so
    assert "UnknownIssuer" in str(made.value) and advice in str(made.value)
    with FrayContext(secure.address, tls_ca=ca, retry_timeout=30, probe_timeout=None) as ctx:
        with pytest.raises(ControllerUnavailableError, match="TLS handshake") as put_error:
            ctx.put(1)
        with pytest.raises(ControllerUnavailableError, match="TLS handshake") as run_error:
            ctx.run(add, 1, 1).result(30)
    assert time.monotonic() - started < 10  # not the 30 s retry budget
    for error in (put_error, run_error):
        assert "UnknownIssuer" in str(error.value) and advice in str(error.value)


def test_plain_http_to_a_tls_port_fails_cleanly(secure: LocalFrayCluster, pki: Pki) -> None:
    plain = secure.address.replace("https://", "http://")
    client = ControllerClient(plain, tls_ca=pki.ca, retry_timeout=0.5)
    try:
        with pytest.raises(ControllerUnavailableError, match="use an https:// address"):
            client.call(client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
    finally:
        client.close()
    done = curl(f"{plain}/fray.v1.FrayController/GetClusterSummary?encoding=json&message=%7B%7D")
    assert done.returncode != 0 and done.stdout == ""
    # The server shrugs it off.
    with FrayContext(secure.address, tls_ca=pki.ca) as ctx:
        assert ctx.get(ctx.run(add, 3, 4), timeout=30) == 7


def test_https_to_a_plain_port_says_so(controller: ControllerServer, pki: Pki) -> None:
    address = controller.address.replace("http://", "https://")
    client = ControllerClient(address, tls_ca=pki.ca, retry_timeout=30)
    try:
        with pytest.raises(ControllerUnavailableError, match="does it serve TLS"):
            client.call(client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
    finally:
        client.close()


def test_a_worker_the_client_cannot_verify_gets_no_direct_tasks_and_fails_actor_calls(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker whose certificate the client does not trust (the controller's it does): its
    tasks queue at the controller instead (nothing is counted lost), and actor calls fail
    saying why."""
    monkeypatch.setenv(tls.CA_ENV, pki.ca)  # for the worker (it trusts the controller)
    server = ControllerServer("127.0.0.1", 0, tls_cert=pki.cert, tls_key=pki.key).start()
    worker = start_python(
        "-m",
        "fray",
        "worker",
        "--controller",
        server.address,
        "--concurrency",
        "2",
        "--tls-cert",
        pki.stranger_cert,
        "--tls-key",
        pki.stranger_key,
    )
    try:
        ctx = FrayContext(server.address, tls_ca=pki.ca)
        with ctx:
            wait_for(lambda: workers_at(server.address, pki), 30, "the worker to register")
            future = ctx.run(add, 1, 2)  # offered to the worker first (it has free slots)
            assert future.result(30) == 3
            refused = [r.getMessage() for r in caplog.records if r.name == "fray.wire.tls"]
            assert refused and "TLS handshake with the worker" in refused[0]
            counter = ctx.create_actor(Counter)
            with pytest.raises(ActorError, match="TLS handshake with the worker") as caught:
                ctx.get(counter.bump.remote(), timeout=30)
        assert "BadSignature" in str(caught.value) or "UnknownIssuer" in str(caught.value)
        task = recorded_task(server.address, future.task_id)
        assert not task.direct and task.attempts == 1
    finally:
        stop_process(worker)
        server.stop()


# ---------------------------------------------------------------------- server settings


def test_a_server_needs_both_cert_and_key_that_match(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="--tls-cert needs --tls-key"):
        ControllerServer("127.0.0.1", 0, tls_cert=pki.cert)
    with pytest.raises(ValueError, match="--tls-key needs --tls-cert"):
        ControllerServer("127.0.0.1", 0, tls_key=pki.key)
    with pytest.raises(ValueError, match="cannot serve TLS with certificate"):
        ControllerServer("127.0.0.1", 0, tls_cert=pki.cert, tls_key=pki.stranger_key)
    monkeypatch.setenv("FRAY_WORKER_ID", "unused")  # restored afterwards: Worker sets it
    with pytest.raises(ValueError, match="--tls-cert needs --tls-key"):
        Worker("http://127.0.0.1:1", tls_cert=pki.cert)

    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAY_")}
    for args, extra in (
        (["controller", "--port", "0", "--tls-cert", pki.cert], {}),
        (["controller", "--port", "0"], {"FRAY_TLS_KEY": pki.key}),
        (["worker", "--controller", "http://127.0.0.1:1", "--tls-key", pki.key], {}),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "fray", *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**env, **extra},
        )
        assert done.returncode == 2
        assert "needs" in done.stderr and "--tls-" in done.stderr
        assert done.stdout == ""


def test_a_server_off_loopback_without_tls_warns_once(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    def warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "fray.wire.tls"
        ]

    ControllerServer("127.0.0.1", 0).stop()
    assert warnings() == []
    ControllerServer("0.0.0.0", 0, token="t0k").stop()
    (warning,) = warnings()
    assert "controller listens on 0.0.0.0 without TLS" in warning and "--tls-cert" in warning
    caplog.clear()
    server = ControllerServer("0.0.0.0", 0, token="t0k", tls_cert=pki.cert, tls_key=pki.key)
    assert warnings() == []
    with server:
        assert server.address.startswith("https://0.0.0.0:")
        by_name = f"https://localhost:{server.port}"
        client = ControllerClient(by_name, token="t0k", tls_ca=pki.ca, retry_timeout=5)
        other = ControllerClient(f"https://127.0.0.2:{server.port}", tls_ca=pki.ca)
        try:
            summary = client.call(client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
            assert summary.workers == 0
            with pytest.raises(ControllerUnavailableError, match="not valid for name"):
                other.call(other.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
        finally:
            client.close()
            other.close()


def test_plain_http_clients_are_left_as_they_were(pki: Pki) -> None:
    assert tls.http_client("http://127.0.0.1:1", pki.ca) is None
    assert tls.http_client("https://127.0.0.1:1", None) is None  # the system store
    assert tls.http_client("https://127.0.0.1:1", pki.ca) is tls.trusting(pki.ca)
    with pytest.raises(ValueError, match="no-such.pem"):
        tls.trusting("/no-such.pem")
    with pytest.raises(ValueError, match="PEM"):
        tls.trusting(pki.key)
