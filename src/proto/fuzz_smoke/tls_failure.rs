//! `tls_failure`: the mapping of rustls errors, alerts and socket errnos to failure causes,
//! their report keys and their explanations.

use crate::proto::conn::Failure;
use crate::proto::tls::{alert_name, TlsFailure};
use rustls::pki_types::{ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ContentType, Error, HandshakeType, InvalidMessage,
    OtherError, PeerIncompatible, PeerMisbehaved,
};
use std::sync::Arc;
use std::time::Duration;

/// An error whose text is the input's: rustls passes some verifier reasons on as text only.
#[derive(Debug)]
struct Text(String);

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Text {}

/// Reads the input front to back; zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |x, _| (x << 8) | u64::from(self.u8()))
    }

    /// A string of up to `n` bytes (lossy UTF-8).
    fn text(&mut self, n: u8) -> String {
        let len = usize::from(self.u8() % n.max(1)).min(self.0.len());
        let (t, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8_lossy(t).into_owned()
    }
}

fn time(b: &mut Bytes<'_>) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(b.u64() >> 20))
}

/// A certificate error from the input, with the cause it must map to.
fn cert_error(b: &mut Bytes<'_>) -> (CertificateError, TlsFailure) {
    use CertificateError as C;
    use TlsFailure as F;
    match b.u8() % 14 {
        0 => (C::UnknownIssuer, F::UnknownIssuer),
        1 => (C::Expired, F::Expired),
        2 => (
            C::ExpiredContext {
                time: time(b),
                not_after: time(b),
            },
            F::Expired,
        ),
        3 => (C::NotValidYet, F::NotValidYet),
        4 => (
            C::NotValidYetContext {
                time: time(b),
                not_before: time(b),
            },
            F::NotValidYet,
        ),
        5 => (C::NotValidForName, F::NameMismatch),
        6 => {
            let name = b.text(40);
            let expected = ServerName::try_from(name.clone())
                .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a DNS name"));
            let presented = vec![name, b.text(20)];
            (
                C::NotValidForNameContext {
                    expected,
                    presented,
                },
                F::NameMismatch,
            )
        }
        7 => (C::Revoked, F::Revoked),
        8 => (C::BadSignature, F::BadSignature),
        9 => (C::InvalidPurpose, F::WrongPurpose),
        10 => {
            // webpki's reason as text: only its exact name is a CA used as a leaf.
            let text = if b.u8() & 1 == 0 {
                "CaUsedAsEndEntity".to_owned()
            } else {
                b.text(32)
            };
            let want = if text == "CaUsedAsEndEntity" {
                F::CaAsServerCert
            } else {
                F::BadCertificate
            };
            (C::Other(OtherError(Arc::new(Text(text)))), want)
        }
        11 => (C::BadEncoding, F::BadCertificate),
        12 => (C::UnhandledCriticalExtension, F::BadCertificate),
        _ => (C::ApplicationVerificationFailure, F::BadCertificate),
    }
}

/// A rustls error from the input, with the cause it must map to.
fn error(b: &mut Bytes<'_>) -> (Error, TlsFailure) {
    use TlsFailure as F;
    match b.u8() % 16 {
        0..=3 => {
            let (c, want) = cert_error(b);
            (Error::InvalidCertificate(c), want)
        }
        4..=6 => {
            let code = b.u8();
            let a = AlertDescription::from(code);
            assert_eq!(u8::from(a), code, "alert code round trip");
            (Error::AlertReceived(a), F::Alert(code))
        }
        7 => {
            let m = [
                InvalidMessage::InvalidContentType,
                InvalidMessage::MessageTooLarge,
                InvalidMessage::MessageTooShort,
                InvalidMessage::UnknownProtocolVersion,
                InvalidMessage::MissingData("x"),
                InvalidMessage::DuplicateExtension(u16::from(b.u8())),
            ];
            (
                Error::InvalidMessage(m[usize::from(b.u8()) % m.len()]),
                F::NotTls,
            )
        }
        8 => (
            Error::InappropriateMessage {
                expect_types: (0..b.u8() % 4).map(|_| ContentType::from(b.u8())).collect(),
                got_type: ContentType::from(b.u8()),
            },
            F::NotTls,
        ),
        9 => (
            Error::InappropriateHandshakeMessage {
                expect_types: (0..b.u8() % 4)
                    .map(|_| HandshakeType::from(b.u8()))
                    .collect(),
                got_type: HandshakeType::from(b.u8()),
            },
            F::Protocol,
        ),
        10 => {
            let p = [
                PeerIncompatible::NoCipherSuitesInCommon,
                PeerIncompatible::NoKxGroupsInCommon,
                PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig,
                PeerIncompatible::SupportedVersionsExtensionRequired,
            ];
            (
                Error::PeerIncompatible(p[usize::from(b.u8()) % p.len()].clone()),
                F::Incompatible,
            )
        }
        11 => (Error::NoCertificatesPresented, F::Incompatible),
        12 => {
            let p = [
                PeerMisbehaved::IllegalMiddleboxChangeCipherSpec,
                PeerMisbehaved::SelectedUnofferedCipherSuite,
                PeerMisbehaved::TooManyWarningAlertsReceived,
                PeerMisbehaved::UnsolicitedServerHelloExtension,
            ];
            (
                Error::PeerMisbehaved(p[usize::from(b.u8()) % p.len()].clone()),
                F::Protocol,
            )
        }
        13 => {
            let e = [Error::DecryptError, Error::PeerSentOversizedRecord];
            (e[usize::from(b.u8() & 1)].clone(), F::Protocol)
        }
        14 => (Error::General(b.text(64)), F::Other),
        _ => (
            Error::Other(OtherError(Arc::new(Text(b.text(64))))),
            F::Other,
        ),
    }
}

