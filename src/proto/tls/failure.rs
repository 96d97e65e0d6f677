//! Every TLS failure named by kind, with what it usually means and the fix, so that reports
//! count them by cause.

use rustls::{AlertDescription, CertificateError, Error};

/// Why a TLS handshake or session failed, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsFailure {
    /// The certificate chain does not lead to a trusted root.
    UnknownIssuer,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotValidYet,
    /// The certificate is not valid for the server name.
    NameMismatch,
    /// The certificate has been revoked.
    Revoked,
    /// A signature on the certificate or handshake does not verify.
    BadSignature,
    /// The server's certificate is a CA certificate (CA:TRUE), which is not accepted as a
    /// server's own unless pinned (the same file in `--cacert`).
    CaAsServerCert,
    /// The certificate's extended key usage does not allow TLS server authentication.
    WrongPurpose,
    /// The certificate is otherwise unacceptable (encoding, extensions).
    BadCertificate,
    /// The server sent a fatal alert (by description code).
    Alert(u8),
    /// The server's bytes are not TLS (plain HTTP on a wss:// URL?).
    NotTls,
    /// No common protocol version, cipher suite or group.
    Incompatible,
    /// The server broke the TLS protocol: it misbehaved, sent an unexpected handshake message or an
    /// oversized record, or a record did not decrypt.
    Protocol,
    /// No completed handshake before `--connect-timeout`.
    Timeout,
    /// The server closed the connection during the handshake.
    Closed,
    /// The server asked for a client certificate, we had none to send, and it then refused
    /// the handshake (an alert such as certificate_required or handshake_failure, or it closed
    /// the connection): pass one with --cert/--key.
    ClientCertRequired,
    /// Any other rustls error (reported as `tls_other`, "other TLS error").
    Other,
}

