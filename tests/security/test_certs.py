"""`nestor-cloud certs`: the dev CA, server/robot/admin certificates and the signing key pair."""

import os
import stat

import pytest
from cloud_brain.cli import main
from cloud_brain.service.certs import generate
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nestor_core.manifest import load_private_key, load_public_key, sign, verify

FILES = {
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "robot0.pem",
    "robot0.key",
    "robot1.pem",
    "robot1.key",
    "robot2.pem",
    "robot2.key",
    "admin.pem",
    "admin.key",
    "model_signing.pem",
    "model_signing.pub.pem",
}


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _cn(cert) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_cli_writes_the_pki(tmp_path, capsys):
    out = tmp_path / "certs"
    assert main(["certs", "--out", str(out), "--robots", "3"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert set(os.listdir(out)) == FILES
    ca = _cert(out / "ca.pem")
    for name in ("server", "robot0", "robot2", "admin"):
        cert = _cert(out / f"{name}.pem")
        cert.verify_directly_issued_by(ca)
        assert stat.S_IMODE(os.stat(out / f"{name}.key").st_mode) == 0o600
    server = _cert(out / "server.pem")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert ExtendedKeyUsageOID.SERVER_AUTH in server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    robot = _cert(out / "robot2.pem")
    assert _cn(robot) == "robot2"
    uris = robot.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == ["nestor://robot/robot2"]
    assert ExtendedKeyUsageOID.CLIENT_AUTH in robot.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    admin = _cert(out / "admin.pem")
    assert _cn(admin) == "admin"
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "admin"
    uris = admin.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == ["nestor://admin/admin"]
    private = load_private_key(str(out / "model_signing.pem"))
    assert isinstance(private, Ed25519PrivateKey)
    assert stat.S_IMODE(os.stat(out / "model_signing.pem").st_mode) == 0o600
    assert verify(b"{}", sign(b"{}", private), load_public_key(str(out / "model_signing.pub.pem"))) == {}


def test_running_again_keeps_the_ca_and_the_signing_key(tmp_path):
    first = generate(tmp_path, robots=1)
    ca, signing = (tmp_path / "ca.pem").read_bytes(), (tmp_path / "model_signing.pem").read_bytes()
    old_robot = _cert(tmp_path / "robot0.pem")
    second = generate(tmp_path, robots=3)
    assert "ca.pem" in first["written"] and {"ca.pem", "model_signing.pem"} <= set(second["reused"])
    assert (tmp_path / "ca.pem").read_bytes() == ca and (tmp_path / "model_signing.pem").read_bytes() == signing
    old_robot.verify_directly_issued_by(_cert(tmp_path / "ca.pem"))  # earlier certs stay valid
    assert (tmp_path / "robot2.pem").exists()


def test_negative_robot_count_is_refused(tmp_path):
    with pytest.raises(ValueError, match="robots"):
        generate(tmp_path, robots=-1)


def test_server_hosts_and_bundles(tmp_path):
    """--server-host names the compose service; --bundles gives each consumer its own files only."""
    assert (
        main(
            [
                "certs",
                "--out",
                str(tmp_path),
                "--robots",
                "2",
                "--server-host",
                "cloud_brain",
                "--server-host",
                "10.0.0.5",
                "--bundles",
            ]
        )
        == 0
    )
    san = _cert(tmp_path / "server.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "cloud_brain"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1", "10.0.0.5"]
    bundles = tmp_path / "bundles"
    assert set(os.listdir(bundles)) == {"cloud", "robot0", "robot1"}
    assert set(os.listdir(bundles / "cloud")) == {
        "ca.pem",
        "server.pem",
        "server.key",
        "model_signing.pem",
        "admin.pem",
        "admin.key",
    }
    assert set(os.listdir(bundles / "robot1")) == {"ca.pem", "robot1.pem", "robot1.key", "model_signing.pub.pem"}
    for path in (bundles / "cloud/server.key", bundles / "cloud/model_signing.pem", bundles / "robot1/robot1.key"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert (bundles / "robot1/robot1.pem").read_bytes() == (tmp_path / "robot1.pem").read_bytes()


@pytest.mark.parametrize("host", ["bad host", "cloud/brain", "", "x-", "a:b"])
def test_bad_server_host_is_refused(tmp_path, host, capsys):
    assert main(["certs", "--out", str(tmp_path), "--server-host", host]) == 2
    assert "server_hosts" in capsys.readouterr().err


def test_serve_certs_points_the_config_at_the_directory(tmp_path):
    """`serve --certs DIR` = tls.* and signing_key from DIR; a directory without them is named."""
    from cloud_brain.cli import certs_overrides
    from cloud_brain.config import ConfigError, load_config

    generate(tmp_path / "pki", robots=1, bundles=True)
    cloud = tmp_path / "pki/bundles/cloud"
    config = load_config("config/cloud.yaml", address="0.0.0.0:50051", **certs_overrides(str(cloud)))
    assert config.tls.cert == str(cloud / "server.pem") and config.tls.client_ca == str(cloud / "ca.pem")
    assert config.signing_key == str(cloud / "model_signing.pem")
    with pytest.raises(ConfigError, match="nope"):
        load_config("config/cloud.yaml", address="0.0.0.0:50051", **certs_overrides(str(tmp_path / "nope")))
