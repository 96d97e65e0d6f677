//! TLS flags of `sockstorm run` turned into [`TlsSettings`]: files read, names looked up and
//! combinations checked before any connection starts.

use crate::certs;
use crate::plan::PlanError;
use crate::proto::tls::{
    cipher_name, default_suites, group_name, ClientIdentity, Resume, TlsSettings,
};
use clap::Args;
use rustls::crypto::{aws_lc_rs, SupportedKxGroup};
use rustls::pki_types::ServerName;
use rustls::{RootCertStore, SupportedCipherSuite, SupportedProtocolVersion};
use std::path::PathBuf;
use std::sync::Arc;

/// TLS flags (wss:// URLs).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Trust this CA (PEM) in addition to the built-in Mozilla roots (webpki-roots). A
    /// server presenting exactly a certificate of this file is trusted too, even a CA:TRUE
    /// self-signed one (pinned; its names are still checked).
    #[arg(long, help_heading = "TLS (wss://)")]
    pub cacert: Option<PathBuf>,
    /// Do not verify the server certificate (handshake signatures are still checked).
    #[arg(long, help_heading = "TLS (wss://)")]
    pub insecure: bool,
    /// Verify every certificate chain in full, even one identical to a chain verified in the
    /// last 10 s (by default such a chain is trusted again; handshake signatures are always
    /// checked).
    #[arg(long, help_heading = "TLS (wss://)")]
    pub no_verify_cache: bool,
    /// Server name for SNI and certificate verification (default: the URL's host).
    #[arg(long, help_heading = "TLS (wss://)")]
    pub sni: Option<String>,
    /// Protocol versions to offer.
    #[arg(long, value_enum, default_value_t = TlsVersionArg::Both, help_heading = "TLS (wss://)")]
    pub tls_version: TlsVersionArg,
    /// Cipher suites by IANA name, in preference order, comma-separated
    /// (default: the provider's, e.g. TLS_AES_128_GCM_SHA256 first).
    #[arg(long, value_delimiter = ',', help_heading = "TLS (wss://)")]
    pub ciphers: Vec<String>,
    /// Key-exchange groups in preference order; the first gets the ClientHello key share.
    /// Known: x25519, secp256r1, secp384r1, x25519mlkem768, secp256r1mlkem768, mlkem768.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "x25519,secp256r1,secp384r1",
        help_heading = "TLS (wss://)"
    )]
    pub kx: Vec<String>,
    /// ALPN protocols to offer, comma-separated (default: none).
    #[arg(long, value_delimiter = ',', help_heading = "TLS (wss://)")]
    pub alpn: Vec<String>,
    /// Client certificate chain (PEM) for mutual TLS; needs --key.
    #[arg(long, help_heading = "TLS (wss://)")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, help_heading = "TLS (wss://)")]
    pub key: Option<PathBuf>,
    /// Session resumption: off, on, or the share of handshakes that try (e.g. 0.7); the rest
    /// are forced full.
    #[arg(long, default_value = "on", value_parser = parse_resume, help_heading = "TLS (wss://)")]
    pub resume: Resume,
    /// TLS 1.3 tickets to ask the server for per handshake (RFC 9149 ticket request; 0 = none).
    #[arg(long, default_value_t = 4, help_heading = "TLS (wss://)")]
    pub tls_tickets: u8,
}

/// `--tls-version` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsVersionArg {
    /// TLS 1.2 only.
    #[value(name = "1.2")]
    V12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    V13,
    /// TLS 1.3 preferred, 1.2 allowed.
    Both,
}

/// Parses `--resume`.
pub fn parse_resume(s: &str) -> Result<Resume, String> {
    match s {
        "on" => Ok(Resume::On),
        "off" => Ok(Resume::Off),
        _ => match s.parse::<f64>() {
            Ok(0.0) => Ok(Resume::Off),
            Ok(1.0) => Ok(Resume::On),
            Ok(f) if f > 0.0 && f < 1.0 => Ok(Resume::Fraction(f)),
            _ => Err(format!(
                "`{s}` is not off, on or a fraction between 0 and 1 (e.g. 0.7)"
            )),
        },
    }
}

