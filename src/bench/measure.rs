//! How the bench measures: quantiles, the pulses that time the way through the gateway, and
//! the CPU and memory of the gateway's threads or of this process, from /proc.

use super::*;

/// The `p` quantile (0 to 1) of `values`, 0 when there are none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Tells a pulse's first loud frame in a stream of decoded frames.
pub(super) struct OnsetDetector {
    pub(super) decoder: Option<(Codec, crate::media::codec::Decoder)>,
    pub(super) pcm: Vec<i16>,
    pub(super) loud: bool,
}

impl OnsetDetector {
    pub(super) fn new() -> OnsetDetector {
        OnsetDetector {
            decoder: None,
            pcm: Vec::with_capacity(FRAME_PCM),
            loud: false,
        }
    }

    /// Whether this frame starts a pulse (loud after quiet; hysteresis between).
    pub(super) fn onset(&mut self, codec: Codec, payload: &[u8]) -> bool {
        if self.decoder.as_ref().is_none_or(|(c, _)| *c != codec) {
            self.decoder = crate::media::codec::Decoder::new(codec)
                .ok()
                .map(|d| (codec, d));
        }
        let Some((_, decoder)) = self.decoder.as_mut() else {
            return false;
        };
        self.pcm.clear();
        if decoder.decode(payload, &mut self.pcm).is_err() || self.pcm.is_empty() {
            return false;
        }
        let level =
            self.pcm.iter().map(|s| i64::from(*s).abs()).sum::<i64>() / self.pcm.len() as i64;
        let was = self.loud;
        if level > 2000 {
            self.loud = true;
        } else if level < 500 {
            self.loud = false;
        }
        self.loud && !was
    }
}

/// Groups of calls the load sends at different instants of each frame.
pub(super) const PHASES: usize = 10;
pub(super) const FRAME_TIME: Duration = Duration::from_millis(20);

/// 20 ms of 8 kHz PCM.
pub(super) const FRAME_PCM: usize = 160;

/// One direction of one probe call: when the sender's last pulse left, and the delays seen.
pub(super) struct DelayProbe {
    pub(super) sent: Option<Instant>,
    pub(super) detector: OnsetDetector,
    pub(super) delays_ms: Vec<f64>,
}

impl DelayProbe {
    pub(super) fn new() -> DelayProbe {
        DelayProbe {
            sent: None,
            detector: OnsetDetector::new(),
            delays_ms: Vec::new(),
        }
    }

    /// A frame arrived at `at`; `measuring` once the warm-up is over.
    pub(super) fn heard(&mut self, codec: Codec, payload: &[u8], at: Instant, measuring: bool) {
        if self.detector.onset(codec, payload) && measuring {
            if let Some(sent) = self.sent {
                self.delays_ms
                    .push(at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
            }
        }
    }
}

/// User and system CPU time of this process's threads whose name starts with one of
/// `prefixes`.
pub fn thread_cpu_split(prefixes: &[&str]) -> (Duration, Duration) {
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let (mut user, mut system) = (0u64, 0u64);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (Duration::ZERO, Duration::ZERO);
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !prefixes.iter().any(|p| comm.trim().starts_with(p)) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is 3rd, utime 14th, stime 15th.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        user += utime;
        system += stime;
    }
    (
        Duration::from_secs_f64(user as f64 / ticks_per_sec),
        Duration::from_secs_f64(system as f64 / ticks_per_sec),
    )
}

pub(super) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The gateway's CPU at one instant: all of it, user and system.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuMark {
    pub(super) total: Duration,
    pub(super) system: Duration,
}

impl CpuMark {
    pub(super) fn now(whole_process: bool) -> CpuMark {
        let (user, system) = if whole_process {
            process_cpu_split()
        } else {
            thread_cpu_split(GATEWAY_THREADS)
        };
        CpuMark {
            total: user + system,
            system,
        }
    }
}

/// User and system CPU time of this whole process.
pub(super) fn process_cpu_split() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        Duration::from_secs_f64(ticks(11) as f64 / 100.0),
        Duration::from_secs_f64(ticks(12) as f64 / 100.0),
    )
}
