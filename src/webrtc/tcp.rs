//! ICE over TCP (RFC 6544) for browsers whose network blocks UDP: a passive TCP candidate on
//! `webrtc.tcp_listen`, each connection carrying STUN, DTLS and SRTP packets framed by a
//! 16-bit length (RFC 4571). This module only moves frames between connections and the
//! WebRTC task; which peer a frame belongs to is str0m's business there.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::conn::LimitedTcp;

/// Largest frame accepted: STUN, DTLS records and SRTP packets of audio all fit well within;
/// a connection announcing more is not speaking ICE-TCP and is closed.
pub const MAX_FRAME: usize = 4096;
/// Frames queued toward one connection; when full (a stalled browser) a frame is dropped,
/// as a congested UDP path would.
const WRITE_CAPACITY: usize = 256;
/// A connection no peer recognised within this long is closed (a port scan, a stranger).
pub const UNRECOGNISED_TIMEOUT: Duration = Duration::from_secs(10);

/// From the connections to the WebRTC task.
#[derive(Debug)]
pub enum TcpEvent {
    Opened {
        remote: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    Frame {
        remote: SocketAddr,
        bytes: Vec<u8>,
    },
    Closed {
        remote: SocketAddr,
    },
}

/// Accept connections under the listener's caps, each served by a task of its own.
pub async fn accept(listener: LimitedTcp, events: mpsc::Sender<TcpEvent>) {
    loop {
        let (mut stream, remote) = listener.accept_limited().await;
        // No text head to wait for: the idle timeout and the task's check that a peer
        // recognises the connection bound it instead.
        stream.mark_headed();
        let (writer, queue) = mpsc::channel(WRITE_CAPACITY);
        if events
            .send(TcpEvent::Opened { remote, writer })
            .await
            .is_err()
        {
            return;
        }
        tokio::spawn(serve(stream, remote, queue, events.clone()));
    }
}

/// One connection: frames in to the task, frames out from `queue`, until either side ends
/// (the task drops the connection's writer to close it).
async fn serve<S>(
    stream: S,
    remote: SocketAddr,
    mut queue: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<TcpEvent>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let reading = async {
        let mut length = [0u8; 2];
        loop {
            if reader.read_exact(&mut length).await.is_err() {
                return;
            }
            let n = usize::from(u16::from_be_bytes(length));
            if n == 0 || n > MAX_FRAME {
                tracing::debug!(%remote, frame = n, "ICE-TCP frame out of bounds; closing");
                return;
            }
            let mut bytes = vec![0u8; n];
            if reader.read_exact(&mut bytes).await.is_err() {
                return;
            }
            if events
                .send(TcpEvent::Frame { remote, bytes })
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let writing = async {
        while let Some(frame) = queue.recv().await {
            let Ok(n) = u16::try_from(frame.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(frame.len() + 2);
            framed.extend_from_slice(&n.to_be_bytes());
            framed.extend_from_slice(&frame);
            if writer.write_all(&framed).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = reading => {}
        () = writing => {}
    }
    let _ = events.send(TcpEvent::Closed { remote }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames go both ways with their length prefix; an oversized one closes the connection.
    #[tokio::test]
    async fn frames_are_length_prefixed_both_ways_and_a_huge_one_closes() {
        let (ours, mut theirs) = tokio::io::duplex(65_536);
        let (events_tx, mut events) = mpsc::channel(16);
        let (writer, queue) = mpsc::channel(16);
        let remote: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let task = tokio::spawn(serve(ours, remote, queue, events_tx));
        theirs
            .write_all(&[0, 3, b'a', b'b', b'c'])
            .await
            .expect("write");
        match events.recv().await {
            Some(TcpEvent::Frame { bytes, .. }) => assert_eq!(bytes, b"abc"),
            other => panic!("{other:?}"),
        }
        writer.send(b"xy".to_vec()).await.expect("queue");
        let mut got = [0u8; 4];
        theirs.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, &[0, 2, b'x', b'y']);
        theirs.write_all(&[0xff, 0xff]).await.expect("write");
        match events.recv().await {
            Some(TcpEvent::Closed { .. }) => {}
            other => panic!("{other:?}"),
        }
        task.await.expect("task ends");
    }
}
