//! What a TLS handshake costs the client, from the bottom up (criterion, `harness = false`):
//!
//! - `floor/*`: the crypto a full TLS 1.3 handshake cannot avoid with an ECDSA P-256 server
//!   certificate and X25519, done directly with aws-lc-rs (the provider sockstorm uses): one
//!   X25519 key generation + agreement, two P-256 signature checks (the certificate by its CA,
//!   the server's CertificateVerify).
//! - `rustls_client/*`: the client side of a whole in-memory handshake with sockstorm's own
//!   configuration (`TlsSettings::client`, default suites, X25519), timing only the client's
//!   calls (the server's are excluded), full and resumed, TLS 1.3 and 1.2; full handshakes
//!   with the verified-chain cache (warm) and without it.
//!
//! `scripts/bench_tls.sh` compares these with the client CPU per handshake of a real run.
//! Run: `cargo bench --bench tls` (short: `-- --warm-up-time 1 --measurement-time 3`).

use aws_lc_rs::{agreement, rand::SystemRandom, signature};
use criterion::{criterion_group, criterion_main, Criterion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, RootCertStore, ServerConnection};
use sockstorm::certs::generate_test_ca;
use sockstorm::proto::rng::Rng;
use sockstorm::proto::tls::{Resume, TlsClient, TlsSettings};
use sockstorm::server::{server_tls_config, ServerTlsOptions};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn x25519(rng: &SystemRandom, peer: &[u8]) -> u8 {
    let mine = agreement::EphemeralPrivateKey::generate(&agreement::X25519, rng).unwrap();
    let public = mine.compute_public_key().unwrap();
    black_box(public.as_ref());
    let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
    agreement::agree_ephemeral(mine, peer, (), |k| Ok(k[0])).unwrap()
}

fn bench_floor(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let peer = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).unwrap();
    let peer_pub = peer.compute_public_key().unwrap().as_ref().to_vec();
    let pkcs8 =
        signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .unwrap();
    let kp = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.as_ref(),
    )
    .unwrap();
    let msg = [7u8; 130]; // a CertificateVerify's signed content is about this long
    let sig = kp.sign(&rng, &msg).unwrap();
    let public = signature::KeyPair::public_key(&kp).as_ref().to_vec();
    let verify = || {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &public)
            .verify(&msg, sig.as_ref())
            .unwrap()
    };
    let mut g = c.benchmark_group("floor");
    g.bench_function("x25519_keygen_agree", |b| {
        b.iter(|| x25519(&rng, &peer_pub))
    });
    g.bench_function("p256_verify", |b| b.iter(verify));
    g.bench_function("full_tls13_client_crypto", |b| {
        b.iter(|| {
            x25519(&rng, &peer_pub);
            verify();
            verify();
        })
    });
    g.finish();
}

struct Pair {
    client: TlsClient,
    server: Arc<rustls::ServerConfig>,
}

fn pair(version: u16, resume: Resume, verify_cache: bool) -> Pair {
    let ca = generate_test_ca().unwrap();
    let mut roots = RootCertStore::empty();
    let ca_der = CertificateDer::pem_slice_iter(ca.ca_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    roots.add(ca_der).unwrap();
    let v = if version == 12 {
        &rustls::version::TLS12
    } else {
        &rustls::version::TLS13
    };
    let settings = TlsSettings {
        resume,
        verify_cache,
        store_capacity: 1 << 16,
        ..TlsSettings::new(
            ServerName::try_from("localhost").unwrap(),
            Arc::new(roots),
            vec![v],
        )
    };
    let server =
        server_tls_config(&ServerTlsOptions::new(ca.chain.clone(), ca.key.clone_key())).unwrap();
    Pair {
        client: settings.client().unwrap(),
        server,
    }
}

/// Moves records between the two until both are quiet; returns the time spent in client calls.
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) -> Duration {
    let mut spent = Duration::ZERO;
    let mut buf = Vec::with_capacity(4096);
    for _ in 0..10 {
        buf.clear();
        let t = Instant::now();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        spent += t.elapsed();
        let sent = !buf.is_empty();
        server.read_tls(&mut &buf[..]).unwrap();
        server.process_new_packets().unwrap();
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        if buf.is_empty() && !sent {
            break;
        }
        let t = Instant::now();
        client.read_tls(&mut &buf[..]).unwrap();
        client.process_new_packets().unwrap();
        spent += t.elapsed();
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    spent
}

fn bench_rustls_client(c: &mut Criterion) {
    let mut g = c.benchmark_group("rustls_client");
    for (name, version, resume, cache) in [
        ("full_tls13", 13, Resume::Off, true),
        ("full_tls13_no_verify_cache", 13, Resume::Off, false),
        ("resumed_tls13", 13, Resume::On, true),
        ("full_tls12", 12, Resume::Off, true),
        ("resumed_tls12", 12, Resume::On, true),
    ] {
        let p = pair(version, resume, cache);
        let mut rng = Rng::new(1);
        // Warm the session store so every measured handshake can resume.
        for _ in 0..8 {
            let mut s = ServerConnection::new(p.server.clone()).unwrap();
            let mut cl = p.client.start(&mut rng).unwrap().conn;
            handshake(&mut cl, &mut s);
        }
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut s = ServerConnection::new(p.server.clone()).unwrap();
                    let t = Instant::now();
                    let mut cl = p.client.start(&mut rng).unwrap().conn;
                    total += t.elapsed();
                    total += handshake(&mut cl, &mut s);
                    let kind = cl.handshake_kind();
                    assert_eq!(
                        kind == Some(rustls::HandshakeKind::Resumed),
                        resume == Resume::On,
                        "{name}"
                    );
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_floor, bench_rustls_client);
criterion_main!(benches);