impl TlsArgs {
    /// Names of the flags given that only make sense with TLS (to reject them on ws://).
    pub fn given(&self) -> Option<&'static str> {
        [
            (self.cacert.is_some(), "--cacert"),
            (self.insecure, "--insecure"),
            (self.no_verify_cache, "--no-verify-cache"),
            (self.sni.is_some(), "--sni"),
            (self.tls_version != TlsVersionArg::Both, "--tls-version"),
            (!self.ciphers.is_empty(), "--ciphers"),
            (!self.alpn.is_empty(), "--alpn"),
            (self.cert.is_some(), "--cert"),
            (self.key.is_some(), "--key"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }

    /// Validates the flags and loads the files. `host` is the URL's host; `per_shard` the
    /// most connections one shard opens at once (sizes the ticket store).
    pub fn settings(&self, host: &str, per_shard: u64) -> Result<TlsSettings, PlanError> {
        let name = self.sni.as_deref().unwrap_or(host).to_owned();
        let server_name = ServerName::try_from(name.clone()).map_err(|_| {
            PlanError::invalid(
                "--sni",
                format!("`{name}` is not a valid DNS name or IP address"),
            )
        })?;
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // Each --cacert certificate is also pinned: a server presenting exactly it is trusted
        // even when it is a CA certificate, as `openssl req -x509` makes them.
        let mut pinned = Vec::new();
        if let Some(path) = &self.cacert {
            for c in certs::load_certs("--cacert", path)? {
                pinned.push(c.clone());
                roots.add(c).map_err(|e| {
                    PlanError::invalid(
                        "--cacert",
                        format!("`{}` is not a usable CA certificate: {e}", path.display()),
                    )
                })?;
            }
        }
        let versions: Vec<&'static SupportedProtocolVersion> = match self.tls_version {
            TlsVersionArg::V12 => vec![&rustls::version::TLS12],
            TlsVersionArg::V13 => vec![&rustls::version::TLS13],
            TlsVersionArg::Both => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let suites = self.suites(&versions)?;
        let kx = self.kx_groups()?;
        let identity = match (&self.cert, &self.key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(PlanError::invalid(
                    "--cert",
                    "needs --key with its private key",
                ))
            }
            (None, Some(_)) => {
                return Err(PlanError::invalid(
                    "--key",
                    "needs --cert with the certificate chain",
                ))
            }
            (Some(c), Some(k)) => {
                let chain = certs::load_certs("--cert", c)?;
                let key = certs::load_key("--key", k)?;
                certs::check_key_matches("--cert", "--key", &chain, &key)?;
                Some(ClientIdentity { chain, key })
            }
        };
        let alpn = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let settings = TlsSettings {
            insecure: self.insecure,
            verify_cache: !self.no_verify_cache,
            suites,
            kx,
            alpn,
            identity,
            pinned,
            keylog: std::env::var_os("SSLKEYLOGFILE").is_some_and(|v| !v.is_empty()),
            resume: self.resume,
            tickets: self.tls_tickets,
            // One single-use ticket per connection of the shard: enough for all of them to
            // reconnect at once and resume; bounded, as every ticket held costs memory.
            store_capacity: per_shard.clamp(1024, 1 << 20) as usize,
            ..TlsSettings::new(server_name, Arc::new(roots), versions)
        };
        // Whatever rustls still objects to is reported here, not per connection.
        settings
            .client()
            .map_err(|e| PlanError::invalid("--tls-version/--ciphers/--kx", e.to_string()))?;
        Ok(settings)
    }

    fn suites(
        &self,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Result<Vec<SupportedCipherSuite>, PlanError> {
        let all = aws_lc_rs::ALL_CIPHER_SUITES;
        let usable = |s: &SupportedCipherSuite| versions.contains(&s.version());
        if self.ciphers.is_empty() {
            return Ok(default_suites(versions));
        }
        let mut out = Vec::new();
        for want in &self.ciphers {
            let want_up = want.trim().to_ascii_uppercase();
            let found = all.iter().find(|s| {
                let n = u16::from(s.suite());
                cipher_name(n) == want_up || s.suite().as_str() == Some(want_up.as_str())
            });
            let Some(s) = found else {
                let known: Vec<String> = all
                    .iter()
                    .map(|s| cipher_name(u16::from(s.suite())))
                    .collect();
                return Err(PlanError::Invalid {
                    flag: "--ciphers",
                    reason: format!("unknown cipher suite `{want}`; known: {}", known.join(", ")),
                });
            };
            if !usable(s) {
                return Err(PlanError::Invalid {
                    flag: "--ciphers",
                    reason: format!(
                        "`{want}` is a {} suite but --tls-version does not enable that version \
                         (use --tls-version both, or a suite of the enabled version)",
                        if s.version() == &rustls::version::TLS13 {
                            "TLS 1.3"
                        } else {
                            "TLS 1.2"
                        }
                    ),
                });
            }
            out.push(*s);
        }
        Ok(out)
    }

    fn kx_groups(&self) -> Result<Vec<&'static dyn SupportedKxGroup>, PlanError> {
        let all = aws_lc_rs::ALL_KX_GROUPS;
        let mut out = Vec::new();
        for want in &self.kx {
            let want = want.trim().to_ascii_lowercase();
            let want = match want.as_str() {
                "p256" | "p-256" | "prime256v1" => "secp256r1".to_owned(),
                "p384" | "p-384" => "secp384r1".to_owned(),
                _ => want,
            };
            match all.iter().find(|g| group_name(u16::from(g.name())) == want) {
                Some(g) => out.push(*g),
                None => {
                    let known: Vec<String> = all
                        .iter()
                        .map(|g| group_name(u16::from(g.name())))
                        .collect();
                    return Err(PlanError::Invalid {
                        flag: "--kx",
                        reason: format!("unknown group `{want}`; known: {}", known.join(", ")),
                    });
                }
            }
        }
        if out.is_empty() {
            return Err(PlanError::invalid(
                "--kx",
                "give at least one group (e.g. x25519)",
            ));
        }
        Ok(out)
    }
}
