//! Typed configuration: one serde tree read from TOML, and `validate()` that names the key at
//! fault. Holds no logic beyond checking; every field is documented in `config/callgate.toml`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::media::downlink::{DownlinkMode, DownlinkOptions, SimulatedLoss};
use crate::sip::uri::Uri;

mod media;
mod validate;

pub use media::*;

/// Every event type a receiver can subscribe to (`events = ["*"]`: all of them).
pub const WEBHOOK_EVENTS: &[&str] = &[
    "call.started",
    "call.answered",
    "call.status",
    "call.ended",
    "call_log.saved",
];

/// A configuration problem, always naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub http: HttpConfig,
    #[serde(default)]
    pub webrtc: WebrtcConfig,
    pub rtp: RtpConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub recording: RecordingConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub transfer: TransferConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, rename = "trunk")]
    pub trunks: Vec<TrunkConfig>,
    /// This node as one of a cluster behind a SIP registrar; none for a single node.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    #[serde(default, rename = "agent")]
    pub agents: Vec<AgentConfig>,
    #[serde(default)]
    pub contacts: ContactsConfig,
    /// The CRM's name lookup for inbound calls (none: the directory and SIP names only).
    #[serde(default)]
    pub lookup: Option<LookupConfig>,
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<WebhookConfig>,
    /// SHA-256 (hex) of the admin bearer token.
    pub admin_token_sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferConfig {
    /// Seconds a call transferred to an agent rings before it comes back to the agent who
    /// transferred it.
    #[serde(default = "default_transfer_ring")]
    pub ring_seconds: u64,
}

fn default_transfer_ring() -> u64 {
    20
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            ring_seconds: default_transfer_ring(),
        }
    }
}

/// What callgate does about strangers on its public ports: rate limits, bans, caps and
/// timeouts. The defaults are meant for a public address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// SIP requests a second one source that is not a trunk (and has not authenticated) may
    /// send, sustained; past it they are dropped unanswered.
    pub untrusted_rate: u32,
    /// ... and at once, before the rate applies.
    pub untrusted_burst: u32,
    /// Wrong credentials from one source within `auth_failure_window` seconds before the
    /// source is banned for `ban_seconds`.
    pub auth_failures: u32,
    pub auth_failure_window: u64,
    pub ban_seconds: u64,
    /// Requests whose User-Agent contains one of these (any case) get no answer at all.
    pub user_agent_blocklist: Vec<String>,
    /// Digest algorithms offered to peers that authenticate, most preferred first
    /// (`SHA-256`, `MD5`); credentials computed with any other are refused.
    pub digest_algorithms: Vec<String>,
    /// Live SIP server transactions at most, and per source that is not a trunk.
    pub max_transactions: usize,
    pub max_transactions_per_source: usize,
    /// An inbound call that rings or waits in a queue this long gets 480.
    pub ring_timeout: u64,
    /// Open SIP TCP connections at most (in and out), and per remote address.
    pub max_sip_tcp_connections: usize,
    pub max_sip_tcp_per_source: usize,
    /// Open HTTP connections (page, API and agent WebSockets) at most, and per address.
    pub max_http_connections: usize,
    pub max_http_per_source: usize,
    /// Seconds a connection may take to send a whole request head (SIP TCP and HTTP).
    pub header_timeout: u64,
    /// Seconds a SIP TCP or HTTP connection may stay idle before it is closed.
    pub idle_timeout: u64,
}

