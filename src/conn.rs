//! TCP connections from strangers, bounded: a cap on open connections per listener and per
//! remote address, a deadline for the first message head (slowloris), and an idle timeout.
//! Both the SIP TCP listener and the HTTP listener (page, API, agent WebSockets) accept
//! through `LimitedTcp`; past a cap the connection is closed at once, so idle sockets can
//! never take the descriptors calls need.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::config::Cidr;

/// How many connections one listener keeps open.
///
/// When the listener is full, a new connection takes the place of the oldest one that has
/// not yet sent a complete message head, or failing that of the one silent the longest:
/// strangers holding idle sockets from many addresses cannot lock an agent out of the page,
/// they only push each other out.
#[derive(Debug)]
pub struct ConnectionCaps {
    max_total: usize,
    max_per_source: usize,
    state: Mutex<CapState>,
    /// Sources (trunks) neither capped nor timed out for idleness.
    exempt: Vec<Cidr>,
    epoch: Instant,
    pub gauge: Arc<AtomicI64>,
    pub refused: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct CapState {
    open: HashMap<IpAddr, usize>,
    total: usize,
    /// Every capped connection in the order they came (gone ones are skipped and pruned).
    slots: VecDeque<Weak<Slot>>,
}

/// One connection's place, shared between its `Permit` and its stream.
#[derive(Debug, Default)]
struct Slot {
    source: Option<IpAddr>,
    /// Its first message head is in: evicted only after every connection without one.
    headed: AtomicBool,
    /// Milliseconds since the caps' epoch at its last byte either way.
    last_active: AtomicU64,
    /// Its place went to a newer connection: the stream fails at its next poll.
    evicted: AtomicBool,
    /// Its counts were given back (by eviction or by drop), exactly once.
    released: AtomicBool,
    /// Reads are held to `read_budget` bytes (a WebSocket not yet authenticated).
    read_limited: AtomicBool,
    read_budget: AtomicU64,
    /// The reading and the writing half wait apart (a split stream has both).
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
}

/// A handle on how much a connection may still send: a protocol that authenticates after the
/// connection is up (the agent WebSocket) holds strangers to a few bytes until they have.
#[derive(Debug, Clone)]
pub struct ReadLimit(Arc<Slot>);

impl ReadLimit {
    /// From now on at most `bytes` more are read; past them every read fails.
    pub fn limit(&self, bytes: u64) {
        self.0.read_budget.store(bytes, Relaxed);
        self.0.read_limited.store(true, Relaxed);
    }

    /// Reads are no longer counted.
    pub fn lift(&self) {
        self.0.read_limited.store(false, Relaxed);
    }
}

/// One open connection's place under the caps; dropping it frees the place.
#[derive(Debug)]
pub struct Permit {
    caps: Arc<ConnectionCaps>,
    slot: Arc<Slot>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.caps.gauge.fetch_sub(1, Relaxed);
        if let Ok(mut state) = self.caps.state.lock() {
            ConnectionCaps::release(&mut state, &self.slot);
        }
    }
}

