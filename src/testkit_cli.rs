//! The command line's testkit: `bench` and its load, the mixer, codec and call-log benches, and
//! `demo`, a simulated caller for trying the dialer page without a trunk. Built with
//! `--features testkit` (the tests and the bench scripts do); an operator's build leaves them out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use callgate::webrtc::downlink::DownlinkMode;

use crate::{runtime, DEFAULT_CONFIG};

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Try the gateway without a trunk: a simulated caller rings an agent's DID on the running
    /// gateway (the first agent with a DID in the config unless --to is given), plays a test
    /// melody once answered in the dialer page, and hangs up after --seconds.
    Demo {
        /// The DID to call.
        #[arg(long)]
        to: Option<String>,
        /// How long to stay on the line once answered.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Measure what a bridged call costs: the gateway's media path (media tasks, jitter
    /// buffers, codecs, str0m ICE/DTLS/SRTP) against simulated trunks and browsers on
    /// loopback, in this process. Prints CPU per call-second, setup times and memory.
    Bench {
        /// Concurrent calls.
        #[arg(long, default_value_t = 50)]
        calls: usize,
        /// Seconds measured (after 3 s of warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Browsers offer only PCMU, so calls pass through untranscoded.
        #[arg(long)]
        passthrough: bool,
        /// Otherwise browsers offer Opus and PCMU and send Opus (as Chrome does); what they
        /// hear: `adaptive` (PCMU on this clean path), `opus` or `pcmu`.
        #[arg(long, default_value = "adaptive", value_parser = parse_downlink)]
        downlink: callgate::webrtc::downlink::DownlinkMode,
        /// Gateway worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Record every call (stereo WAV, 8 kHz) into this directory, to measure what
        /// recording adds.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Both sides play a steady tone instead of voice-like audio (cheaper for Opus to
        /// encode; for comparing with figures taken that way).
        #[arg(long)]
        tone: bool,
        /// Run the simulated trunks and browsers in a child process, so that this process's
        /// CPU and memory are the gateway's alone (as a relay's are when its peers are on
        /// other machines).
        #[arg(long)]
        separate_load: bool,
        /// The browsers lose this percentage of the RTP that reaches them, so their receiver
        /// reports show loss (an adaptive downlink then sends Opus with FEC).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        loss: u8,
        /// The trunk side speaks SRTP (SDES keys, AES_CM_128_HMAC_SHA1_80), to measure what
        /// protecting and authenticating every trunk packet adds.
        #[arg(long)]
        srtp: bool,
    },
    /// The load of `bench --separate-load` (started by it; JSON lines on stdin and stdout).
    #[command(hide = true)]
    BenchLoad {
        /// The load's options, as JSON.
        options: String,
    },
    /// Measure the conference mixer: a 3-party mix-minus (a supervisor barging) of 20 ms
    /// frames, timed over many frames.
    BenchMixer {
        #[arg(long, default_value_t = 500_000)]
        frames: usize,
    },
    /// Measure the codecs of a transcoded call: G.711 and Opus (clean path, and with in-band
    /// FEC for reported loss) per 20 ms frame, on voice-like audio.
    BenchCodec {
        #[arg(long, default_value_t = 3000)]
        frames: usize,
        /// Rounds of each operation; the median counts.
        #[arg(long, default_value_t = 7)]
        rounds: usize,
    },
    /// Measure the call log: write N calls with segments and logs into a scratch database,
    /// then time the calls page queries.
    BenchStore {
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
        /// The scratch database (overwritten).
        #[arg(long, default_value = "data/bench-store.db")]
        database: PathBuf,
    },
}

