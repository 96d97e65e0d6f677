//! Certificates and keys for TLS, shared by the client (`--cacert`) and the gateway (`--cert`,
//! `--key`, `--client-ca`).
//!
//! Files are PEM. Every error names the flag the file came from and says how to fix it, because
//! the person reading it is at a shell prompt, not in this code. [`generate_test_ca`] makes a
//! throwaway ECDSA P-256 CA and a `localhost` leaf so `sockstorm serve --tls` works without any
//! files; [`generate_client_identity`] issues client certificates from that CA for mutual TLS.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// Why certificates or keys could not be loaded, checked or generated.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read. Fix: give the path of an existing, readable PEM file.
    #[error("{flag}: cannot read `{path}`: {reason} (give a readable PEM file)")]
    Read {
        /// The command-line flag that named the file.
        flag: &'static str,
        /// The path that was opened, as displayed in the message.
        path: String,
        /// The OS error, without its number.
        reason: String,
    },
    /// The file is not valid PEM (broken base64, a section without its END line). Fix: give
    /// the file as PEM text, not DER.
    #[error("{flag}: `{path}` is not valid PEM: {reason} (give a PEM file, not DER)")]
    InvalidPem {
        /// The command-line flag that named the file.
        flag: &'static str,
        /// The path that was opened, as displayed in the message.
        path: String,
        /// What the PEM parser rejected.
        reason: String,
    },
    /// The file holds no `CERTIFICATE` block. Fix: give a PEM certificate chain, leaf first.
    #[error("{flag}: `{path}` holds no CERTIFICATE block (give a PEM certificate chain)")]
    NoCertificate {
        /// The command-line flag that named the file.
        flag: &'static str,
        /// The path that was opened, as displayed in the message.
        path: String,
    },
    /// The file holds no private key block. Fix: give a PKCS#8, PKCS#1 or SEC1 PEM key.
    #[error("{flag}: `{path}` holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)")]
    NoKey {
        /// The command-line flag that named the file.
        flag: &'static str,
        /// The path that was opened, as displayed in the message.
        path: String,
    },
    /// The key's algorithm is not supported. Fix: use an ECDSA (P-256/P-384), Ed25519 or RSA
    /// key.
    #[error("{flag}: unsupported private key: {reason} (give an ECDSA, Ed25519 or RSA key)")]
    UnsupportedKey {
        /// The command-line flag that named the key.
        flag: &'static str,
        /// Why aws-lc-rs could not load the key (its algorithm or encoding), in its own words.
        reason: String,
    },
    /// The leaf certificate cannot be parsed. Fix: give an X.509 certificate chain, leaf first.
    #[error("{flag}: the first certificate cannot be parsed: {reason} (give an X.509 chain, leaf first)")]
    BadCertificate {
        /// The command-line flag that named the chain.
        flag: &'static str,
        /// Why rustls could not parse the leaf certificate to compare its public key with the key.
        reason: String,
    },
    /// The private key is not the one the leaf certificate was issued for. Fix: pair the
    /// certificate with its own key.
    #[error("{key_flag}: the key does not match the certificate in {cert_flag} (give the key the certificate was issued for)")]
    KeyMismatch {
        /// The flag that named the certificate chain.
        cert_flag: &'static str,
        /// The flag that named the key.
        key_flag: &'static str,
    },
    /// A CA certificate cannot be used as a trust anchor. Fix: give the CA certificate (PEM)
    /// that issued the peer's certificates.
    #[error("{flag}: cannot use the CA certificate: {reason} (give the PEM certificate of the issuing CA)")]
    BadCa {
        /// The flag that named the CA file.
        flag: &'static str,
        /// Why rustls refused a certificate as a trust anchor, or `no certificates` when the file
        /// held none.
        reason: String,
    },
    /// rustls refused the assembled TLS settings; a bug or an unusual chain. Fix: report it
    /// with the certificate's algorithm.
    #[error("TLS settings refused: {0}")]
    Config(#[source] rustls::Error),
    /// Generating the test CA or a certificate failed (the system RNG or the signer failed).
    /// Fix: give `--cert`/`--key` files instead.
    #[error("cannot generate test certificates: {0} (give --cert and --key instead)")]
    Generate(String),
}

/// PEM files are small; anything larger is not one (and a device could be read forever).
const PEM_FILE_MAX: u64 = 16 * 1024 * 1024;

