//! Who may make the SIP core do work, decided per source address before a request costs
//! anything: trusted sources (trunks by address, peers that authenticated lately), a
//! per-source request-rate limit for everyone else (Kamailio's `pike` is the model: past the
//! limit, drop silently), bans after repeated authentication failures, and a User-Agent
//! blocklist for the scanners that sweep every public port 5060. Sans-IO: the time comes in,
//! verdicts go out, and every table has a bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// An IP network in CIDR form (trunk sources, trusted networks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: IpAddr,
    pub prefix: u8,
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        // An IPv4-mapped network (as dual-stack logs print addresses) is the IPv4 network it
        // maps; a mapped prefix shorter than the mapping itself names no IPv4 network.
        if let IpAddr::V6(v6) = addr {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return prefix.checked_sub(96).map(|prefix| Cidr {
                    network: IpAddr::V4(v4),
                    prefix,
                });
            }
        }
        Some(Cidr {
            network: addr,
            prefix,
        })
    }

    /// The network of exactly one address.
    pub fn host(ip: IpAddr) -> Cidr {
        let ip = canonical(ip);
        Cidr {
            network: ip,
            prefix: if ip.is_ipv4() { 32 } else { 128 },
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The scanners' own names (sipvicious, SIPVicious-derived tools, and the usual sweepers).
pub const DEFAULT_USER_AGENT_BLOCKLIST: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipsak-scan",
    "iWar",
    "sundayddr",
    "VaxSIPUserAgent",
    "VaxIPUserAgent",
    "SimpleSIP",
    "smap",
    "PortSIP VoIP SDK",
];

#[derive(Debug, Clone)]
pub struct GuardSettings {
    /// Sources trusted outright (the trunks' networks and proxies): no rate limit.
    pub trusted: Vec<Cidr>,
    /// Requests a second one untrusted source may send, sustained.
    pub rate: u32,
    /// Requests an untrusted source may send at once before the rate applies.
    pub burst: u32,
    /// Authentication failures from one source (within `failure_window`) before it is banned.
    pub auth_failures: u32,
    pub failure_window: Duration,
    /// How long a banned source is answered with nothing.
    pub ban: Duration,
    /// How long a source that authenticated is trusted like a trunk.
    pub authenticated_for: Duration,
    /// Case-insensitive substrings of User-Agent values answered with nothing.
    pub user_agent_blocklist: Vec<String>,
    /// Untrusted sources tracked at once; past it, new ones are dropped until old ones age.
    pub max_sources: usize,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            trusted: Vec::new(),
            rate: 20,
            burst: 40,
            auth_failures: 5,
            failure_window: Duration::from_secs(600),
            ban: Duration::from_secs(900),
            authenticated_for: Duration::from_secs(600),
            user_agent_blocklist: DEFAULT_USER_AGENT_BLOCKLIST
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_sources: 65_536,
        }
    }
}

/// Why a packet or request was dropped unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    RateLimited,
    Banned,
    BlockedUserAgent,
    /// Too many untrusted sources at once to keep state for another.
    SourceTableFull,
    /// Too many live transactions (global, or this untrusted source's share).
    TransactionLimit,
    /// A response from somewhere its request did not go.
    ForeignResponse,
    /// An in-dialog request (or CANCEL, ACK) from a source the dialog does not belong to.
    ForeignInDialog,
    /// A stranger's request outside a dialog while overload control limits new calls
    /// (trunks come first).
    Overload,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::RateLimited,
        DropReason::Banned,
        DropReason::BlockedUserAgent,
        DropReason::SourceTableFull,
        DropReason::TransactionLimit,
        DropReason::ForeignResponse,
        DropReason::ForeignInDialog,
        DropReason::Overload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::RateLimited => "rate_limited",
            DropReason::Banned => "banned",
            DropReason::BlockedUserAgent => "user_agent",
            DropReason::SourceTableFull => "source_table_full",
            DropReason::TransactionLimit => "transaction_limit",
            DropReason::ForeignResponse => "foreign_response",
            DropReason::ForeignInDialog => "foreign_in_dialog",
            DropReason::Overload => "overload",
        }
    }

    fn index(self) -> usize {
        DropReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is in ALL")
    }
}

/// What was dropped, by reason, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    pub fn add(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }
}