impl SecurityConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let s = self;
        let positive: [(&str, u64); 13] = [
            ("security.untrusted_rate", s.untrusted_rate.into()),
            ("security.untrusted_burst", s.untrusted_burst.into()),
            ("security.auth_failures", s.auth_failures.into()),
            ("security.auth_failure_window", s.auth_failure_window),
            ("security.ban_seconds", s.ban_seconds),
            ("security.max_transactions", s.max_transactions as u64),
            (
                "security.max_transactions_per_source",
                s.max_transactions_per_source as u64,
            ),
            ("security.ring_timeout", s.ring_timeout),
            (
                "security.max_sip_tcp_connections",
                s.max_sip_tcp_connections as u64,
            ),
            (
                "security.max_sip_tcp_per_source",
                s.max_sip_tcp_per_source as u64,
            ),
            (
                "security.max_http_connections",
                s.max_http_connections as u64,
            ),
            ("security.max_http_per_source", s.max_http_per_source as u64),
            ("security.header_timeout", s.header_timeout),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if s.idle_timeout < s.header_timeout {
            return Err(invalid(
                "security.idle_timeout",
                "must not be shorter than security.header_timeout",
            ));
        }
        if s.digest_algorithms.is_empty() {
            return Err(invalid(
                "security.digest_algorithms",
                "must name at least one algorithm",
            ));
        }
        for (i, name) in s.digest_algorithms.iter().enumerate() {
            match crate::sip::digest::Algorithm::parse(name) {
                Ok(crate::sip::digest::Algorithm::Md5 | crate::sip::digest::Algorithm::Sha256) => {}
                _ => {
                    return Err(invalid(
                        format!("security.digest_algorithms[{i}]"),
                        format!("{name:?} is not SHA-256 or MD5"),
                    ))
                }
            }
        }
        if s.untrusted_burst < s.untrusted_rate {
            return Err(invalid(
                "security.untrusted_burst",
                "must be at least security.untrusted_rate",
            ));
        }
        Ok(())
    }

    /// The digest algorithms to offer, in order.
    pub fn digest_algorithms(&self) -> Vec<crate::sip::digest::Algorithm> {
        self.digest_algorithms
            .iter()
            .filter_map(|a| crate::sip::digest::Algorithm::parse(a).ok())
            .collect()
    }

    /// The SIP guard's settings. The trunks' addresses are added to its trusted sources by
    /// the b2bua, which resolves them.
    pub fn guard(&self) -> crate::sip::guard::GuardSettings {
        use std::time::Duration;
        crate::sip::guard::GuardSettings {
            trusted: Vec::new(),
            rate: self.untrusted_rate,
            burst: self.untrusted_burst,
            auth_failures: self.auth_failures,
            failure_window: Duration::from_secs(self.auth_failure_window),
            ban: Duration::from_secs(self.ban_seconds),
            user_agent_blocklist: self.user_agent_blocklist.clone(),
            ..crate::sip::guard::GuardSettings::default()
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            untrusted_rate: 20,
            untrusted_burst: 40,
            auth_failures: 5,
            auth_failure_window: 600,
            ban_seconds: 900,
            user_agent_blocklist: crate::sip::guard::DEFAULT_USER_AGENT_BLOCKLIST
                .iter()
                .map(|s| s.to_string())
                .collect(),
            digest_algorithms: vec!["SHA-256".into(), "MD5".into()],
            max_transactions: 100_000,
            max_transactions_per_source: 32,
            ring_timeout: 120,
            max_sip_tcp_connections: 1024,
            max_sip_tcp_per_source: 32,
            max_http_connections: 1024,
            max_http_per_source: 64,
            header_timeout: 10,
            idle_timeout: 120,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// UDP and TCP listen address (one port for both).
    pub listen: SocketAddr,
    /// Host written in Via/Contact; defaults to the listen IP.
    #[serde(default)]
    pub public_host: Option<String>,
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    /// SIP over TLS (RFC 3261 §26): a listener for trunks that connect with TLS, with this
    /// certificate chain and key (PEM).
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

fn default_user_agent() -> String {
    format!("callgate/{}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// How others reach this listener (e.g. `https://gw.example.com`): the prefix of the
    /// recording addresses webhooks carry. Default: the listen address. In a cluster it is
    /// required, an origin (scheme, host, port): each node announces it in the shared store,
    /// pages are given the live nodes' to reconnect to when theirs is lost, and the calls API
    /// names each call's node by it so a supervisor monitors the call there.
    #[serde(default)]
    pub public_url: Option<String>,
}

/// The contacts directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactsConfig {
    /// Country calling code (digits, e.g. "1" or "44") for numbers given without one.
    #[serde(default)]
    pub country_code: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupConfig {
    /// GET with the caller's E.164 number: `{number}` in the URL, else `?number=`. Answers
    /// `200 {"name": "...", "prospect_id": "..."}` or 404.
    pub url: String,
    /// The most an inbound call waits for the answer (then it goes on without it).
    #[serde(default = "default_lookup_timeout")]
    pub timeout_ms: u64,
    /// How long an answer (a name, or 404) is reused; 0: never cached.
    #[serde(default = "default_lookup_cache")]
    pub cache_seconds: u64,
    /// Sent as `Authorization: Bearer` when set.
    #[serde(default)]
    pub bearer_token: Option<String>,
}

fn default_lookup_timeout() -> u64 {
    500
}

fn default_lookup_cache() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Event types (`call.started`, `call.answered`, `call.status`, `call.ended`,
    /// `call_log.saved`), or `["*"]` for all.
    pub events: Vec<String>,
    /// Key of the HMAC-SHA-256 signature (at least 16 characters).
    pub secret: String,
    /// The most one attempt waits for the receiver's answer.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_ms: u64,
    /// Longest wait between two attempts (they start at 1 s and double).
    #[serde(default = "default_webhook_backoff")]
    pub max_backoff_seconds: u64,
}

fn default_webhook_timeout() -> u64 {
    10_000
}

fn default_webhook_backoff() -> u64 {
    600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebrtcConfig {
    pub listen: SocketAddr,
    /// A TCP port for ICE over TCP (RFC 6544, a passive candidate beside the UDP one), for
    /// browsers whose network blocks UDP; off when unset.
    #[serde(default)]
    pub tcp_listen: Option<SocketAddr>,
    /// Address put in ICE host candidates; defaults to the listen IP.
    #[serde(default)]
    pub public_ip: Option<IpAddr>,
    /// The codec browsers hear: PCMU while their reports show no loss, Opus with FEC while
    /// they do (`adaptive`), or always one of them.
    #[serde(default)]
    pub downlink: DownlinkMode,
    /// Clean receiver reports for this long before an adaptive downlink leaves Opus.
    #[serde(default = "default_downlink_recover_seconds")]
    pub downlink_recover_seconds: u64,
    /// RTP toward browsers dropped on purpose (trying the adaptive downlink); never set in
    /// production.
    #[serde(default)]
    pub simulated_loss: Option<SimulatedLoss>,
    /// STUN and TURN servers the dialer page gives its peer connection (for agents whose
    /// network blocks UDP to the gateway).
    #[serde(default, rename = "ice_server")]
    pub ice_servers: Vec<IceServerConfig>,
}

/// One entry of the page's `iceServers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    /// `stun:`, `turn:` or `turns:` URLs of one server.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`: each sign-in gets a username and password valid for
    /// `credential_ttl_seconds` (the TURN REST API's time-limited credentials).
    #[serde(default)]
    pub shared_secret: Option<String>,
    #[serde(default = "default_credential_ttl")]
    pub credential_ttl_seconds: u64,
    /// Fixed credentials instead (every agent sees them).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub credential: Option<String>,
}

fn default_credential_ttl() -> u64 {
    12 * 3600
}

fn default_downlink_recover_seconds() -> u64 {
    30
}

impl WebrtcConfig {
    pub fn downlink_options(&self) -> DownlinkOptions {
        DownlinkOptions {
            mode: self.downlink,
            recover: std::time::Duration::from_secs(self.downlink_recover_seconds),
            simulated_loss: self.simulated_loss,
        }
    }
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        WebrtcConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 10000)),
            tcp_listen: None,
            public_ip: None,
            downlink: DownlinkMode::default(),
            downlink_recover_seconds: default_downlink_recover_seconds(),
            simulated_loss: None,
            ice_servers: Vec::new(),
        }
    }
}