/// Reads the file behind `flag`: a regular file of at most [`PEM_FILE_MAX`] bytes.
fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, CertError> {
    let err = |reason: String| CertError::Read {
        flag,
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(os_reason(&e)))?;
    if !meta.is_file() {
        return Err(err("not a regular file: give a PEM file".into()));
    }
    if meta.len() > PEM_FILE_MAX {
        return Err(err(format!(
            "{} bytes, over the 16 MiB limit for a PEM file",
            meta.len()
        )));
    }
    let mut out = Vec::new();
    io::Read::read_to_end(
        &mut io::Read::take(
            std::fs::File::open(path).map_err(|e| err(os_reason(&e)))?,
            PEM_FILE_MAX,
        ),
        &mut out,
    )
    .map_err(|e| err(os_reason(&e)))?;
    Ok(out)
}

/// The OS message of `e` without the " (os error N)" suffix, which means nothing to a user.
pub(crate) fn os_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

/// The error for a PEM parse failure of `path`.
fn invalid_pem(flag: &'static str, path: &Path, e: &pem::Error) -> CertError {
    CertError::InvalidPem {
        flag,
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Loads every `CERTIFICATE` block of the PEM file `path`, in file order.
///
/// # Errors
/// The file cannot be read, is not valid PEM, or holds no certificate.
pub fn load_certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let text = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid_pem(flag, path, &e))?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            flag,
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// Loads the first private key (PKCS#8, PKCS#1 or SEC1) of the PEM file `path`.
///
/// # Errors
/// The file cannot be read, is not valid PEM, or holds no private key.
pub fn load_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let text = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => CertError::NoKey {
            flag,
            path: path.display().to_string(),
        },
        e => invalid_pem(flag, path, &e),
    })
}

/// Checks that `key` is the private key of the leaf (first) certificate of `chain`.
///
/// # Errors
/// The key is of an unsupported type, the leaf cannot be parsed, or the keys differ.
pub fn check_key_matches(
    cert_flag: &'static str,
    key_flag: &'static str,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), CertError> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| CertError::UnsupportedKey {
            flag: key_flag,
            reason: e.to_string(),
        })?;
    match CertifiedKey::new(chain.to_vec(), signing_key).keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(CertError::KeyMismatch {
            cert_flag,
            key_flag,
        }),
        Err(e) => Err(CertError::BadCertificate {
            flag: cert_flag,
            reason: e.to_string(),
        }),
    }
}

/// A throwaway CA and a server certificate it issued for `localhost`, `127.0.0.1` and `::1`.
pub struct TestCa {
    /// The CA certificate as PEM: what clients trust (`--cacert`).
    pub ca_pem: String,
    /// The server's chain: the leaf only (clients already hold the CA).
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
    /// The CA certificate, kept to issue client certificates.
    ca_cert: rcgen::Certificate,
    /// The CA's P-256 signing key, kept with `ca_cert` to sign client certificates.
    ca_key: KeyPair,
}

/// The error for an rcgen failure.
fn generate_err(e: rcgen::Error) -> CertError {
    CertError::Generate(e.to_string())
}

/// Signs `params` for a new P-256 key with the CA; returns the certificate and its key.
fn issue(
    ca_cert: &rcgen::Certificate,
    ca_key: &KeyPair,
    common_name: &str,
    mut params: CertificateParams,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(rcgen::Certificate, KeyPair), CertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let cert = params
        .signed_by(&key, ca_cert, ca_key)
        .map_err(generate_err)?;
    Ok((cert, key))
}

/// Generates a fresh test CA ("sockstorm test CA", ECDSA P-256) and a server leaf it signed.
///
/// # Errors
/// Key generation or signing failed ([`CertError::Generate`]).
pub fn generate_test_ca() -> Result<TestCa, CertError> {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_err)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "sockstorm test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = params.self_signed(&ca_key).map_err(generate_err)?;
    let mut leaf = CertificateParams::default();
    leaf.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().map_err(generate_err)?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    let (cert, key) = issue(
        &ca_cert,
        &ca_key,
        "localhost",
        leaf,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    Ok(TestCa {
        ca_pem: ca_cert.pem(),
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ca_cert,
        ca_key,
    })
}

