"""Writes throwaway keys for the mail tests into DIR (created if missing).

Usage: make_test_pki.py DIR

  ca.pem, ca.key        a self-signed CA (basicConstraints CA:true)
  cert.pem, key.pem     a server certificate for DNS:localhost and IP:127.0.0.1
                        signed by that CA; a separate leaf because rustls
                        refuses a CA certificate presented as the end entity
  chain.pem             cert.pem followed by ca.pem
  dkim.pem              RSA 2048, PKCS#1 ("BEGIN RSA PRIVATE KEY")
  dkim.txt              its DNS TXT value: v=DKIM1; k=rsa; p=<base64 SPKI DER>

Prints the file paths as one JSON object on stdout.
"""
import base64
import datetime
import ipaddress
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def write(path, data: bytes, private=False):
    with open(path, "wb") as f:
        f.write(data)
    if private:
        os.chmod(path, 0o600)


def pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    # Backdated so a clock a little behind the signer's does not see a
    # certificate that is not valid yet.
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(days=1)
    not_after = now + datetime.timedelta(days=3650)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Herald test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    dkim_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = dkim_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    txt = "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode()

    files = {name: os.path.join(out, name) for name in
             ["ca.pem", "ca.key", "cert.pem", "key.pem", "chain.pem", "dkim.pem", "dkim.txt"]}
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
    write(files["ca.pem"], ca_pem)
    write(files["ca.key"], pem_key(ca_key), private=True)
    write(files["cert.pem"], leaf_pem)
    write(files["key.pem"], pem_key(leaf_key), private=True)
    write(files["chain.pem"], leaf_pem + ca_pem)
    write(
        files["dkim.pem"],
        dkim_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        private=True,
    )
    write(files["dkim.txt"], txt.encode())
    print(json.dumps(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
