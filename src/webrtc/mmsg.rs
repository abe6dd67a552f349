//! Many datagrams per system call on the agents' shared WebRTC socket: `recvmmsg(2)` takes
//! everything that has arrived (up to a batch) in one call, and `sendmmsg(2)` sends everything
//! one round of peer polls produced. UDP GSO is not used: it sends segments of one buffer to a
//! single destination, and a round's datagrams go to as many browsers as there are peers.
//!
//! Owns the raw message headers only; which peer a datagram is for is the host's business.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams taken or sent per system call.
pub const BATCH_DATAGRAMS: usize = 32;

/// The kernel's view of a batch: a message header, an I/O vector and an address per
/// datagram. Allocated and zeroed once, so a system call only fills in what changes; the
/// boxes never move, so the headers may point into them.
struct Headers {
    names: Box<[libc::sockaddr_storage; BATCH_DATAGRAMS]>,
    iovecs: Box<[libc::iovec; BATCH_DATAGRAMS]>,
    headers: Box<[libc::mmsghdr; BATCH_DATAGRAMS]>,
}

// SAFETY: the raw pointers in `headers` point only into this struct's own boxes (and, for a
// receive batch, into its buffers), which move with it between threads.
unsafe impl Send for Headers {}

impl Headers {
    fn new() -> Headers {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut h = unsafe {
            Headers {
                names: Box::new(zeroed()),
                iovecs: Box::new(zeroed()),
                headers: Box::new(zeroed()),
            }
        };
        for i in 0..BATCH_DATAGRAMS {
            h.headers[i].msg_hdr.msg_name = (&mut h.names[i] as *mut libc::sockaddr_storage).cast();
            h.headers[i].msg_hdr.msg_iov = &mut h.iovecs[i];
            h.headers[i].msg_hdr.msg_iovlen = 1;
        }
        h
    }
}

/// Room for one batch of received datagrams and where each came from.
pub struct RecvBatch {
    buffers: Vec<u8>,
    datagram_max: usize,
    kernel: Headers,
    lens: [usize; BATCH_DATAGRAMS],
    sources: [Option<SocketAddr>; BATCH_DATAGRAMS],
    count: usize,
}

impl RecvBatch {
    /// Buffers for `BATCH_DATAGRAMS` datagrams of up to `datagram_max` bytes (longer ones are
    /// cut, as `recv_from` would cut them).
    pub fn new(datagram_max: usize) -> RecvBatch {
        let mut batch = RecvBatch {
            buffers: vec![0; datagram_max * BATCH_DATAGRAMS],
            datagram_max,
            kernel: Headers::new(),
            lens: [0; BATCH_DATAGRAMS],
            sources: [None; BATCH_DATAGRAMS],
            count: 0,
        };
        // The buffers are never resized: the vectors may point into them for good.
        for (i, chunk) in batch.buffers.chunks_exact_mut(datagram_max).enumerate() {
            batch.kernel.iovecs[i].iov_base = chunk.as_mut_ptr().cast();
            batch.kernel.iovecs[i].iov_len = chunk.len();
        }
        batch
    }

    /// The datagrams of the last `recv`, in arrival order.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (0..self.count).filter_map(move |i| {
            let start = i * self.datagram_max;
            let bytes = self.buffers.get(start..start + self.lens[i])?;
            Some((self.sources[i]?, bytes))
        })
    }

    /// Take what has arrived without waiting: the number of datagrams, or `WouldBlock` when
    /// there is none (which clears the socket's readiness, so awaiting it again is right).
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        let n = socket.try_io(Interest::READABLE, || self.recvmmsg(socket.as_raw_fd()))?;
        self.count = n;
        Ok(n)
    }

    fn recvmmsg(&mut self, fd: i32) -> io::Result<usize> {
        let k = &mut self.kernel;
        for header in k.headers.iter_mut() {
            // The kernel writes back the length of each address it fills in.
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
        }
        // SAFETY: every header points at a live name and a live buffer of the length given
        // (set up in `new`, owned by `self`), which outlive the call; the count is the
        // headers' length.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                k.headers.as_mut_ptr(),
                BATCH_DATAGRAMS as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = (k.headers[i].msg_len as usize).min(self.datagram_max);
            self.sources[i] = socket_addr(&k.names[i]);
        }
        Ok(n)
    }
}

/// Datagrams waiting to be sent, with the buffers str0m handed over (no copies).
pub struct SendQueue {
    datagrams: Vec<(SocketAddr, Vec<u8>)>,
    kernel: Headers,
}

