//! SIP over TCP and TLS: listeners, connections we open to trunks (TLS verified against the
//! trunk's name and CA), framing by Content-Length (RFC 3261 §18.3), and one writer per
//! connection. Parsed messages go to the signalling task as `StreamInput`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::AppError;
use crate::config::Config;
use crate::conn::LimitedTcp;
use crate::sip::message::{Message, ParseError, MAX_MESSAGE_SIZE};
use crate::sip::transaction::{Transmit, Transport};

/// Per-connection outgoing queue; when full the message is dropped and logged (the peer is
/// not reading; SIP retransmission or the transaction timeout takes over).
const TCP_WRITE_CAPACITY: usize = 256;

pub enum StreamInput {
    /// A connection is up (accepted, or ours): TCP, or TCP with TLS.
    Connected(SocketAddr, mpsc::Sender<Vec<u8>>, Transport),
    // Boxed: a parsed message is large and most inputs are small.
    Message(SocketAddr, Box<Message>),
    Invalid(SocketAddr, Box<ParseError>),
    Closed(SocketAddr),
}

/// The open SIP connections, by peer address, and how to open new ones.
pub struct Streams {
    writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// The connections among `writers` that are TLS.
    tls: HashSet<SocketAddr>,
    /// How to reach each TLS trunk's proxy: the name its certificate must carry and the
    /// CAs trusted for it.
    tls_trunks: HashMap<SocketAddr, TlsPeer>,
    input: mpsc::Sender<StreamInput>,
}

impl Streams {
    pub fn new(config: &Config, input: mpsc::Sender<StreamInput>) -> Result<Streams, AppError> {
        Ok(Streams {
            writers: HashMap::new(),
            tls: HashSet::new(),
            tls_trunks: tls_trunks(config)?,
            input,
        })
    }

    /// Which stream transport a connection to `peer` is.
    pub fn transport(&self, peer: SocketAddr) -> Transport {
        if self.tls.contains(&peer) {
            Transport::Tls
        } else {
            Transport::Tcp
        }
    }

    pub fn connected(
        &mut self,
        peer: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
        transport: Transport,
    ) {
        self.writers.insert(peer, writer);
        if transport == Transport::Tls {
            self.tls.insert(peer);
        } else {
            self.tls.remove(&peer);
        }
    }

    pub fn closed(&mut self, peer: SocketAddr) {
        self.writers.remove(&peer);
        self.tls.remove(&peer);
    }

    /// Queue a message on its connection, opening one (TCP, or TLS to a trunk) when there
    /// is none.
    pub fn send(&mut self, transmit: Transmit) {
        let writer = match self.writers.get(&transmit.destination) {
            Some(w) if !w.is_closed() => w.clone(),
            _ => {
                let (tx, rx) = mpsc::channel(TCP_WRITE_CAPACITY);
                self.writers.insert(transmit.destination, tx.clone());
                if transmit.transport == Transport::Tls {
                    // A trunk's proxy as configured; anything else (a peer whose
                    // connection dropped) by its address and the system's CAs.
                    let peer = self
                        .tls_trunks
                        .get(&transmit.destination)
                        .cloned()
                        .unwrap_or_else(|| TlsPeer::by_address(transmit.destination));
                    self.tls.insert(transmit.destination);
                    tokio::spawn(connect_sip_tls(
                        transmit.destination,
                        peer,
                        rx,
                        self.input.clone(),
                    ));
                } else {
                    tokio::spawn(connect_sip_tcp(
                        transmit.destination,
                        rx,
                        self.input.clone(),
                    ));
                }
                tx
            }
        };
        if writer.try_send(transmit.bytes).is_err() {
            tracing::warn!(to = %transmit.destination, "SIP TCP queue full; message dropped");
        }
    }
}

pub async fn accept_sip_tcp(listener: LimitedTcp, input: mpsc::Sender<StreamInput>) {
    loop {
        let (stream, peer) = listener.accept_limited().await;
        let (tx, rx) = mpsc::channel(TCP_WRITE_CAPACITY);
        if input
            .send(StreamInput::Connected(peer, tx, Transport::Tcp))
            .await
            .is_err()
        {
            return;
        }
        tokio::spawn(run_sip_tcp(stream, peer, rx, input.clone()));
    }
}

/// SIP over TLS from trunks: connections capped like SIP TCP's, each handed on once its
/// handshake is done (a slow handshake never holds up the next).
pub async fn accept_sip_tls(
    mut listener: crate::api::tls::TlsListener,
    input: mpsc::Sender<StreamInput>,
) {
    use axum::serve::Listener;
    loop {
        let (stream, peer) = listener.accept().await;
        tracing::debug!(%peer, "SIP TLS connection");
        let (tx, rx) = mpsc::channel(TCP_WRITE_CAPACITY);
        if input
            .send(StreamInput::Connected(peer, tx, Transport::Tls))
            .await
            .is_err()
        {
            return;
        }
        tokio::spawn(run_sip_tcp(stream, peer, rx, input.clone()));
    }
}

/// A TLS peer we connect to: the name its certificate must carry, and the CAs trusted.
#[derive(Clone)]
struct TlsPeer {
    name: tokio_rustls::rustls::pki_types::ServerName<'static>,
    config: Arc<tokio_rustls::rustls::ClientConfig>,
}

