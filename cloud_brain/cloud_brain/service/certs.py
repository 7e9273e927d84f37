"""A development PKI for mutual TLS, and the model-signing key pair (`nestor-cloud certs`).

Writes into one directory:
    ca.pem, ca.key                 dev certificate authority (ECDSA P-256, 10 years)
    server.pem, server.key         the cloud: CN=localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1
                                   (+ --server-host names, e.g. cloud_brain in docker-compose)
    robotK.pem, robotK.key         one per robot: CN=robotK, SAN URI nestor://robot/robotK
    admin.pem, admin.key           operator: CN=admin, OU=admin, SAN URI nestor://admin/admin
    model_signing.pem              ed25519 private key that signs model manifests (cloud only)
    model_signing.pub.pem          its public key (every robot)
    bundles/cloud/, bundles/robotK/  with --bundles: each consumer's files only (never ca.key)

The role and identity the server authorises by (cloud_brain.service.authz) come from the SAN URI
`nestor://<role>/<name>`. An existing CA and signing key are reused, so running it again adds
certificates without invalidating the ones already handed out or the models already signed.
Private keys are written mode 0600. For development and tests; production keys belong in a
real PKI.
"""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nestor_core.atomic_file import write_atomic
from nestor_core.manifest import load_private_key, private_key_pem, public_key_pem

URI_SCHEME = "nestor"
SERVER_HOSTS = ("localhost", "127.0.0.1", "::1")
# What `nestor-cloud serve --certs DIR` reads, plus the admin pair for operator commands.
CLOUD_BUNDLE = ("ca.pem", "server.pem", "server.key", "model_signing.pem", "admin.pem", "admin.key")


def identity_uri(role: str, name: str) -> str:
    """The SAN URI that carries a client's role and name, e.g. nestor://robot/robot0."""
    return f"{URI_SCHEME}://{role}/{name}"


def _write(path: pathlib.Path, data: bytes, private: bool = False) -> None:
    write_atomic(path, data, mode=0o600 if private else 0o644)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, unit: str = "") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nestor dev")]
    if unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(days: int = 3650) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("nestor dev CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(hours=1))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    server: bool = False,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    uris: tuple[str, ...] = (),
    unit: str = "",
    days: int = 365,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate signed by the CA: a server cert (serverAuth) or a client cert (clientAuth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName(d) for d in dns]
    san += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    san += [x509.UniformResourceIdentifier(u) for u in uris]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, unit))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(hours=1))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _pair(out: pathlib.Path, stem: str, key, cert: x509.Certificate) -> None:
    _write(out / f"{stem}.key", _key_pem(key), private=True)
    _write(out / f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM))


def _load_ca(out: pathlib.Path):
    key = serialization.load_pem_private_key((out / "ca.key").read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    return key, cert


def _split_hosts(hosts: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IP addresses) of the server certificate: the defaults plus `hosts`."""
    dns, ips = ["localhost"], list(SERVER_HOSTS[1:])
    for host in hosts:
        if not _is_ip(host) and not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?", host):
            raise ValueError(f"server_hosts: {host!r} is neither a DNS name nor an IP address")
        target = ips if _is_ip(host) else dns
        if host not in target:
            target.append(host)
    return tuple(dns), tuple(ips)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _bundle(out: pathlib.Path, name: str, files: tuple[str, ...]) -> None:
    """Copy `files` of `out` into out/bundles/<name>/: what one consumer mounts, and nothing more."""
    target = out / "bundles" / name
    target.mkdir(parents=True, exist_ok=True)
    for file in files:
        _write(target / file, (out / file).read_bytes(), private=file.endswith(".key") or file == "model_signing.pem")


def generate(
    out_dir: str | pathlib.Path,
    robots: int = 2,
    robot_prefix: str = "robot",
    server_hosts: tuple[str, ...] = (),
    bundles: bool = False,
) -> dict[str, list[str]]:
    """Create (or extend) the dev PKI and signing key pair in `out_dir`; returns what was written.

    Args:
        out_dir: target directory (created).
        robots: number of robot client certificates: <robot_prefix>0 .. <robot_prefix>{robots-1}.
        robot_prefix: robot name prefix; robot ids must match these names to upload.
        server_hosts: extra DNS names or IP addresses the server certificate is valid for (besides
            localhost, 127.0.0.1 and ::1), e.g. the cloud's service name in docker-compose.
        bundles: also write bundles/cloud/ (server cert and key, CA cert, signing key, admin cert
            and key) and bundles/<robot>/ (CA cert, its own cert and key, signing public key), so
            that each container mounts only its own secrets. Never the CA key.
    """
    if robots < 0:
        raise ValueError(f"robots: must be >= 0, got {robots}")
    dns, ips = _split_hosts(tuple(server_hosts))
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[str]] = {"reused": [], "written": []}
    if (out / "ca.pem").exists() and (out / "ca.key").exists():
        ca_key, ca_cert = _load_ca(out)
        written["reused"].append("ca.pem")
    else:
        ca_key, ca_cert = make_ca()
        _pair(out, "ca", ca_key, ca_cert)
        written["written"].append("ca.pem")

    key, cert = issue(ca_key, ca_cert, "localhost", server=True, dns=dns, ips=ips)
    _pair(out, "server", key, cert)
    written["written"].append("server.pem")
    for k in range(robots):
        name = f"{robot_prefix}{k}"
        key, cert = issue(ca_key, ca_cert, name, uris=(identity_uri("robot", name),), unit="robot")
        _pair(out, name, key, cert)
        written["written"].append(f"{name}.pem")
    key, cert = issue(ca_key, ca_cert, "admin", uris=(identity_uri("admin", "admin"),), unit="admin")
    _pair(out, "admin", key, cert)
    written["written"].append("admin.pem")

    signing = out / "model_signing.pem"
    if signing.exists():
        signing_key = load_private_key(str(signing))
        written["reused"].append("model_signing.pem")
    else:
        signing_key = Ed25519PrivateKey.generate()
        _write(signing, private_key_pem(signing_key), private=True)
        written["written"].append("model_signing.pem")
    _write(out / "model_signing.pub.pem", public_key_pem(signing_key.public_key()))
    written["written"].append("model_signing.pub.pem")
    if bundles:
        _bundle(out, "cloud", CLOUD_BUNDLE)
        for k in range(robots):
            name = f"{robot_prefix}{k}"
            _bundle(out, name, ("ca.pem", f"{name}.pem", f"{name}.key", "model_signing.pub.pem"))
        written["written"].append(f"bundles/{{cloud,{robot_prefix}0..{robots - 1}}}" if robots else "bundles/cloud")
    return written
