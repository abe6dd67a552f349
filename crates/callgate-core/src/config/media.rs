//! The media sections: RTP ports and codecs, what callers hear, recordings and the call log.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtpConfig {
    /// IP the per-call RTP sockets bind to.
    pub bind: IpAddr,
    /// IP written in SDP c= lines; defaults to `bind`.
    #[serde(default)]
    pub public_ip: Option<IpAddr>,
    pub port_min: u16,
    pub port_max: u16,
    /// Codec preference toward trunks, first preferred.
    #[serde(default = "default_codecs")]
    pub codecs: Vec<String>,
}

pub(super) fn default_codecs() -> Vec<String> {
    vec!["PCMU".into(), "PCMA".into(), "opus".into()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    #[serde(default = "default_hold_audio")]
    pub hold_audio: PathBuf,
    /// What a caller waiting for a busy agent hears, as early media after a 183: a WAV path,
    /// or `ringback` for the ringback tone of `ringback_country`. Unset: a 180 and the
    /// caller's own ringback, as before.
    #[serde(default)]
    pub waiting_audio: Option<String>,
    /// Whose ringback tone `ringback` generates: `us` (440+480 Hz, 2 s on 4 s off), `uk`
    /// (400+450 Hz, 0.4 on 0.2 off 0.4 on 2 off) or `eu` (425 Hz, 1 s on 4 s off).
    #[serde(default = "default_ringback_country")]
    pub ringback_country: String,
}

pub(super) fn default_true() -> bool {
    true
}

pub(super) fn default_ringback_country() -> String {
    "us".into()
}

pub(super) fn default_hold_audio() -> PathBuf {
    PathBuf::from("config/hold.wav")
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            hold_audio: default_hold_audio(),
            waiting_audio: None,
            ringback_country: default_ringback_country(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    #[serde(default = "default_recording_mode")]
    pub mode: String,
    #[serde(default = "default_recording_channels")]
    pub channels: String,
    #[serde(default = "default_recording_rate")]
    pub sample_rate: u32,
    #[serde(default = "default_recording_dir")]
    pub directory: PathBuf,
}

/// Whether a call is recorded: from the moment it is bridged, never, or when the agent asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordMode {
    Always,
    Off,
    OnDemand,
}

impl RecordMode {
    pub fn parse(s: &str) -> Option<RecordMode> {
        match s {
            "always" => Some(RecordMode::Always),
            "off" => Some(RecordMode::Off),
            "on_demand" => Some(RecordMode::OnDemand),
            _ => None,
        }
    }
}

impl RecordingConfig {
    /// The configured default (validated at load; an unknown value records nothing).
    pub fn mode(&self) -> RecordMode {
        RecordMode::parse(&self.mode).unwrap_or(RecordMode::Off)
    }

    pub fn stereo(&self) -> bool {
        self.channels != "mono"
    }
}

pub(super) fn default_recording_mode() -> String {
    "always".into()
}
pub(super) fn default_recording_channels() -> String {
    "stereo".into()
}
pub(super) fn default_recording_rate() -> u32 {
    8000
}
pub(super) fn default_recording_dir() -> PathBuf {
    PathBuf::from("recordings")
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            mode: default_recording_mode(),
            channels: default_recording_channels(),
            sample_rate: default_recording_rate(),
            directory: default_recording_dir(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (the default: one node, the file at `database`) or `postgres` (a cluster's
    /// shared call log at `url`).
    #[serde(default)]
    pub backend: StoreBackend,
    #[serde(default = "default_database")]
    pub database: PathBuf,
    /// `postgres://user:password@host:port/dbname` (libpq's URL or key=value forms), for
    /// `backend = "postgres"` only.
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sqlite,
    Postgres,
}

pub(super) fn default_database() -> PathBuf {
    PathBuf::from("data/callgate.db")
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            database: default_database(),
            url: None,
        }
    }
}