pub fn run(command: Cmd, config: Option<PathBuf>) -> ExitCode {
    match command {
        Cmd::Demo { to, seconds } => demo(
            config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
            to,
            seconds,
        ),
        Cmd::Bench {
            calls,
            seconds,
            passthrough,
            downlink,
            threads,
            record,
            tone,
            separate_load,
            loss,
            srtp,
        } => bench(callgate::bench::BenchOptions {
            calls,
            seconds,
            passthrough,
            downlink,
            record,
            threads,
            tone,
            separate_load,
            loss_percent: loss,
            srtp,
        }),
        Cmd::BenchLoad { options } => {
            let run = serde_json::from_str(&options)
                .map_err(anyhow::Error::from)
                .and_then(callgate::bench::run_load);
            match run {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("callgate bench-load: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::BenchMixer { frames } => {
            let r = callgate::bench::mixer(frames);
            println!(
                "callgate bench-mixer: {} three-party mixes of 20 ms in {:.3} s",
                r.frames,
                r.elapsed.as_secs_f64()
            );
            println!("  per mix                  {:.0} ns", r.ns_per_mix());
            println!(
                "  per monitored call       {:.1} us of CPU per call-second (50 mixes)",
                r.us_per_call_second()
            );
            ExitCode::SUCCESS
        }
        Cmd::BenchCodec { frames, rounds } => match callgate::bench::codecs(frames, rounds) {
            Ok(costs) => {
                println!(
                    "callgate bench-codec: {frames} frames of 20 ms of voice-like audio per round, median of {rounds} rounds"
                );
                for cost in &costs {
                    println!(
                        "  {:<40} {:>6.1} us a frame, {:>6.0} us per call-second",
                        cost.what,
                        cost.per_frame.as_secs_f64() * 1e6,
                        cost.us_per_call_second()
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("callgate bench-codec: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::BenchStore { rows, database } => match callgate::store::bench(&database, rows) {
            Ok(r) => {
                println!(
                    "callgate bench-store: {} calls with segments and logs written in {:.2} s ({:.0} us per call)",
                    r.rows,
                    r.write.as_secs_f64(),
                    r.write.as_secs_f64() * 1e6 / r.rows.max(1) as f64
                );
                for (name, median, worst) in &r.queries {
                    println!(
                        "  calls page, {name:<26} median {:.2} ms, worst of 21 {:.2} ms",
                        median.as_secs_f64() * 1e3,
                        worst.as_secs_f64() * 1e3
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("callgate bench-store: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn parse_downlink(text: &str) -> Result<DownlinkMode, String> {
    match text {
        "adaptive" => Ok(DownlinkMode::Adaptive),
        "opus" => Ok(DownlinkMode::Opus),
        "pcmu" => Ok(DownlinkMode::Pcmu),
        _ => Err(format!("{text:?}: adaptive, opus or pcmu")),
    }
}

fn bench(options: callgate::bench::BenchOptions) -> ExitCode {
    // Quiet unless asked: the gateway's log costs CPU the figures would charge.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("CALLGATE_LOG") {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    }
    match callgate::bench::run(options.clone()) {
        Ok(r) => {
            let per_call = r.cpu_us_per_call_second();
            let mode = match (options.passthrough, options.downlink) {
                (true, _) => "passthrough (PCMU both sides)",
                (false, DownlinkMode::Opus) => {
                    "transcoded (PCMU trunk, Opus browser, Opus downlink)"
                }
                (false, DownlinkMode::Adaptive) => {
                    "PCMU trunk, Opus browser, adaptive downlink (PCMU on a clean path)"
                }
                (false, DownlinkMode::Pcmu) => "PCMU trunk, Opus browser, PCMU downlink",
            };
            let audio = if options.tone {
                "a steady 440 Hz tone"
            } else {
                "voice-like audio"
            };
            let load = if options.separate_load {
                "load in a separate process, this process charged whole"
            } else {
                "load in this process, the gateway's threads charged"
            };
            println!(
                "callgate bench: {} calls, {mode}, {audio}, {} gateway thread(s), {load}",
                r.calls, options.threads
            );
            if options.srtp {
                println!("  trunk side               SRTP (SDES, AES_CM_128_HMAC_SHA1_80)");
            }
            if options.loss_percent > 0 {
                println!(
                    "  loss toward browsers     {} % of the RTP reaching them dropped",
                    options.loss_percent
                );
            }
            println!("  connected peers          {}/{}", r.connected, r.calls);
            if let Some(dir) = &options.record {
                println!(
                    "  recording                every call, stereo 8 kHz WAV, into {}",
                    dir.display()
                );
            }
            println!(
                "  gateway CPU              {:.3} s over {:.1} s ({:.3} s of it in the kernel)",
                r.gateway_cpu.as_secs_f64(),
                r.measured.as_secs_f64(),
                r.gateway_system.as_secs_f64()
            );
            println!(
                "  CPU per call-second      {per_call:.0} us  ({:.2} % of a core per call)",
                per_call / 1e4
            );
            println!(
                "  calls per core           {:.0}  (target 250: ratio {:.2})",
                1e6 / per_call.max(1.0),
                1e6 / per_call.max(1.0) / 250.0
            );
            println!(
                "  peer setup (all at once) median {:.1} ms, p95 {:.1} ms",
                r.percentile_setup_ms(0.5),
                r.percentile_setup_ms(0.95)
            );
            println!(
                "  audio frames             {} to browsers, {} to trunks ({:.0}/s per call each way)",
                r.frames_to_browsers,
                r.trunk_packets_back,
                r.frames_to_browsers as f64 / r.connected.max(1) as f64 / r.measured.as_secs_f64()
            );
            println!(
                "  heard by the browsers    {:.1} % Opus, the rest PCMU",
                100.0 * r.opus_frames_to_browsers as f64 / r.frames_to_browsers.max(1) as f64
            );
            for (way, delays) in [
                ("to browsers", &r.delay_to_browser_ms),
                ("to trunks  ", &r.delay_to_trunk_ms),
            ] {
                println!(
                    "  delay {way}        p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms ({} pulses)",
                    callgate::bench::percentile(delays, 0.5),
                    callgate::bench::percentile(delays, 0.95),
                    callgate::bench::percentile(delays, 0.99),
                    delays.len()
                );
            }
            println!(
                "  memory                   {} KiB RSS before, {} KiB after ({:.0} KiB per call)",
                r.rss_kib_before,
                r.rss_kib_after,
                r.rss_kib_after.saturating_sub(r.rss_kib_before) as f64 / r.calls.max(1) as f64
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("callgate bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(config: PathBuf, to: Option<String>, seconds: u64) -> ExitCode {
    let config = match callgate::app::load_config(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("callgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(did) = to.or_else(|| config.agents.iter().find_map(|a| a.dids.first().cloned()))
    else {
        eprintln!("callgate: no agent has a DID in the config; give one with --to");
        return ExitCode::FAILURE;
    };
    // A gateway listening on every address is reached on loopback.
    let mut gateway = config.sip.listen;
    if gateway.ip().is_unspecified() {
        gateway.set_ip(std::net::IpAddr::from([127, 0, 0, 1]));
    }
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    println!("calling {did} at {gateway}");
    match runtime.block_on(callgate::demo::run(
        gateway,
        &did,
        Duration::from_secs(seconds),
    )) {
        Ok(report) => {
            println!(
                "call over after {:.1} s{}: sent {} packets, received {} from the agent (RMS {:.0})",
                report.talked.as_secs_f64(),
                if report.agent_hung_up { " (the agent hung up)" } else { "" },
                report.packets_sent,
                report.packets_received,
                report.received_rms
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("callgate: {e}");
            ExitCode::FAILURE
        }
    }
}