/// Issues a client certificate (clientAuth) from `ca`; returns `(certificate PEM, key PEM)`,
/// the form `--cert`/`--key` files take.
///
/// # Errors
/// Key generation or signing failed ([`CertError::Generate`]).
pub fn generate_client_identity(ca: &TestCa) -> Result<(String, String), CertError> {
    let (cert, key) = issue(
        &ca.ca_cert,
        &ca.ca_key,
        "sockstorm test client",
        CertificateParams::default(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A root store holding `cas`, for verifying peers (`--cacert`, `--client-ca`).
///
/// # Errors
/// A certificate cannot be used as a trust anchor, or `cas` is empty.
pub fn root_store(
    flag: &'static str,
    cas: &[CertificateDer<'static>],
) -> Result<Arc<rustls::RootCertStore>, CertError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone()).map_err(|e| CertError::BadCa {
            flag,
            reason: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(CertError::BadCa {
            flag,
            reason: "no certificates".to_owned(),
        });
    }
    Ok(Arc::new(roots))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use std::path::PathBuf;

    /// A file in a fresh per-test directory.
    fn temp_file(test: &str, name: &str, contents: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sockstorm-certs-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn verifier(ca: &TestCa) -> Arc<WebPkiServerVerifier> {
        let cas: Vec<_> = CertificateDer::pem_slice_iter(ca.ca_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        WebPkiServerVerifier::builder_with_provider(
            root_store("--cacert", &cas).unwrap(),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn generated_chain_verifies_for_localhost_names() {
        let ca = generate_test_ca().unwrap();
        assert_eq!(ca.chain.len(), 1);
        check_key_matches("--cert", "--key", &ca.chain, &ca.key).unwrap();
        let v = verifier(&ca);
        for name in ["localhost", "127.0.0.1", "::1"] {
            let name = ServerName::try_from(name).unwrap();
            v.verify_server_cert(&ca.chain[0], &[], &name, &[], UnixTime::now())
                .unwrap();
        }
        let other = ServerName::try_from("example.com").unwrap();
        assert!(v
            .verify_server_cert(&ca.chain[0], &[], &other, &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn another_ca_does_not_verify_the_chain() {
        let ca = generate_test_ca().unwrap();
        let other = generate_test_ca().unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        assert!(verifier(&other)
            .verify_server_cert(&ca.chain[0], &[], &name, &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn files_round_trip_through_pem() {
        let ca = generate_test_ca().unwrap();
        let (cert_pem, key_pem) = generate_client_identity(&ca).unwrap();
        let cert = temp_file("round_trip", "client.pem", &cert_pem);
        let key = temp_file("round_trip", "client.key", &key_pem);
        let caf = temp_file("round_trip", "ca.pem", &ca.ca_pem);
        let chain = load_certs("--cert", &cert).unwrap();
        let key = load_key("--key", &key).unwrap();
        check_key_matches("--cert", "--key", &chain, &key).unwrap();
        assert_eq!(load_certs("--cacert", &caf).unwrap().len(), 1);
    }

    #[test]
    fn missing_file_names_flag_and_fix() {
        let err = load_certs("--cacert", Path::new("/nonexistent/x.pem")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--cacert: cannot read `/nonexistent/x.pem`: No such file or directory \
             (give a readable PEM file)"
        );
        let err = load_key("--key", Path::new("/nonexistent/k.pem")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--key: cannot read `/nonexistent/k.pem`: No such file or directory \
             (give a readable PEM file)"
        );
    }

    #[test]
    fn file_without_certificate_is_refused() {
        let ca = generate_test_ca().unwrap();
        let (_, key_pem) = generate_client_identity(&ca).unwrap();
        for (name, text) in [("empty.pem", ""), ("key.pem", key_pem.as_str())] {
            let path = temp_file("no_cert", name, text);
            let err = load_certs("--cert", &path).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "--cert: `{}` holds no CERTIFICATE block (give a PEM certificate chain)",
                    path.display()
                )
            );
        }
    }

    #[test]
    fn file_without_key_is_refused() {
        let ca = generate_test_ca().unwrap();
        let path = temp_file("no_key", "k.pem", &ca.ca_pem);
        let err = load_key("--key", &path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "--key: `{}` holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)",
                path.display()
            )
        );
    }

    #[test]
    fn broken_pem_is_refused() {
        let path = temp_file("broken", "x.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let err = load_certs("--cert", &path).unwrap_err();
        assert!(
            matches!(err, CertError::InvalidPem { flag: "--cert", .. }),
            "{err}"
        );
    }

    #[test]
    fn mismatched_key_is_refused() {
        let ca = generate_test_ca().unwrap();
        let other = generate_test_ca().unwrap();
        let err = check_key_matches("--cert", "--key", &ca.chain, &other.key).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--key: the key does not match the certificate in --cert \
             (give the key the certificate was issued for)"
        );
    }
}