/// A report key: non-empty snake_case ASCII of bounded length.
fn check_key(key: &str) {
    assert!(!key.is_empty() && key.len() <= 64, "{key:?}");
    assert!(
        key.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
        "{key:?}"
    );
}

/// An explanation: one non-empty line.
fn check_line(text: &str) {
    assert!(
        !text.trim().is_empty() && !text.contains(['\n', '\r']),
        "{text:?}"
    );
}

/// Input: two rustls errors (variant, alert code, certificate error, names and texts from the
/// bytes) and an errno. Must hold: no panic; each error maps to the cause its variant means
/// (an alert to itself, a certificate error to its certificate cause, webpki's
/// `CaUsedAsEndEntity` text alone to `cert_ca_as_server`, a malformed record to `not_tls`…);
/// the mapping is a function of the error (a clone maps alike); keys are snake_case, unique
/// per cause (two causes with one key are one cause) and prefixed `tls_` as failures;
/// explanations are one line; certificate causes are persistent; an errno maps to its named
/// cause or to `os_error_N` when it has none.
pub fn tls_failure(data: &[u8]) {
    let mut b = Bytes(data);
    let (e1, want1) = error(&mut b);
    let (e2, want2) = error(&mut b);
    // An errno is positive: the drivers negate io_uring's results before mapping them.
    let errno = i32::from_be_bytes([b.u8(), b.u8(), b.u8(), b.u8()]) & i32::MAX;
    let (f1, f2) = (TlsFailure::of(&e1), TlsFailure::of(&e2));
    assert_eq!(f1, want1, "{e1:?}");
    assert_eq!(f2, want2, "{e2:?}");
    assert_eq!(TlsFailure::of(&e1.clone()), f1);
    for f in [f1, f2] {
        check_key(&f.name());
        check_line(&f.describe());
        let failure = Failure::Tls(f);
        assert_eq!(failure.name(), format!("tls_{}", f.name()));
        assert_eq!(failure.to_string(), failure.name());
        check_line(&failure.describe());
        if matches!(
            f,
            TlsFailure::UnknownIssuer
                | TlsFailure::Expired
                | TlsFailure::NotValidYet
                | TlsFailure::NameMismatch
                | TlsFailure::Revoked
                | TlsFailure::BadSignature
                | TlsFailure::CaAsServerCert
                | TlsFailure::WrongPurpose
                | TlsFailure::BadCertificate
        ) {
            assert!(f.is_persistent(), "{f:?}");
        }
        if let TlsFailure::Alert(a) = f {
            check_key(&alert_name(a));
            assert_eq!(f.name(), format!("alert_{}", alert_name(a)));
        }
    }
    assert_eq!(f1.name() == f2.name(), f1 == f2, "{f1:?} {f2:?}");

    let os = Failure::from_errno(errno);
    check_key(&os.name());
    check_line(&os.describe());
    let named = [
        libc::ECONNREFUSED,
        libc::ETIMEDOUT,
        libc::ECONNRESET,
        libc::EPIPE,
        libc::ECONNABORTED,
        libc::ENETUNREACH,
        libc::EHOSTUNREACH,
        libc::ENETDOWN,
        libc::EHOSTDOWN,
        libc::EADDRNOTAVAIL,
        libc::EADDRINUSE,
        libc::EMFILE,
        libc::ENFILE,
    ];
    if named.contains(&errno) {
        assert!(!matches!(os, Failure::Os(_)), "{errno} unnamed");
    } else {
        assert_eq!(os, Failure::Os(errno));
        assert_eq!(os.name(), format!("os_error_{errno}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fuzz_smoke::{smoke_runs, Gen};

    fn input(g: &mut Gen) -> Vec<u8> {
        let mut v = g.random(48);
        if g.chance(2) {
            // A real errno in the last four bytes.
            v.truncate(v.len().min(40));
            v.resize(40, 0);
            let e = g.pick(&[
                libc::ECONNRESET,
                libc::EMFILE,
                libc::EIO,
                libc::EACCES,
                0,
                i32::MAX,
            ]);
            v.extend_from_slice(&e.to_be_bytes());
        }
        v
    }

    #[test]
    fn tls_failure_smoke() {
        smoke_runs(31, 100_000, input, tls_failure);
    }

    /// Every alert code has its own key, and every cause the mapping can give is reached.
    #[test]
    fn tls_failure_keys_are_unique_and_reached() {
        let names: std::collections::BTreeSet<String> = (0..=255u8).map(alert_name).collect();
        assert_eq!(names.len(), 256);
        let mut g = Gen::new(32);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let d = input(&mut g);
            let (e, _) = error(&mut Bytes(&d));
            seen.insert(match TlsFailure::of(&e) {
                TlsFailure::Alert(_) => TlsFailure::Alert(0),
                f => f,
            });
        }
        assert_eq!(seen.len(), 14, "{seen:?}");
    }
}
