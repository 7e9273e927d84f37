"""Fixtures of the security tests: a dev PKI in a temp dir and a mutual-TLS cloud on 127.0.0.1:0."""

import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
for path in (HERE, HERE.parent / "cloud"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import cloud_testlib  # noqa: E402
import security_testlib  # noqa: E402
from cloud_brain.config import CloudConfig, TlsConfig  # noqa: E402
from cloud_brain.service.certs import generate  # noqa: E402
from cloud_brain.service.server import CloudServer  # noqa: E402
from nestor_core.manifest import load_private_key, load_public_key  # noqa: E402


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> pathlib.Path:
    """ca, server, robot0, robot1, admin certs and the model-signing key pair."""
    out = tmp_path_factory.mktemp("pki")
    generate(out, robots=2)
    return out


@pytest.fixture(scope="session")
def signing_key(pki):
    return load_private_key(str(pki / "model_signing.pem"))


@pytest.fixture(scope="session")
def public_key(pki):
    return load_public_key(str(pki / "model_signing.pub.pem"))


@pytest.fixture
def task_files(tmp_path):
    """arm (experience ingest, dims 3/2) and kuka_track (models: the tiny valid policy)."""
    arm = tmp_path / "arm.yaml"
    arm.write_text(f"name: arm\nobs_dim: {cloud_testlib.OBS_DIM}\nact_dim: {cloud_testlib.ACT_DIM}\n")
    kuka = tmp_path / "kuka.yaml"
    lib = security_testlib
    kuka.write_text(f"name: {lib.TASK}\nobs_dim: {lib.OBS}\nact_dim: {lib.ACT}\n")
    return [str(arm), str(kuka)]


initial_model = security_testlib.initial_model


@pytest.fixture
def tls_config(tmp_path, task_files, pki) -> CloudConfig:
    return cloud_testlib.base_config(
        tmp_path,
        task_files,
        signing_key=str(pki / "model_signing.pem"),
        tls=TlsConfig(cert=str(pki / "server.pem"), key=str(pki / "server.key"), client_ca=str(pki / "ca.pem")),
    )


@pytest.fixture
def tls_server(tls_config):
    srv = CloudServer(tls_config, initial_model_fn=initial_model)
    srv.start()
    yield srv
    srv.stop(0.5)
