//! How far behind the signalling task is, measured where it shows: the time a SIP datagram
//! waited in the socket's queue, from the kernel's receive timestamp (`SO_TIMESTAMPNS`) to the
//! moment the task reads it. From that delay `LoadGauge` sets how many new calls a second the
//! gateway admits; the rest get a stateless 503 with Retry-After, so the calls it admitted keep
//! completing instead of every call timing out together.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Queueing delay that counts as congestion: half of SIP's T1 (500 ms), after which peers
/// start retransmitting and every late answer adds load.
pub const SHED_ABOVE: Duration = Duration::from_millis(250);

/// The SIP socket's receive buffer: a burst queues (and shows as delay) instead of being
/// dropped. The kernel caps it at `net.core.rmem_max` unless the process may force it.
const RECEIVE_BUFFER: libc::c_int = 8 * 1024 * 1024;

fn set_option(socket: &UdpSocket, option: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
    // SAFETY: the option value is a live c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Ask the kernel to stamp every datagram with its arrival time and to report the datagrams
/// it dropped for want of room, and give the socket a large receive buffer.
pub fn prepare_socket(socket: &UdpSocket) -> std::io::Result<()> {
    if set_option(socket, libc::SO_RCVBUFFORCE, RECEIVE_BUFFER).is_err() {
        let _ = set_option(socket, libc::SO_RCVBUF, RECEIVE_BUFFER);
    }
    set_option(socket, libc::SO_RXQ_OVFL, 1)?;
    set_option(socket, libc::SO_TIMESTAMPNS, 1)
}

/// One datagram read without waiting.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub source: SocketAddr,
    /// How long it sat in the queue (`None` when the kernel gave no timestamp).
    pub waited: Option<Duration>,
    /// Datagrams the kernel dropped on this socket since it opened, as of this one (the
    /// kernel says nothing while it is zero).
    pub dropped: Option<u32>,
}

/// One datagram without waiting; `WouldBlock` when the queue is empty.
pub fn try_recv_timed(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<Received> {
    socket.try_io(Interest::READABLE, || recv_timed(socket, buf))
}

fn recv_timed(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<Received> {
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
        let mut dropped = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL {
                dropped = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<u32>(),
                ));
            }
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
        Ok(Received {
            len: n as usize,
            source,
            waited,
            dropped,
        })
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

/// How many new calls a second to admit, adjusted every 100 ms from the worst queueing delay
/// seen (additive increase, multiplicative decrease, as TCP finds a link's rate): while
/// datagrams wait longer than `SHED_ABOVE` (or the kernel drops them), the rate drops to 70 %
/// of what was admitted; otherwise it grows by 5 % a window until no limit is needed. A delay
/// past `SHED_ALL_ABOVE` sheds every new call at once. Admitted calls bring their own later work
/// (ACK, BYE, media), which a plain threshold on the delay reacts to too late.
#[derive(Debug)]
pub struct LoadGauge {
    rate: Option<f64>,
    shed_all: bool,
    window_start: Option<std::time::Instant>,
    window_worst: Duration,
    admitted_at_start: u64,
    /// The kernel's drop count at the window's start, and now.
    dropped_at_start: Option<u32>,
    dropped: Option<u32>,
    /// The last cut: the next waits until the queue it saw has had time to drain.
    last_cut: Option<std::time::Instant>,
    last_shed_log: Option<std::time::Instant>,
    /// Times the gateway started limiting new calls since start.
    pub episodes: u64,
}

/// Delay past which every new call is shed until the queue is back under `SHED_ABOVE`.
pub const SHED_ALL_ABOVE: Duration = Duration::from_millis(400);
/// The rate never drops below this many calls a second while limited.
const MIN_RATE: f64 = 5.0;
const WINDOW: Duration = Duration::from_millis(100);
/// Datagrams read in one go before a delay counts as queueing.
pub const MIN_QUEUE: usize = 16;
/// Cuts at most this often: a queue takes a while to drain after one.
const CUT_SPACING: Duration = Duration::from_millis(300);

impl Default for LoadGauge {
    fn default() -> Self {
        LoadGauge {
            rate: None,
            shed_all: false,
            window_start: None,
            window_worst: Duration::ZERO,
            admitted_at_start: 0,
            dropped_at_start: None,
            dropped: None,
            last_cut: None,
            last_shed_log: None,
            episodes: 0,
        }
    }
}

/// What the SIP core is told to do with new calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admission {
    /// New calls a second at most (`None`: no limit).
    pub rate: Option<f64>,
    /// Shed every new call now.
    pub shed_all: bool,
}