/// What a call to a request-URI user (a DID or a name) does.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Request-URI user part this route answers (`echo`, `announce`, a DID).
    pub user: String,
    pub action: RouteKind,
    /// The WAV an `announce` route plays.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    Echo,
    Announce,
}

/// A validated route action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Answer and send back what is received.
    Echo,
    /// Answer, play the file, hang up.
    Announce { file: PathBuf },
}

impl RouteConfig {
    pub fn echo(user: &str) -> RouteConfig {
        RouteConfig {
            user: user.into(),
            action: RouteKind::Echo,
            file: None,
        }
    }

    pub fn announce(user: &str, file: &Path) -> RouteConfig {
        RouteConfig {
            user: user.into(),
            action: RouteKind::Announce,
            file: Some(file.to_path_buf()),
        }
    }

    /// `validate()` guarantees an announce route has its file.
    pub fn route_action(&self) -> RouteAction {
        match (self.action, &self.file) {
            (RouteKind::Announce, Some(file)) => RouteAction::Announce { file: file.clone() },
            _ => RouteAction::Echo,
        }
    }
}

/// `[cluster]`: several nodes behind a SIP registrar (Kamailio), each agent on one node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name among the cluster's.
    pub node: String,
    /// The trunk whose outbound proxy is the cluster's registrar: each signed-in agent's DIDs
    /// are registered there with this node's SIP address as Contact, so calls for them come
    /// here.
    pub registrar: String,
    /// Seconds this node's lease in the shared store lasts; it is refreshed six times as often.
    /// When a node's lease lapses (it died, or lost the store), a surviving node ends its live
    /// calls as failed, frees its agents and takes over its webhook deliveries.
    #[serde(default = "default_lease")]
    pub lease: u64,
}

