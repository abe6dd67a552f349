//! HTTPS and WSS for the HTTP listener: browsers grant the microphone only to secure pages
//! (or localhost), so agents on other machines need TLS. The handshakes run in their own
//! tasks, so a slow or hostile client never holds up the next connection.

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::conn::{Guarded, LimitedTcp};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Handshaken connections waiting for the HTTP server; accepting pauses when it is full.
const READY_CAPACITY: usize = 64;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{table}.tls_cert {path}: {reason}")]
    Certificate {
        table: &'static str,
        path: String,
        reason: String,
    },
    #[error("{table}.tls_key {path}: {reason}")]
    Key {
        table: &'static str,
        path: String,
        reason: String,
    },
    #[error("{table}.tls_key does not match {table}.tls_cert: {reason}")]
    Mismatch { table: &'static str, reason: String },
}

/// The HTTPS server config for a PEM certificate chain and private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_for("http", cert, key, Some(b"http/1.1"))
}

/// A server config for the listener of config table `table` (`http`, `sip`), which names
/// its keys in errors; `alpn` is the one protocol it speaks, if it names one.
pub fn server_config_for(
    table: &'static str,
    cert: &Path,
    key: &Path,
    alpn: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate {
            table,
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            table,
            path: cert.display().to_string(),
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        table,
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch {
            table,
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Mismatch {
            table,
            reason: e.to_string(),
        })?;
    if let Some(alpn) = alpn {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    Ok(Arc::new(config))
}

/// A listener that yields TLS connections whose handshake is done.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<Guarded<TcpStream>>, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    /// Connections are capped (and timed) before their handshake, not after.
    pub fn new(listener: LimitedTcp, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_CAPACITY);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = listener.accept_limited().await;
                if tx.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(mut tls)) => {
                            // The handshake was the first head; what follows is encrypted.
                            tls.get_mut().0.mark_headed();
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Guarded<TcpStream>>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task only ends with the listener; wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