impl LoadGauge {
    /// A datagram waited `waited` and was the `queued`th read in one go (the ones before it
    /// were queued with it), the kernel has dropped `dropped` so far, and `admitted` is the
    /// core's count of new calls admitted so far. Returns the admission the core should apply
    /// from now. A delay counts only with a queue behind it: one late datagram on a quiet
    /// socket says the process was not scheduled, not that SIP is more than it can serve.
    /// Drops count as the worst delay: the queue overflowed.
    pub fn observe(
        &mut self,
        now: std::time::Instant,
        waited: Duration,
        queued: usize,
        dropped: Option<u32>,
        admitted: u64,
    ) -> Admission {
        let waited = if queued >= MIN_QUEUE {
            waited
        } else {
            waited.min(SHED_ABOVE)
        };
        let mut start = *self.window_start.get_or_insert(now);
        if now.saturating_duration_since(start) > WINDOW * 10 {
            // Quiet for a while: whatever limit held then says nothing about the load now.
            if self.rate.take().is_some() {
                tracing::info!("SIP quiet: admitting every new call again");
            }
            self.shed_all = false;
            self.window_start = Some(now);
            self.window_worst = Duration::ZERO;
            self.admitted_at_start = admitted;
            self.dropped_at_start = None;
            start = now;
        }
        self.window_worst = self.window_worst.max(waited);
        if dropped.is_some() {
            self.dropped = dropped;
        }
        if self.dropped_at_start.is_none() {
            self.dropped_at_start = self.dropped;
        }
        if waited > SHED_ALL_ABOVE && !self.shed_all {
            self.shed_all = true;
            // Once a second at most: under overload this flips with every drained batch.
            if self
                .last_shed_log
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
            {
                self.last_shed_log = Some(now);
                tracing::warn!(
                    waited_ms = waited.as_millis() as u64,
                    "SIP is queueing: shedding every new call with 503"
                );
            }
        } else if self.shed_all && waited <= SHED_ABOVE {
            self.shed_all = false;
        }
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW {
            let dropped_now = self.dropped.unwrap_or(0) != self.dropped_at_start.unwrap_or(0);
            if dropped_now {
                self.window_worst = self.window_worst.max(SHED_ALL_ABOVE);
            }
            let admitted_rate =
                admitted.saturating_sub(self.admitted_at_start) as f64 / elapsed.as_secs_f64();
            let settled = self
                .last_cut
                .is_none_or(|t| now.saturating_duration_since(t) >= CUT_SPACING);
            if self.window_worst > SHED_ABOVE && settled {
                // From the limit in force (a window spent shedding admits next to nothing,
                // which says nothing about capacity), or at first from what got through.
                let base = self.rate.unwrap_or(admitted_rate);
                self.last_cut = Some(now);
                if self.rate.is_none() {
                    self.episodes += 1;
                    tracing::warn!(
                        waited_ms = self.window_worst.as_millis() as u64,
                        admitted_per_s = admitted_rate as u64,
                        "SIP is queueing: limiting new calls, the rest get 503"
                    );
                }
                self.rate = Some((base * 0.7).max(MIN_RATE));
            } else if self.window_worst > SHED_ABOVE {
                // Still draining what the last cut saw: hold.
            } else if let Some(rate) = self.rate {
                {
                    let grown = rate + (rate * 0.05).max(1.0);
                    // Offered load well under the limit: the limit no longer matters.
                    if grown > admitted_rate * 4.0 + 100.0 {
                        self.rate = None;
                        tracing::info!("SIP queue drained: admitting every new call again");
                    } else {
                        self.rate = Some(grown);
                    }
                }
            }
            self.window_start = Some(now);
            self.window_worst = Duration::ZERO;
            self.admitted_at_start = admitted;
            self.dropped_at_start = self.dropped;
        }
        Admission {
            rate: self.rate,
            shed_all: self.shed_all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_late_datagram_on_a_quiet_socket_is_not_overload() {
        let mut g = LoadGauge::default();
        let t0 = std::time::Instant::now();
        let ms = Duration::from_millis;
        g.observe(t0, ms(1), 1, None, 0);
        let a = g.observe(t0 + ms(150), ms(900), 1, None, 1);
        assert_eq!(
            a,
            Admission {
                rate: None,
                shed_all: false
            }
        );
        let a = g.observe(t0 + ms(300), ms(900), 1, None, 2);
        assert_eq!(a.rate, None);
    }

    #[test]
    fn the_call_rate_backs_off_under_delay_and_recovers_after() {
        let mut g = LoadGauge::default();
        let t0 = std::time::Instant::now();
        let ms = Duration::from_millis;
        // 1,000 calls a second admitted, then the queue builds up.
        let a = g.observe(t0, ms(5), 64, None, 0);
        assert_eq!(a.rate, None);
        let a = g.observe(t0 + ms(100), ms(300), 64, None, 100);
        assert_eq!(a.rate, Some(700.0), "70 % of what was admitted");
        assert!(!a.shed_all);
        let a = g.observe(t0 + ms(150), ms(500), 64, None, 150);
        assert!(a.shed_all, "far behind: shed everything");
        let a = g.observe(t0 + ms(200), ms(300), 64, None, 160);
        assert_eq!(
            a.rate,
            Some(700.0),
            "the queue is still draining: no second cut yet"
        );
        let a = g.observe(t0 + ms(210), ms(50), 64, None, 161);
        assert!(!a.shed_all);
        let a = g.observe(t0 + ms(400), ms(300), 64, None, 170);
        assert_eq!(
            a.rate.map(f64::round),
            Some(490.0),
            "70 % of the limit in force, not of the 90/s let in"
        );
        // The queue drains: the limit grows back, then goes.
        let mut admitted = 170;
        let mut at = t0 + ms(400);
        let mut rate = a.rate;
        for _ in 0..200 {
            at += ms(100);
            admitted += 5;
            rate = g.observe(at, ms(1), 64, Some(0), admitted).rate;
            if rate.is_none() {
                break;
            }
        }
        assert_eq!(rate, None, "no limit once the load is well under it");
        assert_eq!(g.episodes, 1);
    }

    #[tokio::test]
    async fn datagrams_carry_how_long_they_waited() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        prepare_socket(&server).expect("timestamps");
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
            let got = try_recv_timed(&server, &mut buf).expect("a datagram");
            assert_eq!(&buf[..got.len], b"hello");
            assert_eq!(got.source, client.local_addr().expect("addr"));
            // The kernel adds the drop count only once it is above zero.
            assert_eq!(got.dropped.unwrap_or(0), 0, "nothing dropped");
            if got.waited.is_some_and(|w| w >= Duration::from_millis(25)) {
                waited = got.waited;
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