impl ConnectionCaps {
    pub fn new(
        max_total: usize,
        max_per_source: usize,
        exempt: Vec<Cidr>,
        gauge: Arc<AtomicI64>,
        refused: Arc<AtomicU64>,
    ) -> Arc<ConnectionCaps> {
        Arc::new(ConnectionCaps {
            max_total,
            max_per_source,
            state: Mutex::new(CapState::default()),
            exempt,
            epoch: Instant::now(),
            gauge,
            refused,
        })
    }

    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|c| c.contains(ip))
    }

    fn now_ms(&self) -> u64 {
        Instant::now().duration_since(self.epoch).as_millis() as u64
    }

    fn release(state: &mut CapState, slot: &Slot) {
        let Some(ip) = slot.source else {
            return;
        };
        if slot.released.swap(true, Relaxed) {
            return;
        }
        state.total = state.total.saturating_sub(1);
        if let Some(n) = state.open.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.open.remove(&ip);
            }
        }
    }

    /// Give a place to someone new: the oldest connection without a head, else the one
    /// silent the longest.
    fn evict_one(state: &mut CapState) -> bool {
        state
            .slots
            .retain(|w| w.upgrade().is_some_and(|s| !s.released.load(Relaxed)));
        let live: Vec<Arc<Slot>> = state.slots.iter().filter_map(Weak::upgrade).collect();
        let victim = live
            .iter()
            .find(|s| !s.headed.load(Relaxed))
            .or_else(|| live.iter().min_by_key(|s| s.last_active.load(Relaxed)));
        let Some(victim) = victim.cloned() else {
            return false;
        };
        victim.evicted.store(true, Relaxed);
        ConnectionCaps::release(state, &victim);
        victim.read_waker.wake();
        victim.write_waker.wake();
        true
    }

    /// A place for a connection from `ip`, or `None` when its address is at its cap (or
    /// nothing could be evicted).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let now = self.now_ms();
        if self.is_exempt(ip) {
            self.gauge.fetch_add(1, Relaxed);
            return Some(Permit {
                caps: Arc::clone(self),
                slot: Arc::new(Slot {
                    last_active: AtomicU64::new(now),
                    ..Slot::default()
                }),
            });
        }
        let mut state = self.state.lock().ok()?;
        let mine = state.open.get(&ip).copied().unwrap_or(0);
        let full = mine >= self.max_per_source
            || (state.total >= self.max_total && !ConnectionCaps::evict_one(&mut state));
        if full {
            self.refused.fetch_add(1, Relaxed);
            return None;
        }
        *state.open.entry(ip).or_default() += 1;
        state.total += 1;
        let slot = Arc::new(Slot {
            source: Some(ip),
            last_active: AtomicU64::new(now),
            ..Slot::default()
        });
        if state.slots.len() >= 2 * self.max_total {
            state
                .slots
                .retain(|w| w.upgrade().is_some_and(|s| !s.released.load(Relaxed)));
        }
        state.slots.push_back(Arc::downgrade(&slot));
        self.gauge.fetch_add(1, Relaxed);
        Some(Permit {
            caps: Arc::clone(self),
            slot,
        })
    }
}

/// The deadlines a connection lives under.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From accept until the first complete message head (`\r\n\r\n`).
    pub header: Duration,
    /// Without a byte either way; `None` for exempt sources.
    pub idle: Option<Duration>,
}

