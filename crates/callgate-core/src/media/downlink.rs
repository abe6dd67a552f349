//! Which codec a browser hears. A browser that negotiated Opus and PCMU plays either payload
//! type at any moment, so on a clean path the trunk's G.711 can go to it as PCMU untouched (no
//! encoder at all). Opus pays for itself only when packets are lost: its in-band FEC rebuilds
//! them. The browser's RTCP receiver reports say which case holds; the choice follows them with
//! hysteresis (at once to Opus, back only after a clean stretch), so a path that loses now and
//! then does not flap. What the browser sends is not chosen here: it keeps sending Opus.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::sdp::Codec;

/// Reported loss from which the browser gets Opus with FEC.
pub const LOSSY: f32 = 0.01;
/// Reported loss under which a report counts as clean (RTCP's fraction lost counts in 1/256:
/// one packet in 256 is not worth an encoder).
pub const CLEAN: f32 = 0.005;

/// `webrtc.downlink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownlinkMode {
    /// PCMU while the browser reports no loss, Opus with FEC while it does.
    #[default]
    Adaptive,
    /// Opus whenever negotiated (PCMU or PCMA only for browsers without it).
    Opus,
    /// PCMU whenever negotiated.
    Pcmu,
}

/// One peer connection's downlink codec.
#[derive(Debug, Clone)]
pub struct Downlink {
    mode: DownlinkMode,
    /// How long reports must stay clean before Opus gives way to PCMU again.
    recover: Duration,
    opus: bool,
    pcmu: bool,
    /// The best other codec negotiated (for a browser with neither choice).
    other: Option<Codec>,
    current: Option<Codec>,
    /// The last report that showed loss (adaptive mode, on Opus).
    last_lossy: Option<Instant>,
}

impl Downlink {
    pub fn new(mode: DownlinkMode, recover: Duration) -> Downlink {
        Downlink {
            mode,
            recover,
            opus: false,
            pcmu: false,
            other: None,
            current: None,
            last_lossy: None,
        }
    }

    /// The codecs the peer connection negotiated, best first; returns the codec to send.
    pub fn negotiated(&mut self, codecs: &[Codec]) -> Option<Codec> {
        self.opus = codecs.contains(&Codec::Opus);
        self.pcmu = codecs.contains(&Codec::Pcmu);
        self.other = codecs.first().copied();
        let lossy = self.current == Some(Codec::Opus) && self.last_lossy.is_some();
        self.current = match self.mode {
            DownlinkMode::Opus if self.opus => Some(Codec::Opus),
            DownlinkMode::Pcmu if self.pcmu => Some(Codec::Pcmu),
            DownlinkMode::Adaptive if self.opus && self.pcmu => {
                // A renegotiation keeps what the reports decided.
                Some(if lossy { Codec::Opus } else { Codec::Pcmu })
            }
            _ => self.other,
        };
        if self.current != Some(Codec::Opus) {
            self.last_lossy = None;
        }
        self.current
    }

    /// A receiver report's fraction lost (0..1) at `now`; returns the codec to send.
    pub fn on_report(&mut self, now: Instant, loss: f32) -> Option<Codec> {
        let adaptive = self.mode == DownlinkMode::Adaptive && self.opus && self.pcmu;
        if !adaptive {
            return self.current;
        }
        if loss >= LOSSY || (loss >= CLEAN && self.current == Some(Codec::Opus)) {
            self.last_lossy = Some(now);
            self.current = Some(Codec::Opus);
        } else if self.current == Some(Codec::Opus)
            && self
                .last_lossy
                .is_none_or(|at| now.saturating_duration_since(at) >= self.recover)
        {
            self.last_lossy = None;
            self.current = Some(Codec::Pcmu);
        }
        self.current
    }

    pub fn current(&self) -> Option<Codec> {
        self.current
    }

    /// On an adaptive downlink's clean path a call may send its source's own codec (a PCMA or
    /// Opus trunk's) when the browser negotiated it, rather than PCMU: nothing to transcode.
    pub fn passes_source(&self) -> bool {
        self.mode == DownlinkMode::Adaptive
            && self.opus
            && self.pcmu
            && self.current == Some(Codec::Pcmu)
    }
}

/// `webrtc.simulated_loss`: RTP toward browsers dropped on purpose, to try the adaptive
/// downlink (and a browser's concealment) without a lossy network. Never for production.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedLoss {
    /// Share of RTP packets dropped, evenly spread.
    pub percent: u8,
    /// From this long after the peer connection is up...
    #[serde(default)]
    pub after_seconds: u64,
    /// ...for this long (0: for ever).
    #[serde(default)]
    pub for_seconds: u64,
}

