//! quinn handshakes on loopback with generated certificates: server auth, an
//! untrusted CA, and mutual TLS with and without a client certificate.

use std::net::SocketAddr;

use quinn::Endpoint;
use skylane_certs::{
    client_config, server_config, ClientAuth, DevCa, Identity, LeafKind, LocalPki,
};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn serve_echo(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let data = recv.read_to_end(1024).await.unwrap_or_default();
                let _ = send.write_all(&data).await;
                let _ = send.finish();
            }
        });
    }
}

/// Starts an echo server with `identity` and returns its address.
fn start_server(identity: &Identity, auth: ClientAuth) -> SocketAddr {
    let server = Endpoint::server(server_config(identity, auth).unwrap(), loopback()).unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(serve_echo(server));
    addr
}

#[tokio::test]
async fn client_and_server_connect_with_generated_certs() {
    let pki = LocalPki::generate(&[]).unwrap();
    let addr = start_server(&pki.relay, ClientAuth::None);

    let mut client = Endpoint::client(loopback()).unwrap();
    client.set_default_client_config(client_config(pki.roots().unwrap(), None).unwrap());
    for name in ["localhost", "127.0.0.1"] {
        let conn = client.connect(addr, name).unwrap().await.unwrap();
        let alpn = conn
            .handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol;
        assert_eq!(alpn.as_deref(), Some(skylane_proto::ALPN));
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"hello").await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(1024).await.unwrap(), b"hello");
    }
}

#[tokio::test]
async fn client_that_does_not_trust_the_ca_fails_clearly() {
    let pki = LocalPki::generate(&[]).unwrap();
    let other = LocalPki::generate(&[]).unwrap();
    let addr = start_server(&pki.relay, ClientAuth::None);

    let mut client = Endpoint::client(loopback()).unwrap();
    client.set_default_client_config(client_config(other.roots().unwrap(), None).unwrap());
    let err = client
        .connect(addr, "localhost")
        .unwrap()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("invalid peer certificate"),
        "unexpected error: {text}"
    );
}

#[tokio::test]
async fn mutual_tls_accepts_a_certified_peer_and_refuses_one_without_a_certificate() {
    let ca = DevCa::generate("test CA").unwrap();
    let origin = Identity::from_pair(&ca.issue(LeafKind::Origin, &[]).unwrap()).unwrap();
    let relay = Identity::from_pair(&ca.issue(LeafKind::Relay, &[]).unwrap()).unwrap();
    let roots = || skylane_certs::roots_from_pem(&ca.pem().cert_pem).unwrap();

    let server = Endpoint::server(
        server_config(&origin, ClientAuth::Required(roots())).unwrap(),
        loopback(),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(serve_echo(server));

    // With a client certificate from the CA: a working link.
    let mut with_cert = Endpoint::client(loopback()).unwrap();
    with_cert.set_default_client_config(client_config(roots(), Some(&relay)).unwrap());
    let conn = with_cert.connect(addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"link").await.unwrap();
    send.finish().unwrap();
    assert_eq!(recv.read_to_end(1024).await.unwrap(), b"link");

    // Without one: the origin refuses. In TLS 1.3 the client may finish its side of the
    // handshake first, so the refusal shows either at connect or on first use.
    let mut without = Endpoint::client(loopback()).unwrap();
    without.set_default_client_config(client_config(roots(), None).unwrap());
    let refused = match without.connect(addr, "localhost").unwrap().await {
        Err(e) => e.to_string(),
        Ok(conn) => {
            // Any use fails; the close reason carries the server's TLS alert.
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let _ = send.write_all(b"x").await;
            let _ = send.finish();
            assert!(
                recv.read_to_end(1024).await.is_err(),
                "origin served a peer without a certificate"
            );
            conn.closed().await.to_string()
        }
    };
    assert!(
        refused.to_lowercase().contains("certificate"),
        "refusal should name the missing certificate: {refused}"
    );
}

#[test]
fn dev_pki_written_to_disk_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["relay-eu.example".to_owned()];
    let written = DevCa::write_dev_pki(dir.path(), &names).unwrap();
    assert_eq!(written.len(), 6);
    let relay =
        Identity::load(&dir.path().join("relay.pem"), &dir.path().join("relay.key")).unwrap();
    assert_eq!(relay.chain().len(), 2, "leaf and CA");
    skylane_certs::load_roots(&dir.path().join("ca.pem")).unwrap();
    // A second run reuses the CA.
    let ca_before = std::fs::read(dir.path().join("ca.pem")).unwrap();
    DevCa::write_dev_pki(dir.path(), &names).unwrap();
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("relay.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn bad_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let err = Identity::load(&missing, &missing).unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not pem").unwrap();
    assert!(matches!(
        skylane_certs::load_roots(&empty),
        Err(skylane_certs::CertError::NoCertificate(p)) if p.contains("empty.pem")
    ));
    // A key that does not match the certificate is refused by rustls.
    let a = LocalPki::generate(&[]).unwrap();
    let ca = DevCa::generate("x").unwrap();
    let other = ca.issue(LeafKind::Relay, &[]).unwrap();
    let mismatched = Identity::from_pem(
        &ca.issue(LeafKind::Relay, &[]).unwrap().cert_pem,
        &other.key_pem,
    )
    .unwrap();
    assert!(server_config(&mismatched, ClientAuth::None).is_err());
    drop(a);
}