/// A stream that fails with `TimedOut` once its deadline passes (or its place is given to a
/// newer connection), and holds its `Permit`. Reading and writing each have their own timer
/// and waker, so a split stream's two halves both hear of it.
pub struct Guarded<S> {
    inner: S,
    deadline: Instant,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    timeouts: Timeouts,
    /// The last bytes read while the first head is awaited (a head may straddle reads).
    head_tail: Option<[u8; 3]>,
    permit: Permit,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, permit: Permit, timeouts: Timeouts) -> Guarded<S> {
        let deadline = Instant::now() + timeouts.header;
        Guarded {
            inner,
            deadline,
            read_timer: Box::pin(tokio::time::sleep_until(deadline)),
            write_timer: Box::pin(tokio::time::sleep_until(deadline)),
            timeouts,
            head_tail: Some([0; 3]),
            permit,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn read_limit(&self) -> ReadLimit {
        ReadLimit(Arc::clone(&self.permit.slot))
    }

    /// The first head is in by other means (a TLS handshake finished: what follows is
    /// encrypted, and no head can be seen in it).
    pub fn mark_headed(&mut self) {
        self.head_tail = None;
        self.permit.slot.headed.store(true, Relaxed);
        self.progressed();
    }

    /// Bytes moved: the idle deadline starts again (once the first head is in).
    fn progressed(&mut self) {
        let slot = &self.permit.slot;
        slot.last_active.store(self.permit.caps.now_ms(), Relaxed);
        if self.head_tail.is_none() {
            let idle = self
                .timeouts
                .idle
                .unwrap_or(Duration::from_secs(86_400 * 365));
            // Moving the deadline is cheap; the timers are reset when they would fire.
            self.deadline = Instant::now() + idle;
        }
    }

    /// Look for the end of the first head in what was just read.
    fn scan_head(&mut self, read: &[u8]) {
        let Some(tail) = self.head_tail else {
            return;
        };
        let mut window: Vec<u8> = tail.to_vec();
        window.extend_from_slice(read.get(..read.len().min(64 * 1024)).unwrap_or(read));
        if window.windows(4).any(|w| w == b"\r\n\r\n") {
            self.head_tail = None;
            self.permit.slot.headed.store(true, Relaxed);
        } else {
            let n = window.len();
            self.head_tail = Some([window[n - 3], window[n - 2], window[n - 1]]);
        }
    }

    /// Past its deadline, or its place given to a newer connection. `writing` picks the
    /// half whose timer and waker to use.
    fn expired(&mut self, cx: &mut Context<'_>, writing: bool) -> bool {
        let slot = &self.permit.slot;
        let (waker, timer) = if writing {
            (&slot.write_waker, &mut self.write_timer)
        } else {
            (&slot.read_waker, &mut self.read_timer)
        };
        waker.register(cx.waker());
        if slot.evicted.load(Relaxed) {
            return true;
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= self.deadline {
                return true;
            }
            // Fired for a deadline that has since moved on: wait for the new one.
            timer.as_mut().reset(self.deadline);
        }
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection deadline passed")
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.permit.slot.evicted.load(Relaxed) {
            return Poll::Ready(Err(timed_out()));
        }
        if this.permit.slot.read_limited.load(Relaxed) {
            return this.poll_read_limited(cx, buf);
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = &buf.filled()[before..];
            if !read.is_empty() {
                this.scan_head(read);
                this.progressed();
            }
        }
        this.pending_until_deadline(cx, polled)
    }
}

impl<S: AsyncRead + Unpin> Guarded<S> {
    /// A read under a budget: never more than is left of it, and an error once it is spent,
    /// so a stranger cannot make the server buffer a large message before authenticating.
    /// Only unauthenticated connections come here, so the copy through a small buffer costs
    /// nothing that matters.
    fn poll_read_limited(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let budget = self.permit.slot.read_budget.load(Relaxed);
        if budget == 0 {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "more sent than allowed before authentication",
            )));
        }
        let mut chunk = [0u8; 2048];
        let room = (budget.min(chunk.len() as u64) as usize).min(buf.remaining());
        let mut limited = ReadBuf::new(&mut chunk[..room]);
        let polled = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let read = limited.filled();
        if polled.is_ready() && !read.is_empty() {
            buf.put_slice(read);
            self.permit
                .slot
                .read_budget
                .fetch_sub(read.len() as u64, Relaxed);
            self.progressed();
        }
        self.pending_until_deadline(cx, polled)
    }

    /// A read that would wait fails instead once the connection's deadline has passed.
    fn pending_until_deadline(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<()>>,
    ) -> Poll<std::io::Result<()>> {
        if polled.is_pending() && self.expired(cx, false) {
            return Poll::Ready(Err(timed_out()));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.permit.slot.evicted.load(Relaxed) {
            return Poll::Ready(Err(timed_out()));
        }
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.progressed();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if this.expired(cx, true) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A TCP listener that admits connections under its caps and wraps them in their deadlines.
pub struct LimitedTcp {
    listener: TcpListener,
    caps: Arc<ConnectionCaps>,
    timeouts: Timeouts,
    what: &'static str,
}

impl LimitedTcp {
    pub fn new(
        listener: TcpListener,
        caps: Arc<ConnectionCaps>,
        timeouts: Timeouts,
        what: &'static str,
    ) -> LimitedTcp {
        LimitedTcp {
            listener,
            caps,
            timeouts,
            what,
        }
    }

    /// The next connection under the caps; those over a cap are closed as they come.
    pub async fn accept_limited(&self) -> (Guarded<TcpStream>, SocketAddr) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!(listener = self.what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(permit) = self.caps.admit(peer.ip()) else {
                tracing::debug!(listener = self.what, %peer, "connection over the cap closed");
                drop(stream);
                continue;
            };
            let timeouts = Timeouts {
                idle: if self.caps.is_exempt(peer.ip()) {
                    None
                } else {
                    self.timeouts.idle
                },
                ..self.timeouts
            };
            let _ = stream.set_nodelay(true);
            return (Guarded::new(stream, permit, timeouts), peer);
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl axum::serve::Listener for LimitedTcp {
    type Io = Guarded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.accept_limited().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        LimitedTcp::local_addr(self)
    }
}

/// Raise the open-file limit to what the system allows (the hard limit): every call takes
/// two RTP descriptors, and connections take one each. Returns the limit now in force.
pub fn raise_nofile_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(raised.rlim_cur);
            }
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, per_source: usize) -> Arc<ConnectionCaps> {
        ConnectionCaps::new(
            total,
            per_source,
            vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
            Arc::default(),
            Arc::default(),
        )
    }

    #[test]
    fn caps_per_source_and_in_all_and_frees_on_drop() {
        let c = caps(3, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let a1 = c.admit(a).expect("first");
        let a2 = c.admit(a).expect("second");
        assert!(c.admit(a).is_none(), "per-source cap");
        let b1 = c.admit(b).expect("another source");
        // A trunk is never capped.
        let _t = c.admit("10.1.1.1".parse().expect("ip")).expect("exempt");
        // Full: a newcomer takes the place of the oldest without a head (a1).
        let c1 = c
            .admit("192.0.2.3".parse().expect("ip"))
            .expect("evicts the oldest");
        assert!(a1.slot.evicted.load(Relaxed));
        // When every connection has sent a head, the one silent longest goes.
        for (slot, last) in [(&a2.slot, 30), (&b1.slot, 10), (&c1.slot, 20)] {
            slot.headed.store(true, Relaxed);
            slot.last_active.store(last, Relaxed);
        }
        let _d1 = c
            .admit("192.0.2.4".parse().expect("ip"))
            .expect("evicts the quietest");
        assert!(b1.slot.evicted.load(Relaxed));
        assert!(!c1.slot.evicted.load(Relaxed));
        drop(b1);
        drop(a1);
        // Evicted places were given back once: dropping them later frees nothing twice.
        assert_eq!(c.state.lock().expect("lock").total, 3, "a2, c1 and d1");
        drop(a2);
        assert_eq!(c.state.lock().expect("lock").total, 2);
        assert_eq!(
            c.refused.load(Relaxed),
            1,
            "only the per-source cap refused"
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_connection_without_a_head_times_out_and_an_idle_one_too() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let c = caps(10, 10);
        let timeouts = Timeouts {
            header: Duration::from_secs(10),
            idle: Some(Duration::from_secs(60)),
        };
        let (client, server) = tokio::io::duplex(1024);
        let permit = c.admit("192.0.2.1".parse().expect("ip")).expect("room");
        let mut guarded = Guarded::new(server, permit, timeouts);
        let mut client = client;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let n = guarded.read(&mut buf).await.expect("bytes");
        assert!(n > 0);
        // No end of head within 10 s: the read fails.
        let err = guarded.read(&mut buf).await.expect_err("header deadline");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);

        let (client, server) = tokio::io::duplex(1024);
        let permit = c.admit("192.0.2.1".parse().expect("ip")).expect("room");
        let mut guarded = Guarded::new(server, permit, timeouts);
        let mut client = client;
        client
            .write_all(b"OPTIONS sip:a SIP/2.0\r\n\r\n")
            .await
            .expect("write");
        let n = guarded.read(&mut buf).await.expect("head");
        assert!(n > 0);
        // After the head, silence for the idle timeout ends it; not before.
        let started = Instant::now();
        let err = guarded.read(&mut buf).await.expect_err("idle deadline");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(60));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_limited_connection_reads_its_budget_and_no_more_until_lifted() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let c = caps(10, 10);
        let timeouts = Timeouts {
            header: Duration::from_secs(10),
            idle: Some(Duration::from_secs(60)),
        };
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let permit = c.admit("192.0.2.1".parse().expect("ip")).expect("room");
        let mut guarded = Guarded::new(server, permit, timeouts);
        guarded.mark_headed();
        let limit = guarded.read_limit();
        limit.limit(5000);
        client.write_all(&[7u8; 9000]).await.expect("write");
        let mut buf = vec![0u8; 16 * 1024];
        let mut read = 0;
        let err = loop {
            match guarded.read(&mut buf).await {
                Ok(n) => read += n,
                Err(e) => break e,
            }
        };
        assert_eq!(read, 5000, "exactly the budget");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        // Lifted, what is left is read as usual (nothing was lost, only held back).
        limit.lift();
        let n = guarded.read(&mut buf).await.expect("the rest");
        assert_eq!(n, 4000);
    }
}