impl SimulatedLoss {
    /// Whether the `index`-th RTP packet since the peer connected, sent `since` after it,
    /// is dropped.
    pub fn drops(&self, since: Duration, index: u64) -> bool {
        let start = Duration::from_secs(self.after_seconds);
        let end = start + Duration::from_secs(self.for_seconds);
        if since < start || (self.for_seconds > 0 && since >= end) {
            return false;
        }
        let p = u64::from(self.percent.min(100));
        (index + 1) * p / 100 > index * p / 100
    }
}

/// How the codec toward browsers is chosen (`webrtc.downlink` and its companions).
#[derive(Debug, Clone, Copy)]
pub struct DownlinkOptions {
    pub mode: DownlinkMode,
    /// Clean reports for this long before an adaptive downlink leaves Opus.
    pub recover: Duration,
    pub simulated_loss: Option<SimulatedLoss>,
}

impl Default for DownlinkOptions {
    fn default() -> Self {
        DownlinkOptions {
            mode: DownlinkMode::Adaptive,
            recover: Duration::from_secs(30),
            simulated_loss: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: [Codec; 3] = [Codec::Opus, Codec::Pcmu, Codec::Pcma];

    #[test]
    fn adaptive_starts_on_pcmu_goes_to_opus_on_loss_and_back_after_a_clean_stretch() {
        let mut d = Downlink::new(DownlinkMode::Adaptive, Duration::from_secs(20));
        let t0 = Instant::now();
        assert_eq!(d.negotiated(&BOTH), Some(Codec::Pcmu));
        assert!(d.passes_source());
        assert_eq!(d.on_report(t0, 0.0), Some(Codec::Pcmu));
        assert_eq!(
            d.on_report(t0, 0.004),
            Some(Codec::Pcmu),
            "1 in 256 is clean"
        );
        assert_eq!(
            d.on_report(t0 + Duration::from_secs(5), 0.05),
            Some(Codec::Opus)
        );
        // Lower loss keeps Opus and restarts the clean stretch.
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(d.on_report(at(10), 0.006), Some(Codec::Opus));
        assert_eq!(d.on_report(at(20), 0.0), Some(Codec::Opus));
        assert_eq!(d.on_report(at(29), 0.0), Some(Codec::Opus));
        assert_eq!(d.on_report(at(30), 0.0), Some(Codec::Pcmu), "20 s clean");
        // A renegotiation keeps the decision.
        assert_eq!(d.on_report(at(31), 0.02), Some(Codec::Opus));
        assert_eq!(d.negotiated(&BOTH), Some(Codec::Opus));
        assert_eq!(d.current(), Some(Codec::Opus));
    }

    #[test]
    fn fixed_modes_and_browsers_without_a_choice_ignore_reports() {
        let t0 = Instant::now();
        let mut opus = Downlink::new(DownlinkMode::Opus, Duration::from_secs(1));
        assert_eq!(opus.negotiated(&BOTH), Some(Codec::Opus));
        assert_eq!(opus.on_report(t0, 0.0), Some(Codec::Opus));
        let mut pcmu = Downlink::new(DownlinkMode::Pcmu, Duration::from_secs(1));
        assert_eq!(pcmu.negotiated(&BOTH), Some(Codec::Pcmu));
        assert_eq!(pcmu.on_report(t0, 0.3), Some(Codec::Pcmu));
        // Adaptive without PCMU: Opus throughout; without Opus: the best there is.
        let mut only_opus = Downlink::new(DownlinkMode::Adaptive, Duration::from_secs(1));
        assert_eq!(only_opus.negotiated(&[Codec::Opus]), Some(Codec::Opus));
        assert_eq!(only_opus.on_report(t0, 0.0), Some(Codec::Opus));
        let mut g711 = Downlink::new(DownlinkMode::Opus, Duration::from_secs(1));
        assert_eq!(g711.negotiated(&[Codec::Pcma]), Some(Codec::Pcma));
        assert_eq!(g711.on_report(t0, 0.5), Some(Codec::Pcma));
    }

    #[test]
    fn simulated_loss_drops_its_share_evenly_inside_its_window() {
        let loss = SimulatedLoss {
            percent: 5,
            after_seconds: 2,
            for_seconds: 3,
        };
        let in_window = |index| loss.drops(Duration::from_secs(3), index);
        let dropped = (0..1000).filter(|i| in_window(*i)).count();
        assert_eq!(dropped, 50);
        // Never two in a row at 5 %.
        assert!((0..1000).all(|i| !(in_window(i) && in_window(i + 1))));
        assert!(!loss.drops(Duration::from_secs(1), 19));
        assert!(!loss.drops(Duration::from_secs(5), 19));
        assert!(loss.drops(Duration::from_millis(4999), 19));
    }
}
