//! How far behind the signalling task is, measured where it shows: the time a SIP datagram
//! waited in the socket's queue, from the kernel's receive timestamp (`SO_TIMESTAMPNS`) to the
//! moment the task reads it. Past a threshold the gateway is overloaded and sheds new calls
//! (a stateless 503 with Retry-After) until the queue has drained, so the calls it admitted
//! keep completing instead of every call timing out together.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Queueing delay that starts shedding, and the one that ends it.
pub const SHED_ABOVE: Duration = Duration::from_millis(100);
pub const ADMIT_BELOW: Duration = Duration::from_millis(20);

/// Ask the kernel to stamp every datagram with its arrival time.
pub fn enable_timestamps(socket: &UdpSocket) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a live c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One datagram without waiting: its length, source, and how long it sat in the queue
/// (`None` when the kernel gave no timestamp). `WouldBlock` when the queue is empty.
pub fn try_recv_timed(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<Duration>)> {
    socket.try_io(Interest::READABLE, || recv_timed(socket, buf))
}

fn recv_timed(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<Duration>)> {
    // SAFETY: every pointer handed to recvmsg points into a live local or `buf`, with its
    // true length; the kernel writes at most those lengths, and the control messages are
    // read back only through the CMSG macros over the length it reported.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut storage as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let source = socket_addr(&storage).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "unknown address family")
        })?;
        let mut waited = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let stamp: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let arrived = Duration::new(stamp.tv_sec as u64, stamp.tv_nsec as u32);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                waited = Some(now.saturating_sub(arrived));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n as usize, source, waited))
    }
}

fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let v4: &libc::sockaddr_in =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let v6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(v6.sin6_port))))
        }
        _ => None,
    }
}

/// Overloaded or not, with hysteresis so that one slow datagram does not flip it.
#[derive(Debug, Default)]
pub struct LoadGauge {
    overloaded: bool,
    /// Calls shed since start, for `/metrics` and the log.
    pub shed_episodes: u64,
}

impl LoadGauge {
    /// A datagram waited `waited`; whether the gateway is overloaded now.
    pub fn observe(&mut self, waited: Duration) -> bool {
        if !self.overloaded && waited > SHED_ABOVE {
            self.overloaded = true;
            self.shed_episodes += 1;
            tracing::warn!(
                waited_ms = waited.as_millis() as u64,
                "SIP is queueing: shedding new calls with 503 until it drains"
            );
        } else if self.overloaded && waited < ADMIT_BELOW {
            self.overloaded = false;
            tracing::info!("SIP queue drained: admitting new calls again");
        }
        self.overloaded
    }

    pub fn overloaded(&self) -> bool {
        self.overloaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_above_the_threshold_until_the_queue_drains() {
        let mut g = LoadGauge::default();
        assert!(!g.observe(Duration::from_millis(5)));
        assert!(!g.observe(Duration::from_millis(90)));
        assert!(g.observe(Duration::from_millis(150)));
        assert!(g.observe(Duration::from_millis(60)), "still behind");
        assert!(!g.observe(Duration::from_millis(10)), "drained");
        assert_eq!(g.shed_episodes, 1);
    }

    #[tokio::test]
    async fn datagrams_carry_how_long_they_waited() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        enable_timestamps(&server).expect("timestamps");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        // The kernel turns receive timestamps on a moment after the first socket asks (a
        // deferred switch): the first datagrams may come unstamped or stamped late.
        let mut buf = [0u8; 64];
        let mut waited = None;
        for _ in 0..20 {
            client
                .send_to(b"hello", server.local_addr().expect("addr"))
                .await
                .expect("send");
            std::thread::sleep(Duration::from_millis(30));
            server.readable().await.expect("readable");
            let (n, from, w) = try_recv_timed(&server, &mut buf).expect("a datagram");
            assert_eq!(&buf[..n], b"hello");
            assert_eq!(from, client.local_addr().expect("addr"));
            if w.is_some_and(|w| w >= Duration::from_millis(25)) {
                waited = w;
                break;
            }
        }
        assert!(waited.is_some(), "the time in the queue is measured");
        assert!(matches!(
            try_recv_timed(&server, &mut buf).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock)
        ));
    }
}