#[derive(Debug)]
struct SourceState {
    tokens: f64,
    refilled: Instant,
    failures: u32,
    first_failure: Instant,
    banned_until: Option<Instant>,
    authenticated_until: Option<Instant>,
}

impl SourceState {
    fn new(now: Instant, burst: u32) -> SourceState {
        SourceState {
            tokens: f64::from(burst),
            refilled: now,
            failures: 0,
            first_failure: now,
            banned_until: None,
            authenticated_until: None,
        }
    }

    /// Nothing about this source is worth remembering any more.
    fn forgettable(&self, now: Instant, settings: &GuardSettings) -> bool {
        let refilled = self.tokens + elapsed_secs(self.refilled, now) * f64::from(settings.rate)
            >= f64::from(settings.burst);
        refilled
            && self.banned_until.is_none_or(|t| t <= now)
            && self.authenticated_until.is_none_or(|t| t <= now)
            && (self.failures == 0
                || now.duration_since(self.first_failure) > settings.failure_window)
    }
}

/// The key a source is tracked under: an IPv4 address, or an IPv6 /64 (one host holds a
/// whole /64, and would otherwise have 2^64 fresh rate limits).
fn source_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

fn elapsed_secs(since: Instant, now: Instant) -> f64 {
    now.saturating_duration_since(since).as_secs_f64()
}

/// A source the guard has just banned: the shell logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Banned {
    pub source: IpAddr,
    pub until: Instant,
}

pub struct FloodGuard {
    settings: GuardSettings,
    sources: HashMap<IpAddr, SourceState>,
    /// When the table was last swept for forgettable sources (at most once a second).
    swept: Option<Instant>,
    drops: DropCounts,
}

impl FloodGuard {
    pub fn new(settings: GuardSettings) -> FloodGuard {
        FloodGuard {
            settings,
            sources: HashMap::new(),
            swept: None,
            drops: DropCounts::default(),
        }
    }

    pub fn settings(&self) -> &GuardSettings {
        &self.settings
    }

    /// A trunk's address, or a peer that authenticated lately.
    pub fn is_trusted(&self, now: Instant, ip: IpAddr) -> bool {
        self.settings.trusted.iter().any(|c| c.contains(ip))
            || self
                .sources
                .get(&source_key(ip))
                .and_then(|s| s.authenticated_until)
                .is_some_and(|t| t > now)
    }

    pub fn drops(&self) -> DropCounts {
        self.drops
    }

    /// Count a drop decided elsewhere (transaction limits, foreign responses).
    pub fn count(&mut self, reason: DropReason) {
        self.drops.add(reason);
    }

    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// A packet arrived from `ip`: may it be looked at? Costs one hash lookup.
    pub fn admit_packet(&mut self, now: Instant, ip: IpAddr) -> Result<(), DropReason> {
        if self.settings.trusted.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        let ip = source_key(ip);
        let rate = f64::from(self.settings.rate);
        let burst = f64::from(self.settings.burst);
        let verdict = match self.source(now, ip) {
            None => Err(DropReason::SourceTableFull),
            Some(state) => {
                if state.authenticated_until.is_some_and(|t| t > now) {
                    Ok(())
                } else if state.banned_until.is_some_and(|t| t > now) {
                    Err(DropReason::Banned)
                } else {
                    state.tokens =
                        (state.tokens + elapsed_secs(state.refilled, now) * rate).min(burst);
                    state.refilled = now;
                    if state.tokens >= 1.0 {
                        state.tokens -= 1.0;
                        Ok(())
                    } else {
                        Err(DropReason::RateLimited)
                    }
                }
            }
        };
        if let Err(reason) = verdict {
            self.drops.add(reason);
        }
        verdict
    }

    /// A parsed request from an untrusted source: is its User-Agent a scanner's?
    pub fn admit_user_agent(&mut self, user_agent: Option<&str>) -> Result<(), DropReason> {
        let Some(agent) = user_agent else {
            return Ok(());
        };
        let agent = agent.to_ascii_lowercase();
        if self
            .settings
            .user_agent_blocklist
            .iter()
            .any(|b| !b.is_empty() && agent.contains(&b.to_ascii_lowercase()))
        {
            self.drops.add(DropReason::BlockedUserAgent);
            return Err(DropReason::BlockedUserAgent);
        }
        Ok(())
    }