fn default_lease() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// The outbound proxy's address when its host is a name: looked up by the shell when the
    /// gateway starts (`Config::resolve_trunks`), never in the cores.
    #[serde(skip)]
    pub proxy_ip: Option<IpAddr>,
    pub name: String,
    /// Whether this trunk's callers who wait for a busy agent get `media.waiting_audio` as
    /// early media (183 with SDP); false: a 180, as for trunks that mishandle early media.
    #[serde(default = "default_true")]
    pub early_media: bool,
    /// For `transport=tls` (or `sips:`) proxies: a CA certificate (PEM) the trunk's
    /// certificate must chain to, instead of the system's CA bundle.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// SRTP with SDES keys on this trunk's calls: `off` (plain RTP; SRTP offers refused),
    /// `optional` (SRTP when the trunk offers or accepts it) or `required` (plain RTP
    /// refused). Keys go only over SIP TLS, unless `srtp_over_plain_sip`.
    #[serde(default)]
    pub srtp: SrtpMode,
    /// Allow SDES keys in SDP sent over plain UDP/TCP SIP, where anyone on the path reads
    /// them: for a trunk on a private link only.
    #[serde(default)]
    pub srtp_over_plain_sip: bool,
    /// Source addresses (IPs or CIDRs) allowed to send calls without credentials.
    #[serde(default)]
    pub inbound_from: Vec<String>,
    /// Digest credentials an inbound peer may use instead of a listed source address.
    #[serde(default)]
    pub inbound_username: Option<String>,
    #[serde(default)]
    pub inbound_password: Option<String>,
    /// Where outbound INVITEs go (`sip:host:port;transport=udp|tcp`).
    #[serde(default)]
    pub outbound_proxy: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// REGISTER to the proxy and keep it refreshed.
    #[serde(default)]
    pub register: bool,
    #[serde(default = "default_register_expires")]
    pub register_expires: u32,
    /// OPTIONS keepalive interval in seconds (0 turns it off).
    #[serde(default = "default_options_interval")]
    pub options_interval: u64,
    /// Numbers and URIs this trunk may dial; `*` matches any run of characters.
    #[serde(default)]
    pub dial_plan: Vec<String>,
    /// Codec preference for this trunk, overriding `rtp.codecs`.
    #[serde(default)]
    pub codecs: Option<Vec<String>>,
    /// Recording of this trunk's calls (`always`, `off`, `on_demand`), overriding
    /// `recording.mode`; an agent's own setting overrides this.
    #[serde(default)]
    pub recording: Option<String>,
}

/// A trunk's `srtp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpMode {
    #[default]
    Off,
    Optional,
    Required,
}

fn check_record_mode(key: String, mode: Option<&str>) -> Result<(), ConfigError> {
    match mode {
        Some(m) if RecordMode::parse(m).is_none() => {
            Err(invalid(key, "must be always, off or on_demand"))
        }
        _ => Ok(()),
    }
}

fn default_register_expires() -> u32 {
    3600
}
fn default_options_interval() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: crate::ids::AgentId,
    pub name: String,
    /// SHA-256 (hex) of the agent's bearer token.
    pub token_sha256: String,
    #[serde(default)]
    pub role: Role,
    #[serde(default = "default_max_calls")]
    pub max_calls: u32,
    #[serde(default)]
    pub dids: Vec<String>,
    /// Recording of this agent's calls (`always`, `off`, `on_demand`), overriding the trunk's
    /// setting and `recording.mode`.
    #[serde(default)]
    pub recording: Option<String>,
}

/// What a person signed in may do: an agent takes calls; a supervisor also sees every call
/// and may listen, whisper or barge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Agent,
    Supervisor,
}
fn default_max_calls() -> u32 {
    100
}

/// The demo secrets of the shipped config; refused off loopback.
const DEMO_SECRETS: &[&str] = &[
    "demo-token",
    "demo2-token",
    "super-token",
    "admin-token",
    "trunk-secret",
];

pub fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// An inbound source filter: an IP network in CIDR form.
pub use crate::sip::guard::Cidr;

