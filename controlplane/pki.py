"""The local cluster's PKI: a throw-away CA, one client or serving certificate per identity
the cluster's parts use, the service-account signing keys, and kubeconfigs on them. Pure
files, no process: at the bottom of `controlplane` beside the process supervisor."""

from __future__ import annotations

import datetime
import ipaddress
import json
from pathlib import Path

from . import network

NODE_NAME = "leadership-node"
#: file stem -> (common name, organization, serving?): the identities a cluster's parts use.
#: Kubernetes' built-in RBAC knows each of these names (system:kube-scheduler, ...), and the
#: Node authorizer knows system:node:<name> in system:nodes.
IDENTITIES: dict[str, tuple[str, str | None, bool]] = {
    "apiserver": ("kube-apiserver", None, True),
    "admin": ("leadership-admin", "system:masters", False),
    "controller-manager": ("system:kube-controller-manager", None, False),
    "scheduler": ("system:kube-scheduler", None, False),
    "kube-proxy": ("system:kube-proxy", None, False),
    "kubelet-client": (f"system:node:{NODE_NAME}", "system:nodes", False),
    "kubelet-serving": (NODE_NAME, None, True),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters", False),
}
SERVER_NAMES = {
    "kube-apiserver": ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
    NODE_NAME: ("localhost", NODE_NAME),
}

def write_pki(d: Path) -> None:
    """A throw-away CA in `d`, a certificate and key for each of `IDENTITIES` signed by it,
    and the service-account signing key pair; every file readable by its owner only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=7)

    def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("leadership-test-ca"))
          .issuer_name(name("leadership-test-ca")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(not_before)
          .not_valid_after(not_after)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, org: str | None, server: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn, org)).issuer_name(ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(not_before).not_valid_after(not_after)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if server:
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES[cn]]
            sans += [x509.IPAddress(ipaddress.ip_address(a))
                     for a in ("127.0.0.1", network.NODE_IP, network.KUBERNETES_SERVICE_IP)]
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        else:
            usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)

    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "ca.key").write_bytes(key_pem(ca_key))
    for stem, (cn, org, server) in IDENTITIES.items():
        crt, key = leaf(cn, org, server)
        (d / f"{stem}.crt").write_bytes(crt)
        (d / f"{stem}.key").write_bytes(key)
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (d / "sa.key").write_bytes(key_pem(sa))
    (d / "sa.pub").write_bytes(sa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for p in d.iterdir():
        p.chmod(0o600)


def kubeconfig_file(server: str, pki: Path, identity: str = "admin") -> str:
    """A kubeconfig for `server` as `identity` (one of `IDENTITIES`), on the files of `pki`."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "leadership-test",
        "clusters": [{"name": "leadership-test", "cluster": {
            "server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": "admin", "user": {
            "client-certificate": str(pki / f"{identity}.crt"),
            "client-key": str(pki / f"{identity}.key")}}],
        "contexts": [{"name": "leadership-test", "context": {
            "cluster": "leadership-test", "user": "admin", "namespace": "default"}}],
    }, indent=2)