    /// A wrong credential from `ip`; `Some` when that makes it banned. A source that
    /// authenticated lately is neither banned nor distrusted by it: over UDP anyone can send
    /// wrong credentials in a trunk's name, and must not get the trunk banned that way.
    pub fn auth_failed(&mut self, now: Instant, ip: IpAddr) -> Option<Banned> {
        let ip = source_key(ip);
        let (limit, window, ban) = (
            self.settings.auth_failures,
            self.settings.failure_window,
            self.settings.ban,
        );
        let state = self.source(now, ip)?;
        if state.authenticated_until.is_some_and(|t| t > now) {
            return None;
        }
        if state.failures == 0 || now.duration_since(state.first_failure) > window {
            state.failures = 0;
            state.first_failure = now;
        }
        state.failures += 1;
        if state.failures >= limit.max(1) {
            state.failures = 0;
            let until = now + ban;
            state.banned_until = Some(until);
            return Some(Banned { source: ip, until });
        }
        None
    }

    /// `ip` answered a challenge correctly: trust it like a trunk for a while.
    pub fn authenticated(&mut self, now: Instant, ip: IpAddr) {
        let ip = source_key(ip);
        let trust = self.settings.authenticated_for;
        if let Some(state) = self.source(now, ip) {
            state.failures = 0;
            state.authenticated_until = Some(now + trust);
        }
    }

