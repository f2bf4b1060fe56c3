//! MQTT over TLS with client certificates: a gateway process connects with `mqtts://` through a
//! mutual-TLS front (rustls, as a fleet broker's listener would be) to the embedded broker.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::mpsc;

struct Pki {
    ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["gw-1.s-test".to_string()]).unwrap();
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    Pki {
        ca_pem: ca_cert.pem(),
        server_cert: server_cert.der().clone(),
        server_key: server_key.serialize_der(),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// Outcome of each TLS handshake at the front: Ok(client presented a certificate) or the error.
type Handshakes = mpsc::UnboundedReceiver<Result<bool, String>>;

/// A mutual-TLS listener that forwards every authenticated connection to the plain broker.
fn start_tls_front(
    runtime: &tokio::runtime::Runtime,
    pki: &Pki,
    backend: SocketAddr,
) -> (u16, Handshakes) {
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = rustls_pemfile::certs(&mut pki.ca_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    roots.add(ca_der).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![pki.server_cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match acceptor.accept(stream).await {
                    Ok(mut tls) => {
                        let has_cert = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty());
                        let _ = tx.send(Ok(has_cert));
                        if let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await {
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    (port, rx)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn tls_gateway_config(
    dir: &Path,
    port: u16,
    pki: &Pki,
    with_client_cert: bool,
) -> std::path::PathBuf {
    let ca = write(dir, "ca.pem", &pki.ca_pem);
    let mut mqtt = format!("[mqtt]\nca = \"{ca}\"\n");
    if with_client_cert {
        let cert = write(dir, "client.pem", &pki.client_cert_pem);
        let key = write(dir, "client.key", &pki.client_key_pem);
        mqtt.push_str(&format!("cert = \"{cert}\"\nkey = \"{key}\"\n"));
    }
    gateway_config(dir, &format!("mqtts://localhost:{port}"), 0, &mqtt)
}

#[test]
fn gateway_syncs_over_mutual_tls_with_its_client_certificate() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let broker_port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), broker_port);
    let watcher = AckWatcher::start(broker_port);
    let (_central, db) = start_central(dir.path(), &format!("mqtt://127.0.0.1:{broker_port}"));
    let (tls_port, mut handshakes) = start_tls_front(
        &runtime,
        &pki,
        SocketAddr::from(([127, 0, 0, 1], broker_port)),
    );

    let config = tls_gateway_config(dir.path(), tls_port, &pki, true);
    let (_gateway, api) = start_gateway(dir.path(), &config);
    let agent = http();
    for n in 0..50 {
        post_purchase(&agent, api, &format!("tls-{n}")).unwrap();
    }
    assert!(
        watcher.wait_for(50, Duration::from_secs(30)),
        "acked {}",
        watcher.highest()
    );
    assert_eq!(central_events(&db).len(), 50);
    let first = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), handshakes.recv()).await });
    assert_eq!(
        first.ok().flatten(),
        Some(Ok(true)),
        "the gateway authenticated with its client certificate"
    );
}

#[test]
fn broker_refuses_a_gateway_without_client_certificate_and_intake_goes_on() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let broker_port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), broker_port);
    let (tls_port, mut handshakes) = start_tls_front(
        &runtime,
        &pki,
        SocketAddr::from(([127, 0, 0, 1], broker_port)),
    );

    let config = tls_gateway_config(dir.path(), tls_port, &pki, false);
    let (mut gateway, api) = start_gateway(dir.path(), &config);
    let refused = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), handshakes.recv()).await });
    match refused.ok().flatten() {
        Some(Err(error)) => assert!(error.to_lowercase().contains("certificate"), "{error}"),
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    let agent = http();
    let (seq, _) = post_purchase(&agent, api, "offline-but-recorded")
        .expect("intake does not wait on the broker");
    assert_eq!(seq, 1);
    assert_eq!(health(&agent, api)["mqtt"]["connected"], false);
    assert!(gateway.is_running());
}
