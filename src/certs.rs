//! PEM files: certificates and keys loaded with errors that name the flag and the fix.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// A certificate or key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file cannot be read or is not valid PEM.
    #[error("{flag}: cannot read `{path}`: {reason} (give a readable PEM file)")]
    Read {
        /// The flag naming the file.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The file holds no certificate.
    #[error("{flag}: `{path}` holds no CERTIFICATE block (give a PEM certificate chain)")]
    NoCertificate {
        /// The flag naming the file.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// The file holds no private key.
    #[error("{flag}: `{path}` holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)")]
    NoKey {
        /// The flag naming the file.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// The key is not the certificate's.
    #[error("{key_flag}: the key does not match the certificate in {cert_flag} (give the key the certificate was issued for)")]
    KeyMismatch {
        /// The certificate flag.
        cert_flag: &'static str,
        /// The key flag.
        key_flag: &'static str,
    },
}

/// Loads every certificate of a PEM file (at least one).
pub fn load_certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let read = |reason: String| CertError::Read {
        flag,
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| read(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            flag,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Loads the first private key of a PEM file.
pub fn load_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let bytes = std::fs::read(path).map_err(|e| CertError::Read {
        flag,
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| CertError::NoKey {
        flag,
        path: path.to_owned(),
    })
}

/// Checks that `key` belongs to the leaf of `chain`.
pub fn check_key_matches(
    cert_flag: &'static str,
    key_flag: &'static str,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), CertError> {
    let mismatch = CertError::KeyMismatch {
        cert_flag,
        key_flag,
    };
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let Ok(signing) = provider.key_provider.load_private_key(key.clone_key()) else {
        return Err(mismatch);
    };
    let ck = rustls::sign::CertifiedKey::new(chain.to_vec(), signing);
    ck.keys_match().map_err(|_| mismatch)
}