    /// The state of an untrusted source, made if there is room.
    fn source(&mut self, now: Instant, ip: IpAddr) -> Option<&mut SourceState> {
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.settings.max_sources {
            let due = self
                .swept
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
            if due {
                self.swept = Some(now);
                let settings = &self.settings;
                self.sources.retain(|_, s| !s.forgettable(now, settings));
                if self.sources.len() >= self.settings.max_sources {
                    // Still full, of failures and rate state (anyone can make those, from
                    // spoofed addresses): let a tenth of them go. Bans and authenticated
                    // peers stay.
                    let mut spare = (self.settings.max_sources / 10).max(1);
                    self.sources.retain(|_, s| {
                        let keep = s.banned_until.is_some_and(|t| t > now)
                            || s.authenticated_until.is_some_and(|t| t > now)
                            || spare == 0;
                        if !keep {
                            spare -= 1;
                        }
                        keep
                    });
                }
            }
            if self.sources.len() >= self.settings.max_sources {
                return None;
            }
        }
        let burst = self.settings.burst;
        Some(
            self.sources
                .entry(ip)
                .or_insert_with(|| SourceState::new(now, burst)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn guard() -> FloodGuard {
        FloodGuard::new(GuardSettings {
            trusted: vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
            rate: 10,
            burst: 20,
            auth_failures: 3,
            max_sources: 4,
            ..GuardSettings::default()
        })
    }

    #[test]
    fn cidr_matching_and_mapped_addresses() {
        let net = Cidr::parse("127.0.0.0/8").expect("valid");
        assert!(net.contains(ip("127.9.9.9")));
        assert!(net.contains(ip("::ffff:127.0.0.2")));
        assert!(!net.contains(ip("128.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("any")
            .contains(ip("8.8.8.8")));
        assert!(Cidr::parse("1.2.3.4/33").is_none());
        // Mapped networks are the IPv4 networks they map, never "every address".
        let mapped = Cidr::parse("::ffff:203.0.113.5").expect("mapped host");
        assert!(mapped.contains(ip("203.0.113.5")));
        assert!(!mapped.contains(ip("198.51.100.1")));
        let mapped_net = Cidr::parse("::ffff:203.0.113.0/120").expect("mapped /24");
        assert!(mapped_net.contains(ip("203.0.113.77")));
        assert!(!mapped_net.contains(ip("203.0.114.1")));
        assert!(Cidr::parse("::ffff:203.0.113.0/64").is_none());
        assert!(Cidr::host(ip("1.2.3.4")).contains(ip("1.2.3.4")));
        assert!(!Cidr::host(ip("1.2.3.4")).contains(ip("1.2.3.5")));
    }

    #[test]
    fn untrusted_sources_get_a_burst_then_the_rate() {
        let mut g = guard();
        let t0 = Instant::now();
        let attacker = ip("192.0.2.1");
        let admitted = (0..100)
            .filter(|_| g.admit_packet(t0, attacker).is_ok())
            .count();
        assert_eq!(admitted, 20, "the burst, then nothing at the same instant");
        // One second later, the rate's worth more.
        let t1 = t0 + Duration::from_secs(1);
        let admitted = (0..100)
            .filter(|_| g.admit_packet(t1, attacker).is_ok())
            .count();
        assert_eq!(admitted, 10);
        assert_eq!(g.drops().get(DropReason::RateLimited), 170);
        // A trunk is never limited.
        assert!((0..1000).all(|_| g.admit_packet(t1, ip("10.1.2.3")).is_ok()));
    }

    #[test]
    fn repeated_auth_failures_ban_the_source_for_a_while() {
        let mut g = guard();
        let t0 = Instant::now();
        let cracker = ip("192.0.2.7");
        assert_eq!(g.auth_failed(t0, cracker), None);
        assert_eq!(g.auth_failed(t0, cracker), None);
        let banned = g.auth_failed(t0, cracker).expect("banned on the third");
        assert_eq!(banned.source, cracker);
        assert_eq!(g.admit_packet(t0, cracker), Err(DropReason::Banned));
        let later = banned.until + Duration::from_secs(1);
        assert_eq!(g.admit_packet(later, cracker), Ok(()));
    }

    #[test]
    fn a_source_that_authenticated_is_trusted_and_spoofed_failures_cannot_ban_it() {
        let mut g = guard();
        let t0 = Instant::now();
        let peer = ip("192.0.2.9");
        assert!(!g.is_trusted(t0, peer));
        g.authenticated(t0, peer);
        assert!(g.is_trusted(t0, peer));
        assert!((0..500).all(|_| g.admit_packet(t0, peer).is_ok()));
        for _ in 0..10 {
            assert_eq!(g.auth_failed(t0, peer), None);
        }
        assert!(g.is_trusted(t0, peer));
        assert_eq!(g.admit_packet(t0, peer), Ok(()));
    }

    #[test]
    fn an_ipv6_host_is_one_source_per_64() {
        let mut g = guard();
        let t0 = Instant::now();
        let admitted = (0..100u16)
            .filter(|i| {
                g.admit_packet(t0, format!("2001:db8::{i:x}").parse().expect("ip"))
                    .is_ok()
            })
            .count();
        assert_eq!(admitted, 20, "one /64 shares one burst");
        assert!(
            g.admit_packet(t0, ip("2001:db8:0:1::1")).is_ok(),
            "another /64"
        );
    }

    #[test]
    fn a_table_full_of_failures_makes_room() {
        let mut g = guard();
        let t0 = Instant::now();
        for i in 1..=4 {
            g.auth_failed(t0, ip(&format!("192.0.2.{i}")));
        }
        assert_eq!(g.tracked_sources(), 4);
        let later = t0 + Duration::from_secs(2);
        assert!(g.admit_packet(later, ip("192.0.2.99")).is_ok());
    }

    #[test]
    fn the_source_table_is_bounded_and_forgets_idle_sources() {
        let mut g = guard();
        let t0 = Instant::now();
        for i in 1..=4 {
            assert!(g.admit_packet(t0, ip(&format!("192.0.2.{i}"))).is_ok());
        }
        // Full of rate state anyone could have made: some of it goes to make room.
        assert_eq!(g.admit_packet(t0, ip("192.0.2.5")), Ok(()));
        assert_eq!(g.tracked_sources(), 4);
        // Room is made at most once a second: until then a new source waits.
        assert_eq!(
            g.admit_packet(t0, ip("192.0.2.6")),
            Err(DropReason::SourceTableFull)
        );
        // Once the first four have refilled, they are forgotten and there is room again.
        let later = t0 + Duration::from_secs(5);
        assert!(g.admit_packet(later, ip("192.0.2.5")).is_ok());
        assert!(g.tracked_sources() <= 4);
    }

    #[test]
    fn scanners_user_agents_are_refused() {
        let mut g = guard();
        assert!(g.admit_user_agent(Some("friendly-scanner")).is_err());
        assert!(g.admit_user_agent(Some("SIPVicious 0.3.3")).is_err());
        assert!(g.admit_user_agent(Some("Asterisk PBX 20.1")).is_ok());
        assert!(g.admit_user_agent(None).is_ok());
        assert_eq!(g.drops().get(DropReason::BlockedUserAgent), 2);
    }
}