impl Default for SendQueue {
    fn default() -> SendQueue {
        SendQueue {
            datagrams: Vec::new(),
            kernel: Headers::new(),
        }
    }
}

impl SendQueue {
    pub fn push(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        self.datagrams.push((destination, contents));
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Send everything queued, a batch per system call, waiting while the socket's buffer is
    /// full. A datagram the kernel refuses outright (an unreachable address) is dropped, as a
    /// lost packet would be; the rest still go.
    pub async fn flush(&mut self, socket: &UdpSocket) {
        let mut sent = 0;
        while sent < self.datagrams.len() {
            let batch = &self.datagrams[sent..];
            let kernel = &mut self.kernel;
            match socket.try_io(Interest::WRITABLE, || {
                sendmmsg(socket.as_raw_fd(), kernel, batch)
            }) {
                Ok(n) => sent += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::trace!(error = %e, destination = %batch[0].0, "WebRTC send failed");
                    sent += 1;
                }
            }
        }
        self.datagrams.clear();
    }
}

fn sendmmsg(
    fd: i32,
    kernel: &mut Headers,
    datagrams: &[(SocketAddr, Vec<u8>)],
) -> io::Result<usize> {
    let count = datagrams.len().min(BATCH_DATAGRAMS);
    for (i, (destination, contents)) in datagrams.iter().take(count).enumerate() {
        kernel.headers[i].msg_hdr.msg_namelen =
            write_socket_addr(*destination, &mut kernel.names[i]);
        kernel.iovecs[i].iov_base = contents.as_ptr() as *mut libc::c_void;
        kernel.iovecs[i].iov_len = contents.len();
    }
    // SAFETY: the first `count` headers point at live names (set up in `Headers::new`) and at
    // the datagrams' buffers (only read by the kernel), which all outlive the call.
    let n = unsafe {
        libc::sendmmsg(
            fd,
            kernel.headers.as_mut_ptr(),
            count as u32,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn socket_addr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let v4 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                u32::from_be(v6.sin6_flowinfo),
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Fill `name` with `addr`; the length to give the kernel.
fn write_socket_addr(addr: SocketAddr, name: &mut libc::sockaddr_storage) -> u32 {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let v4 =
                unsafe { &mut *(name as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            v4.sin_family = libc::AF_INET as libc::sa_family_t;
            v4.sin_port = a.port().to_be();
            v4.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            // The storage is reused: what an earlier IPv6 address left there is cleared.
            v4.sin_zero = [0; 8];
            size_of::<libc::sockaddr_in>() as u32
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 =
                unsafe { &mut *(name as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            v6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            v6.sin6_port = a.port().to_be();
            v6.sin6_flowinfo = a.flowinfo().to_be();
            v6.sin6_addr.s6_addr = a.ip().octets();
            v6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_the_kernel_form() {
        for addr in [
            "127.0.0.1:5004".parse::<SocketAddr>().unwrap(),
            "[::1]:40000".parse().unwrap(),
            "[fe80::1%2]:9".parse().unwrap(),
        ] {
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut name: libc::sockaddr_storage = unsafe { zeroed() };
            write_socket_addr(addr, &mut name);
            assert_eq!(socket_addr(&name), Some(addr));
        }
    }

    #[tokio::test]
    async fn a_batch_goes_out_in_one_call_and_comes_in_in_one() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut queue = SendQueue::default();
        for i in 0..40u8 {
            let to = if i % 2 == 0 { &b } else { &c };
            queue.push(to.local_addr().unwrap(), vec![i; 100 + usize::from(i)]);
        }
        queue.flush(&a).await;
        assert!(queue.is_empty());
        let mut batch = RecvBatch::new(2000);
        let mut got = Vec::new();
        while got.len() < 20 {
            b.readable().await.unwrap();
            if batch.recv(&b).is_ok() {
                for (from, bytes) in batch.datagrams() {
                    assert_eq!(from, a.local_addr().unwrap());
                    got.push((bytes[0], bytes.len()));
                }
            }
        }
        let sent: Vec<(u8, usize)> = (0..40u8)
            .filter(|i| i % 2 == 0)
            .map(|i| (i, 100 + usize::from(i)))
            .collect();
        assert_eq!(got, sent, "every datagram, whole and in order");
        assert!(
            matches!(batch.recv(&b), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "nothing more"
        );
    }
}
