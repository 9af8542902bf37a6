"""TLS material for tests: a throwaway CA and server certificate (Pebble's HTTPS
listeners, a service on HTTPS), CSRs, CA bundles, and checking a certificate that was
issued (its SANs, its chain up to a root).

With ``cryptography`` when importable, else the openssl CLI: the module is imported by
``python3 -m tests.support.acme`` outside the project's virtual environment.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import ipaddress
import itertools
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.support.tools import find_executable


def find_openssl() -> str:
    return find_executable("openssl", "ACME_E2E_OPENSSL", "/usr/bin/openssl",
                           hint="apt-get install -y openssl")


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    ca_cert: Path
    cert: Path
    key: Path


def _have_cryptography() -> bool:
    try:
        import cryptography.x509  # noqa: F401
    except ImportError:
        return False
    return True


def make_test_ca(
    directory: Path,
    dns_names: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1", "::1"),
) -> TLSFiles:
    """A fresh CA and a server cert for ``dns_names``/``ips`` (Pebble's HTTPS listeners).

    Debian's pebble package does NOT ship test/certs (no pebble.minica.pem),
    so we always make our own. Uses ``cryptography`` if importable, else openssl.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    if _have_cryptography():
        _make_ca_cryptography(files, dns_names, ips)
    else:
        _make_caopenssl(files, directory, dns_names, ips)
    os.chmod(files.key, 0o600)
    return files


def _make_ca_cryptography(files: TLSFiles, dns_names: Sequence[str], ips: Sequence[str]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme-delegate e2e TLS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def openssl(args: Sequence[str], *, input_bytes: bytes | None = None, timeout: float = 60) -> str:
    proc = subprocess.run(
        [find_openssl(), *args],
        input=input_bytes,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"openssl {' '.join(args)} failed: {proc.stderr.decode('utf-8', 'replace')}"
        )
    return proc.stdout.decode("utf-8", "replace")


def _make_caopenssl(
    files: TLSFiles, directory: Path, dns_names: Sequence[str], ips: Sequence[str]
) -> None:
    ca_key = directory / "ca.key"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl(
        [
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(ca_key),
            "-out",
            str(files.ca_cert),
            "-days",
            "2",
            "-subj",
            "/CN=acme-delegate e2e TLS CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ]
    )
    csr = directory / "server.csr"
    openssl(
        ["req", *ec, "-keyout", str(files.key), "-out", str(csr), "-subj", f"/CN={dns_names[0]}"]
    )
    san = ",".join([f"DNS:{n}" for n in dns_names] + [f"IP:{i}" for i in ips])
    ext = directory / "server.ext"
    ext.write_text(
        f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n"
    )
    openssl(
        [
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(files.ca_cert),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(files.cert),
            "-days",
            "2",
            "-extfile",
            str(ext),
        ]
    )
    os.chmod(ca_key, 0o600)


def make_csr(domains: Sequence[str], directory: Path) -> tuple[str, Path]:
    """(CSR PEM, key path) for ``domains`` (first one is the CN). EC P-256."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / "csr-key.pem"
    if _have_cryptography():
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), False)
            .sign(key, hashes.SHA256())
        )
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        os.chmod(key_path, 0o600)
        return csr.public_bytes(serialization.Encoding.PEM).decode(), key_path
    san = ",".join(f"DNS:{d}" for d in domains)
    csr_path = directory / "request.csr"
    openssl(
        [
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key_path),
            "-out",
            str(csr_path),
            "-subj",
            f"/CN={domains[0]}",
            "-addext",
            f"subjectAltName={san}",
        ]
    )
    os.chmod(key_path, 0o600)
    return csr_path.read_text(), key_path


def ca_bundle(path: Path, *pem_files: Path) -> Path:
    """Concatenate CA files into one bundle (REQUESTS_CA_BUNDLE *replaces* the trust store:
    when the service under test is on HTTPS with another CA, both must be in it)."""
    path.write_text("".join(p.read_text().rstrip("\n") + "\n" for p in pem_files))
    return path


class CertificateCheckError(AssertionError):
    pass


@dataclasses.dataclass(frozen=True)
class CertificateInfo:
    sans: tuple[str, ...]
    subject: str
    issuer: str
    serial_hex: str
    not_after: str
    chain_length: int


_PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def split_pem_chain(pem: str | bytes | Path) -> list[str]:
    """All CERTIFICATE blocks in order (leaf first for lego/certbot outputs)."""
    if isinstance(pem, Path):
        text = pem.read_text()
    elif isinstance(pem, bytes):
        text = pem.decode()
    else:
        text = pem
    return [m.group(0) + "\n" for m in _PEM_RE.finditer(text)]


def certificate_sans(pem: str | bytes | Path) -> list[str]:
    """DNS SANs of the first certificate in ``pem``."""
    return list(_inspect(split_pem_chain(pem)[0]).sans)


def _inspect(leaf_pem: str) -> CertificateInfo:
    if _have_cryptography():
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(leaf_pem.encode())
        try:
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            sans = tuple(ext.value.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            sans = ()
        return CertificateInfo(
            sans=sans,
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            serial_hex=format(cert.serial_number, "x"),
            not_after=cert.not_valid_after_utc.isoformat(),
            chain_length=1,
        )
    text = openssl(
        ["x509", "-noout", "-subject", "-issuer", "-serial", "-enddate", "-ext", "subjectAltName"],
        input_bytes=leaf_pem.encode(),
    )
    fields: dict[str, str] = {}
    sans_list: list[str] = []
    for line in text.splitlines():
        s = line.strip()
        for key in ("subject", "issuer", "serial", "notAfter"):
            if s.startswith(key + "="):
                fields[key] = s.split("=", 1)[1].strip()
        if s.startswith("DNS:"):
            sans_list += [p.strip()[4:] for p in s.split(",") if p.strip().startswith("DNS:")]
    return CertificateInfo(
        sans=tuple(sans_list),
        subject=fields.get("subject", ""),
        issuer=fields.get("issuer", ""),
        serial_hex=fields.get("serial", "").lower().lstrip("0") or "0",
        not_after=fields.get("notAfter", ""),
        chain_length=1,
    )


def verify_issued_certificate(
    cert_pem: str | bytes | Path,
    expected_sans: Iterable[str],
    *,
    root_pem: str | None = None,
    extra_chain_pem: str | bytes | Path | None = None,
) -> CertificateInfo:
    """Check the leaf's DNS SANs equal ``expected_sans`` (as a set, case-insensitive) and,
    with ``root_pem`` (``pebble.root_pem()``), that leaf -> intermediates -> root verifies.

    ``cert_pem`` may be a bundle (lego .crt, certbot fullchain.pem, pylego's
    ``certificate``); ``extra_chain_pem`` adds intermediates (e.g. certbot chain.pem).
    Raises :class:`CertificateCheckError`.
    """
    chain = split_pem_chain(cert_pem)
    if not chain:
        raise CertificateCheckError("no certificate in input")
    if extra_chain_pem is not None:
        chain += [c for c in split_pem_chain(extra_chain_pem) if c not in chain]
    info = _inspect(chain[0])
    want = sorted({s.lower() for s in expected_sans})
    got = sorted({s.lower() for s in info.sans})
    if want != got:
        raise CertificateCheckError(f"SANs differ: expected {want}, got {got}")
    if root_pem is not None:
        _verify_chain(chain, root_pem)
    return dataclasses.replace(info, chain_length=len(chain))


def _verify_chain(chain: list[str], root_pem: str) -> None:
    roots = split_pem_chain(root_pem)
    if not roots:
        raise CertificateCheckError("root_pem holds no certificate")
    if _have_cryptography():
        from cryptography import x509

        certs = [x509.load_pem_x509_certificate(c.encode()) for c in chain]
        root = x509.load_pem_x509_certificate(roots[0].encode())
        path = [*certs, root] if certs[-1] != root else certs
        for child, parent in itertools.pairwise(path):
            try:
                child.verify_directly_issued_by(parent)
            except (ValueError, TypeError) as exc:
                raise CertificateCheckError(
                    f"{child.subject.rfc4514_string()} not issued by "
                    f"{parent.subject.rfc4514_string()}: {exc}"
                ) from exc
            except Exception as exc:  # InvalidSignature
                raise CertificateCheckError(f"bad signature on {child.subject}: {exc!r}") from exc
        return
    with tempfile.TemporaryDirectory(prefix="e2e-verify-") as tmp:
        root_f, inter_f, leaf_f = (Path(tmp) / n for n in ("root.pem", "inter.pem", "leaf.pem"))
        root_f.write_text(roots[0])
        inter_f.write_text("".join(chain[1:]) or roots[0])
        leaf_f.write_text(chain[0])
        try:
            openssl(["verify", "-CAfile", str(root_f), "-untrusted", str(inter_f), str(leaf_f)])
        except RuntimeError as exc:
            raise CertificateCheckError(str(exc)) from exc