/// Does a dial-plan pattern allow `target`? A `*` stands for any run of the characters a
/// number or a URI's user part may hold, never for `@`, `;`, `?`, `:` or `/`: a number
/// pattern (`+1*`) matches a whole E.164 number, a URI pattern (`sip:*@host`, `sip:*@host:*`)
/// the user part, with the host exact and the port (when the pattern has one) exact or `*`.
/// A dialled URI with parameters or headers matches nothing, so `;maddr=` or a second `@`
/// cannot smuggle a call past the plan. Linear in the target's length.
pub fn dial_plan_matches(pattern: &str, target: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let target = target.to_ascii_lowercase();
    if !pattern.starts_with("sip:") && !pattern.starts_with("sips:") {
        return !target.contains(['@', ';', '?', ':', '/'])
            && glob(pattern.as_bytes(), target.as_bytes());
    }
    let (Some((p_scheme, p_rest)), Some((t_scheme, t_rest))) =
        (pattern.split_once(':'), target.split_once(':'))
    else {
        return false;
    };
    if p_scheme != t_scheme || t_rest.contains([';', '?', '/']) {
        return false;
    }
    let (Some((p_user, p_host)), Some((t_user, t_host))) =
        (p_rest.rsplit_once('@'), t_rest.split_once('@'))
    else {
        return false;
    };
    if t_user.is_empty() || t_user.contains([':', '@']) || t_host.contains('@') {
        return false;
    }
    let (p_host, p_port) = p_host.split_once(':').unwrap_or((p_host, ""));
    let (t_host, t_port) = t_host.split_once(':').unwrap_or((t_host, ""));
    let port_ok = match p_port {
        "" => t_port.is_empty(),
        "*" => !t_port.is_empty() && t_port.bytes().all(|b| b.is_ascii_digit()),
        exact => exact == t_port,
    };
    p_host == t_host && port_ok && glob(p_user.as_bytes(), t_user.as_bytes())
}

/// `*` glob in linear time: the literal pieces between stars are found left to right, each
/// at its first place after the one before (the leftmost place never loses a match), so no
/// pattern backtracks.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let pieces: Vec<&[u8]> = pattern.split(|b| *b == b'*').collect();
    let [first, middle @ .., last] = pieces.as_slice() else {
        return pattern == text; // no star at all
    };
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut at = first.len();
    let end = text.len() - last.len();
    for piece in middle.iter().filter(|p| !p.is_empty()) {
        let Some(found) = text[at..end].windows(piece.len()).position(|w| w == *piece) else {
            return false;
        };
        at += found + piece.len();
    }
    text.ends_with(last)
}

impl Config {
    /// The agent (or supervisor) a bearer token belongs to.
    pub fn agent_by_token(&self, token: &str) -> Option<&AgentConfig> {
        let hash = sha256_hex(token);
        self.agents.iter().find(|a| a.token_sha256 == hash)
    }

    pub fn is_admin_token(&self, token: &str) -> bool {
        sha256_hex(token) == self.admin_token_sha256
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The prefix of addresses on the HTTP listener as others reach it.
    pub fn public_url(&self) -> String {
        match &self.http.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let scheme = if self.http.tls_cert.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}", self.http.listen)
            }
        }
    }

    /// Which calls are recorded: each agent's and trunk's own mode over `recording.mode`.
    pub fn recording_policy(&self) -> crate::controller::RecordingPolicy {
        let mode = |m: &Option<String>| m.as_deref().and_then(RecordMode::parse);
        crate::controller::RecordingPolicy {
            default: self.recording.mode(),
            agents: self
                .agents
                .iter()
                .filter_map(|a| mode(&a.recording).map(|m| (a.id.clone(), m)))
                .collect(),
            trunks: self
                .trunks
                .iter()
                .filter_map(|t| mode(&t.recording).map(|m| (t.name.clone(), m)))
                .collect(),
        }
    }

    pub fn codec_preference(&self) -> Vec<crate::sdp::Codec> {
        self.rtp
            .codecs
            .iter()
            .filter_map(|c| parse_codec(c))
            .collect()
    }
}

pub fn parse_codec(name: &str) -> Option<crate::sdp::Codec> {
    use crate::sdp::Codec;
    match name.to_ascii_lowercase().as_str() {
        "pcmu" => Some(Codec::Pcmu),
        "pcma" => Some(Codec::Pcma),
        "opus" => Some(Codec::Opus),
        _ => None,
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

mod trunk;

#[cfg(test)]
mod tests;
