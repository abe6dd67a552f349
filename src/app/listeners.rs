//! The listeners' connection caps: SIP over TCP and TLS, HTTP and ICE-TCP, each under a
//! global and a per-source cap with header and idle deadlines, within the open-file limit.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::{Cidr, Config};
use crate::conn::{ConnectionCaps, LimitedTcp, Timeouts};

/// Put the SIP TCP and HTTP listeners under their connection caps and deadlines, after
/// raising the open-file limit; caps that the limit cannot hold next to a full RTP range are
/// lowered (and said so), so a call never fails for want of a descriptor.
pub fn limit_listeners(
    config: &Config,
    tcp: TcpListener,
    http: TcpListener,
    sip_tls: Option<TcpListener>,
    counters: &Arc<crate::metrics::GatewayCounters>,
) -> (LimitedTcp, LimitedTcp, Option<LimitedTcp>) {
    let security = &config.security;
    let nofile = crate::conn::raise_nofile_limit().unwrap_or(1024);
    // Two descriptors a call for RTP/RTCP, and room for the database, logs and recordings.
    let rtp = u64::from(config.rtp.port_max - config.rtp.port_min) + 1;
    let budget = nofile.saturating_sub(rtp + 256).max(64) as usize;
    let (mut sip_cap, mut http_cap) = (
        security.max_sip_tcp_connections,
        security.max_http_connections,
    );
    if sip_cap + http_cap > budget {
        sip_cap = (budget / 2).max(16);
        http_cap = (budget - budget / 2).max(16);
        tracing::warn!(
            nofile,
            sip_cap,
            http_cap,
            "open-file limit too low for the configured connection caps; caps lowered"
        );
    }
    let timeouts = Timeouts {
        header: Duration::from_secs(security.header_timeout),
        idle: Some(Duration::from_secs(security.idle_timeout)),
    };
    // Trunks' networks and their proxies: never capped, never idled out.
    let trunks: Vec<Cidr> = config
        .trunks
        .iter()
        .flat_map(|t| {
            let proxy = t.proxy().map(|(_, addr, _)| Cidr::host(addr.ip()));
            t.inbound_from
                .iter()
                .filter_map(|s| Cidr::parse(s))
                .chain(proxy)
        })
        .collect();
    let sip_caps = ConnectionCaps::new(
        sip_cap,
        security.max_sip_tcp_per_source,
        trunks,
        Arc::clone(&counters.sip_tcp_connections),
        Arc::clone(&counters.connections_refused),
    );
    let http_caps = ConnectionCaps::new(
        http_cap,
        security.max_http_per_source,
        Vec::new(),
        Arc::clone(&counters.http_connections),
        Arc::clone(&counters.connections_refused),
    );
    // SIP over TLS shares the SIP TCP caps: one budget of SIP connections.
    let sip_tls = sip_tls.map(|l| LimitedTcp::new(l, Arc::clone(&sip_caps), timeouts, "SIP TLS"));
    (
        LimitedTcp::new(tcp, sip_caps, timeouts, "SIP TCP"),
        LimitedTcp::new(http, http_caps, timeouts, "HTTP"),
        sip_tls,
    )
}

/// ICE-TCP connections from browsers: an agent needs one (a few while it reconnects), so the
/// caps are per source as for HTTP; a connection idle past the idle timeout is closed, and
/// one that no peer recognises sooner (`webrtc::tcp::UNRECOGNISED_TIMEOUT`).
pub fn ice_tcp_listener(
    config: &Config,
    listener: TcpListener,
    counters: &Arc<crate::metrics::GatewayCounters>,
) -> LimitedTcp {
    let security = &config.security;
    let caps = ConnectionCaps::new(
        security.max_http_connections,
        security.max_http_per_source,
        Vec::new(),
        Arc::clone(&counters.ice_tcp_connections),
        Arc::clone(&counters.connections_refused),
    );
    let timeouts = Timeouts {
        header: Duration::from_secs(security.header_timeout),
        idle: Some(Duration::from_secs(security.idle_timeout)),
    };
    LimitedTcp::new(listener, caps, timeouts, "WebRTC TCP")
}