impl TlsFailure {
    /// Classifies a rustls error.
    pub fn of(e: &Error) -> Self {
        match e {
            Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => Self::UnknownIssuer,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Self::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Self::NotValidYet
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Self::NameMismatch,
                CertificateError::Revoked => Self::Revoked,
                CertificateError::BadSignature => Self::BadSignature,
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => Self::WrongPurpose,
                // rustls passes webpki's reason on as text only: its `Debug` name.
                CertificateError::Other(o) if o.to_string() == "CaUsedAsEndEntity" => {
                    Self::CaAsServerCert
                }
                _ => Self::BadCertificate,
            },
            Error::AlertReceived(a) => Self::Alert(u8::from(*a)),
            Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => Self::NotTls,
            Error::PeerIncompatible(_) | Error::NoCertificatesPresented => Self::Incompatible,
            Error::PeerMisbehaved(_)
            | Error::InappropriateHandshakeMessage { .. }
            | Error::DecryptError
            | Error::PeerSentOversizedRecord => Self::Protocol,
            _ => Self::Other,
        }
    }

    /// This failure of a handshake in which the server asked for a client certificate and got
    /// none: a refusal (the alerts that answer a missing or refused certificate, or
    /// handshake_failure) or a close is [`Self::ClientCertRequired`]; anything else stays.
    pub fn after_cert_request(self) -> Self {
        match self {
            Self::Alert(40 | 42..=46 | 48 | 49 | 116) | Self::Closed => Self::ClientCertRequired,
            f => f,
        }
    }

    /// Stable snake_case key used in reports.
    pub fn name(&self) -> String {
        match self {
            Self::UnknownIssuer => "cert_unknown_issuer".into(),
            Self::Expired => "cert_expired".into(),
            Self::NotValidYet => "cert_not_valid_yet".into(),
            Self::NameMismatch => "cert_name_mismatch".into(),
            Self::Revoked => "cert_revoked".into(),
            Self::BadSignature => "cert_bad_signature".into(),
            Self::CaAsServerCert => "cert_ca_as_server".into(),
            Self::WrongPurpose => "cert_wrong_purpose".into(),
            Self::BadCertificate => "cert_invalid".into(),
            Self::Alert(a) => format!("alert_{}", alert_name(*a)),
            Self::NotTls => "not_tls".into(),
            Self::Incompatible => "incompatible".into(),
            Self::Protocol => "protocol".into(),
            Self::Timeout => "handshake_timeout".into(),
            Self::Closed => "closed_during_handshake".into(),
            Self::ClientCertRequired => "client_cert_required".into(),
            Self::Other => "other".into(),
        }
    }

    /// Whether every attempt against the same server fails this way: a certificate, its
    /// verification or the TLS configuration on either side is the cause, not load or chance
    /// (`--max-identical-failures` stops a run that only ever fails so).
    pub fn is_persistent(&self) -> bool {
        match self {
            Self::UnknownIssuer
            | Self::Expired
            | Self::NotValidYet
            | Self::NameMismatch
            | Self::Revoked
            | Self::BadSignature
            | Self::CaAsServerCert
            | Self::WrongPurpose
            | Self::BadCertificate
            | Self::NotTls
            | Self::Incompatible
            | Self::ClientCertRequired => true,
            // The alerts that refuse our parameters, client certificate, name or ALPN.
            Self::Alert(a) => matches!(a, 40 | 42..=49 | 70 | 71 | 112 | 116 | 120),
            Self::Protocol | Self::Timeout | Self::Closed | Self::Other => false,
        }
    }

    /// One line: what happened and what to check.
    pub fn describe(&self) -> String {
        match self {
            Self::UnknownIssuer => "certificate not issued by a trusted CA: pass the CA that signed it (or a self-signed server certificate itself) with --cacert FILE, or --insecure to skip verification".into(),
            Self::Expired => "server certificate has expired: renew it on the server (or check this host's clock)".into(),
            Self::NotValidYet => "server certificate is not valid yet: check the clocks of this host and the server, or reissue it".into(),
            Self::NameMismatch => "certificate does not match the host name: use the name it was issued for in the URL or --sni NAME, or reissue it with that name in subjectAltName".into(),
            Self::Revoked => "server certificate is revoked: the server needs a new one".into(),
            Self::BadSignature => "a certificate signature does not verify: the server's chain is corrupt or not signed by the CA it names; check the chain the server sends".into(),
            Self::CaAsServerCert => "the server's certificate is a CA certificate (CA:TRUE) used as a server certificate: pass that exact file with --cacert to pin it, or issue a leaf certificate signed by a CA".into(),
            Self::WrongPurpose => "the server's certificate does not allow TLS server authentication (extendedKeyUsage without serverAuth): reissue it with extendedKeyUsage=serverAuth".into(),
            Self::BadCertificate => "server certificate is malformed or not usable for TLS server authentication: inspect it with `openssl x509 -noout -text`".into(),
            Self::Alert(a) => format!("server sent the fatal TLS alert `{}`: {}", alert_name(*a), alert_hint(*a)),
            Self::NotTls => "server did not answer in TLS: is this a plain ws:// port?".into(),
            Self::Incompatible => "no common TLS version, cipher suite or key-exchange group: check --tls-version, --ciphers, --kx".into(),
            Self::Protocol => "server violated the TLS protocol".into(),
            Self::Timeout => "no completed TLS handshake before --connect-timeout".into(),
            Self::Closed => "server closed the connection during the TLS handshake".into(),
            Self::ClientCertRequired => "the server requires a client certificate (--cert/--key): it asked for one, none was configured, and it refused the handshake without".into(),
            Self::Other => "other TLS error".into(),
        }
    }
}

/// What a fatal alert from the server usually means, and what to check.
fn alert_hint(code: u8) -> &'static str {
    match code {
        40 => "no acceptable parameters; with TLS 1.2 and an ECDSA certificate --kx must also list the certificate's curve (e.g. x25519,secp256r1); else check --tls-version, --ciphers, --kx",
        70 => "the server does not speak the offered versions: check --tls-version",
        71 => "the server wants stronger parameters: check --ciphers, --kx",
        42 | 44 | 45 | 46 | 48 | 49 | 116 => "the server refused our client certificate (or the lack of one): check --cert/--key",
        112 => "the server does not know the name we sent: check --sni or the URL's host",
        120 => "no common application protocol: check --alpn",
        _ => "see the server's log",
    }
}

/// snake_case name of an alert description code.
pub fn alert_name(code: u8) -> String {
    let debug = format!("{:?}", AlertDescription::from(code));
    if debug.starts_with("Unknown") || debug.contains('(') {
        return format!("unknown_{code}");
    }
    let mut s = String::with_capacity(debug.len() + 4);
    for (i, ch) in debug.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(ch.to_ascii_lowercase());
        } else {
            s.push(ch);
        }
    }
    s
}