impl TlsPeer {
    fn by_address(addr: SocketAddr) -> TlsPeer {
        TlsPeer {
            name: tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
            config: crate::tls_client::system(),
        }
    }
}

/// The trunks whose outbound proxy is reached over TLS, by address: the proxy's host is the
/// name to verify, and `tls_ca` (when set) the one CA trusted for it.
fn tls_trunks(config: &Config) -> Result<HashMap<SocketAddr, TlsPeer>, AppError> {
    let mut peers = HashMap::new();
    let mut seen = HashMap::new();
    for (i, trunk) in config.trunks.iter().enumerate() {
        let Some((uri, addr, Transport::Tls)) = trunk.proxy() else {
            continue;
        };
        let host = uri
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host).map_err(|e| {
            AppError::Asset {
                path: format!("trunk[{i}].outbound_proxy").into(),
                reason: format!("not a TLS server name: {e}"),
            }
        })?;
        let config = match &trunk.tls_ca {
            Some(ca) => crate::tls_client::pinned(ca).map_err(|reason| AppError::Asset {
                path: ca.clone(),
                reason,
            })?,
            None => crate::tls_client::system(),
        };
        // Connections are per address: two trunks there must trust the same CA.
        if let Some((seen_name, seen_ca)) = seen.get(&addr) {
            if *seen_name != name || *seen_ca != trunk.tls_ca {
                return Err(AppError::Asset {
                    path: format!("trunk[{i}].outbound_proxy").into(),
                    reason: format!(
                        "{addr} is another TLS trunk's proxy with another name or tls_ca"
                    ),
                });
            }
        }
        seen.insert(addr, (name.clone(), trunk.tls_ca.clone()));
        peers.insert(addr, TlsPeer { name, config });
    }
    Ok(peers)
}

async fn connect_sip_tls(
    peer: SocketAddr,
    tls: TlsPeer,
    outgoing: mpsc::Receiver<Vec<u8>>,
    input: mpsc::Sender<StreamInput>,
) {
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        let stream = TcpStream::connect(peer).await?;
        let _ = stream.set_nodelay(true);
        tokio_rustls::TlsConnector::from(tls.config)
            .connect(tls.name, stream)
            .await
    })
    .await;
    match connected {
        Ok(Ok(stream)) => run_sip_tcp(stream, peer, outgoing, input).await,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "SIP TLS connect failed");
            let _ = input.send(StreamInput::Closed(peer)).await;
        }
        Err(_) => {
            tracing::warn!(%peer, "SIP TLS connect timed out");
            let _ = input.send(StreamInput::Closed(peer)).await;
        }
    }
}

async fn connect_sip_tcp(
    peer: SocketAddr,
    outgoing: mpsc::Receiver<Vec<u8>>,
    input: mpsc::Sender<StreamInput>,
) {
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(peer)).await {
        Ok(Ok(stream)) => run_sip_tcp(stream, peer, outgoing, input).await,
        _ => {
            tracing::warn!(%peer, "SIP TCP connect failed");
            let _ = input.send(StreamInput::Closed(peer)).await;
        }
    }
}

/// One SIP TCP connection: frames messages by Content-Length (RFC 3261 §18.3) and writes
/// what the signalling task queues.
async fn run_sip_tcp<S>(
    stream: S,
    peer: SocketAddr,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    input: mpsc::Sender<StreamInput>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    // RFC 5626 §3.5.1: a double-CRLF "ping" between messages is answered with a CRLF "pong".
    let (pong_tx, mut pongs) = mpsc::channel::<()>(4);
    let write_task = tokio::spawn(async move {
        loop {
            let bytes: Vec<u8> = tokio::select! {
                queued = outgoing.recv() => match queued {
                    Some(bytes) => bytes,
                    None => break,
                },
                Some(()) = pongs.recv() => b"\r\n".to_vec(),
            };
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buffer: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 8192];
    'read: loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
        loop {
            // Keepalive CRLFs between messages are dropped here so that a peer sending only
            // keepalives never grows the buffer.
            let blank = buffer
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            let ping = buffer[..blank].windows(4).any(|w| w == b"\r\n\r\n");
            if blank == buffer.len() && !ping && blank < 4 {
                // Half a ping may be in flight; it is at most three bytes.
                break;
            }
            if ping {
                let _ = pong_tx.try_send(());
            }
            buffer.drain(..blank);
            if buffer.is_empty() {
                break;
            }
            match Message::parse_stream(&buffer) {
                Ok((message, used)) => {
                    buffer.drain(..used.min(buffer.len()));
                    if input
                        .send(StreamInput::Message(peer, Box::new(message)))
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Err(ParseError::Incomplete) => {
                    if buffer.len() > MAX_MESSAGE_SIZE {
                        tracing::info!(%peer, "oversize SIP message on TCP; closing");
                        break 'read;
                    }
                    break;
                }
                Err(error) => {
                    // The stream cannot be re-framed after a bad message: answer and close.
                    let _ = input
                        .send(StreamInput::Invalid(peer, Box::new(error)))
                        .await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break 'read;
                }
            }
        }
    }
    let _ = input.send(StreamInput::Closed(peer)).await;
    write_task.abort();
}
