//! `callgate bench`: what one bridged call costs. It runs the gateway's real media path (the
//! per-call media tasks with their jitter buffers and codecs, and the WebRTC host with str0m's
//! ICE, DTLS and SRTP on one socket) on a runtime of its own, and drives it from a second
//! runtime that plays N trunks (PCMU RTP at 50 packets a second) and N browsers (str0m peers
//! sending Opus). Only the gateway runtime's threads are charged: their CPU time is read
//! from /proc per thread. SIP signalling is not part of it (a few messages per call).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::Input;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::media::bridge::AgentLink;
use crate::media::call::{
    AgentWires, CallMedia, MediaCommand, MediaSockets, Source, ToMedia, Toward, COMMAND_CAPACITY,
};
use crate::media::recording::{RecordWant, RecordingFormat, RecordingWriter};
use crate::media::rtp::{self, RtpHeader};
use crate::media::srtp::SrtpSession;
use crate::media::stats::MediaCounters;
use crate::sdes::{MasterKey, SrtpSuite};
use crate::sdp::{AudioSession, Codec, Direction, SrtpKeys};
use crate::webrtc::downlink::{DownlinkMode, SimulatedLoss};
use crate::webrtc::is_rtp;
use crate::webrtc::peer::{
    pulse_frames, tone_frames, voice_frames, SimulatedBrowser, PULSE_PERIOD,
};
use crate::webrtc::{DownlinkOptions, PeerCodec, Route, WebrtcCounters, WebrtcHost, WebrtcInput};

/// Gateway threads are named so their CPU time can be told from the load's.
const GATEWAY_THREAD: &str = "cg-gateway";
/// What the gateway's CPU is: its runtime's threads and the recording writer's.
const GATEWAY_THREADS: &[&str] = &[GATEWAY_THREAD, "cg-recording"];

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub calls: usize,
    pub seconds: u64,
    /// The browsers offer only PCMU: the call passes through without transcoding.
    pub passthrough: bool,
    /// Otherwise they offer Opus and PCMU and send Opus, as Chrome does; this chooses what
    /// they hear (`webrtc.downlink`).
    pub downlink: DownlinkMode,
    /// Gateway worker threads.
    pub threads: usize,
    /// Record every call (stereo, 8 kHz) into this directory.
    pub record: Option<std::path::PathBuf>,
    /// Both sides play a steady tone rather than voice-like audio.
    pub tone: bool,
    /// The simulated trunks and browsers run in a child process: this process's CPU and
    /// memory are then the gateway's alone.
    pub separate_load: bool,
    /// The browsers lose this share of the RTP that reaches them (evenly spread), so their
    /// receiver reports show loss and an adaptive downlink switches to Opus with FEC.
    pub loss_percent: u8,
    /// The trunk side is SRTP (SDES, AES_CM_128_HMAC_SHA1_80) rather than plain RTP.
    pub srtp: bool,
}

/// The SDES keys of bench call `i`: the gateway's and the simulated trunk's. Both sides
/// derive them from the call's number, as if SDP had carried them.
fn bench_keys(i: usize) -> SrtpKeys {
    let mut ours = [0x47u8; crate::sdes::MASTER_KEY_LEN];
    let mut theirs = [0x54u8; crate::sdes::MASTER_KEY_LEN];
    ours[..8].copy_from_slice(&(i as u64).to_be_bytes());
    theirs[..8].copy_from_slice(&(i as u64).to_be_bytes());
    SrtpKeys {
        suite: SrtpSuite::AesCm128HmacSha1_80,
        ours: MasterKey(ours),
        theirs: MasterKey(theirs),
    }
}

/// The simulated trunk's SRTP for call `i`: the bench keys the other way round.
fn trunk_srtp(i: usize) -> anyhow::Result<SrtpSession> {
    let keys = bench_keys(i);
    Ok(SrtpSession::new(keys.suite, &keys.theirs, &keys.ours)?)
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub calls: usize,
    pub connected: usize,
    pub measured: Duration,
    pub gateway_cpu: Duration,
    /// Of which in the kernel (system calls, the network stack).
    pub gateway_system: Duration,
    pub setup_ms: Vec<f64>,
    pub frames_to_browsers: u64,
    /// Of which Opus (the rest PCMU).
    pub opus_frames_to_browsers: u64,
    pub frames_from_browsers: u64,
    pub trunk_packets_back: u64,
    pub rss_kib_before: u64,
    pub rss_kib_after: u64,
    /// One-way delay through the gateway (ms), trunk to browser and browser to trunk: the
    /// time from a pulse's first frame leaving the sender to its first loud frame arriving.
    pub delay_to_browser_ms: Vec<f64>,
    pub delay_to_trunk_ms: Vec<f64>,
}

impl BenchReport {
    /// CPU µs the gateway spends per second of one call.
    pub fn cpu_us_per_call_second(&self) -> f64 {
        self.gateway_cpu.as_secs_f64() * 1e6
            / (self.connected.max(1) as f64 * self.measured.as_secs_f64())
    }

    pub fn percentile_setup_ms(&self, p: f64) -> f64 {
        percentile(&self.setup_ms, p)
    }
}

/// Calls whose audio is pulses rather than voice, to time the way through the gateway (the
/// others keep the voice-like audio whose cost the bench reports).
const PROBE_CALLS: usize = 10;

/// One call as the gateway runs it: its media task and its agent's peer id.
struct GatewayCall {
    rtp_port: u16,
    commands: mpsc::Sender<ToMedia>,
}

/// The gateway side of the bench: the WebRTC host and one media task per call, on a runtime
/// of their own.
struct GatewaySide {
    rt: tokio::runtime::Runtime,
    webrtc: mpsc::Sender<WebrtcInput>,
    media_events: mpsc::Sender<crate::media::call::MediaEvent>,
    counters: Arc<MediaCounters>,
    recordings: Option<RecordingWriter>,
    calls: Vec<GatewayCall>,
}

impl GatewaySide {
    fn start(options: &BenchOptions) -> anyhow::Result<GatewaySide> {
        crate::webrtc::install_crypto();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .thread_name(GATEWAY_THREAD)
            .enable_all()
            .build()?;
        let (webrtc, webrtc_rx) = mpsc::channel(crate::webrtc::INPUT_CAPACITY);
        let (events_tx, mut events_rx) = mpsc::channel(1024);
        let host_socket = rt.block_on(UdpSocket::bind("127.0.0.1:0"))?;
        let host = WebrtcHost::new(
            host_socket,
            None,
            events_tx,
            Arc::new(WebrtcCounters::default()),
        )?
        .with_downlink(DownlinkOptions {
            mode: options.downlink,
            ..DownlinkOptions::default()
        });
        rt.spawn(host.run(webrtc_rx));
        rt.spawn(async move { while events_rx.recv().await.is_some() {} });
        let recordings = match &options.record {
            Some(dir) => Some(RecordingWriter::start(RecordingFormat {
                directory: dir.clone(),
                stereo: true,
                sample_rate: 8000,
            })?),
            None => None,
        };
        let (media_events, mut media_events_rx) = mpsc::channel(1024);
        rt.spawn(async move { while media_events_rx.recv().await.is_some() {} });
        Ok(GatewaySide {
            rt,
            webrtc,
            media_events,
            counters: Arc::new(MediaCounters::default()),
            recordings,
            calls: Vec::new(),
        })
    }

    /// A call from the trunk at `trunk`, bridged to the browser that sent `offer`: the
    /// call's RTP port and the browser's answer.
    fn add_call(
        &mut self,
        trunk: SocketAddr,
        offer: String,
        srtp: bool,
    ) -> anyhow::Result<(u16, String)> {
        let i = self.calls.len();
        let (rtp, rtcp) = self.rt.block_on(async {
            let rtp = UdpSocket::bind("127.0.0.1:0").await?;
            let rtcp = UdpSocket::bind("127.0.0.1:0").await?;
            Ok::<_, std::io::Error>((rtp, rtcp))
        })?;
        let rtp_port = rtp.local_addr()?.port();
        let audio = AudioSession {
            codec: Codec::Pcmu,
            pt: 0,
            clock_rate: 8000,
            ptime: 20,
            dtmf_pt: None,
            remote: Some(trunk),
            remote_rtcp: None,
            local_direction: Direction::SendRecv,
            remote_direction: Direction::SendRecv,
            opus_fec: false,
            opus_stereo: false,
            srtp: srtp.then(|| bench_keys(i)),
        };
        let media = CallMedia::new(
            format!("bench-{i}").into(),
            MediaSockets {
                rtp,
                rtcp,
                port: rtp_port,
            },
            audio,
            Source::Silence,
            self.media_events.clone(),
            Arc::clone(&self.counters),
        );
        let media = match &self.recordings {
            Some(writer) => media.with_recording_writer(writer.clone()),
            None => media,
        };
        let (commands, rx) = mpsc::channel(COMMAND_CAPACITY);
        self.rt.spawn(media.run(rx));
        let codec = Arc::new(PeerCodec::default());
        let (reply, answer) = oneshot::channel();
        self.webrtc.blocking_send(WebrtcInput::Offer {
            peer: i as u64,
            sdp: offer,
            codec: Arc::clone(&codec),
            reply,
        })?;
        let answer = answer.blocking_recv()??;
        let (to_call, from_agent) = mpsc::channel(crate::webrtc::AGENT_AUDIO_CAPACITY);
        if self.recordings.is_some() {
            commands.blocking_send(MediaCommand::Record(RecordWant::On).into())?;
        }
        let link = AgentLink {
            peer: i as u64,
            codec,
            joined: None,
        };
        let wires = AgentWires {
            from_agent,
            toward: Toward::Peer {
                webrtc: self.webrtc.clone(),
                peer: i as u64,
            },
        };
        commands.blocking_send(ToMedia::wired(MediaCommand::Bridge(link), wires))?;
        self.webrtc.blocking_send(WebrtcInput::Route {
            peer: i as u64,
            route: Some(Route {
                call: format!("bench-{i}").into(),
                to_call,
            }),
        })?;
        self.calls.push(GatewayCall { rtp_port, commands });
        Ok((rtp_port, answer))
    }

    fn stop(self) {
        for call in &self.calls {
            let _ = call.commands.try_send(MediaCommand::Stop.into());
        }
        self.rt.shutdown_timeout(Duration::from_secs(1));
        if let Some(writer) = self.recordings {
            writer.shutdown(Duration::from_secs(5));
        }
    }
}

/// What the load needs to know of the bench.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct LoadOptions {
    pub calls: usize,
    pub seconds: u64,
    pub passthrough: bool,
    pub tone: bool,
    #[serde(default)]
    pub loss_percent: u8,
    #[serde(default)]
    pub srtp: bool,
}

impl From<&BenchOptions> for LoadOptions {
    fn from(o: &BenchOptions) -> LoadOptions {
        LoadOptions {
            calls: o.calls,
            seconds: o.seconds,
            passthrough: o.passthrough,
            tone: o.tone,
            loss_percent: o.loss_percent,
            srtp: o.srtp,
        }
    }
}

/// The simulated trunks and browsers, before they are connected.
struct Load {
    rt: tokio::runtime::Runtime,
    browsers: Vec<SimulatedBrowser>,
    trunks: Vec<UdpSocket>,
}

/// What the load saw over the measured stretch.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct LoadOutcome {
    measured: Duration,
    received: u64,
    received_opus: u64,
    back: u64,
    setup_ms: Vec<f64>,
    down: Vec<f64>,
    up: Vec<f64>,
}

impl Load {
    fn new() -> anyhow::Result<Load> {
        crate::webrtc::install_crypto();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cg-load")
            .enable_all()
            .build()?;
        Ok(Load {
            rt,
            browsers: Vec::new(),
            trunks: Vec::new(),
        })
    }

    /// One more trunk and browser: the trunk's address and the browser's offer.
    fn add(&mut self, passthrough: bool) -> anyhow::Result<(SocketAddr, String)> {
        let trunk = self.rt.block_on(UdpSocket::bind("127.0.0.1:0"))?;
        let mut browser = self
            .rt
            .block_on(SimulatedBrowser::offering(!passthrough, true))?;
        let offer = browser.offer().ok_or_else(|| anyhow::anyhow!("no offer"))?;
        let addr = trunk.local_addr()?;
        self.trunks.push(trunk);
        self.browsers.push(browser);
        Ok((addr, offer))
    }

    /// The gateway's answer to browser `i`.
    fn answer(&mut self, i: usize, answer: &str) -> anyhow::Result<()> {
        let browser = self
            .browsers
            .get_mut(i)
            .ok_or_else(|| anyhow::anyhow!("no browser {i}"))?;
        if !browser.answer(answer) {
            anyhow::bail!("browser rejected the answer");
        }
        Ok(())
    }

    /// Run the load against the gateway's call ports; `at_start` runs when the warm-up ends
    /// and measuring begins.
    fn run(
        self,
        options: LoadOptions,
        ports: Vec<u16>,
        at_start: Box<dyn FnOnce() + Send>,
    ) -> anyhow::Result<LoadOutcome> {
        let (result_tx, result_rx) = std::sync::mpsc::channel();
        let Load {
            rt,
            browsers,
            trunks,
        } = self;
        rt.spawn(async move {
            let outcome = drive(options, browsers, trunks, ports, at_start).await;
            let _ = result_tx.send(outcome);
        });
        let outcome = result_rx.recv_timeout(Duration::from_secs(options.seconds + 135))?;
        rt.shutdown_timeout(Duration::from_secs(1));
        Ok(outcome)
    }
}

/// Every browser and trunk sends a frame each 20 ms and reads what arrives.
async fn drive(
    options: LoadOptions,
    mut browsers: Vec<SimulatedBrowser>,
    trunk_sockets: Vec<UdpSocket>,
    ports: Vec<u16>,
    at_start: Box<dyn FnOnce() + Send>,
) -> LoadOutcome {
    let LoadOptions {
        seconds,
        passthrough,
        tone,
        loss_percent,
        srtp,
        ..
    } = options;
    let loss = (loss_percent > 0).then_some(SimulatedLoss {
        percent: loss_percent,
        after_seconds: 0,
        for_seconds: 0,
    });
    let mut rtp_in = vec![0u64; browsers.len()];
    let mut at_start = Some(at_start);
    let (opus_frames, pcmu_frames) = if tone {
        (
            tone_frames(Codec::Opus, 440.0),
            tone_frames(Codec::Pcmu, 440.0),
        )
    } else {
        (voice_frames(Codec::Opus), voice_frames(Codec::Pcmu))
    };
    let browser_frames = if passthrough {
        &pcmu_frames
    } else {
        &opus_frames
    };
    let pcmu_pulses = pulse_frames(Codec::Pcmu);
    let browser_pulses = if passthrough {
        pcmu_pulses.clone()
    } else {
        pulse_frames(Codec::Opus)
    };
    let probes = browsers.len().min(PROBE_CALLS);
    let started = Instant::now();
    // With loss, the browsers' first receiver reports (str0m sends its first about 10 s in)
    // must have switched an adaptive downlink before measuring starts.
    let warmup = Duration::from_secs(if loss.is_some() { 15 } else { 3 });
    let (in_tx, mut in_rx) = mpsc::channel::<(usize, SocketAddr, Vec<u8>, Instant)>(65536);
    for (i, b) in browsers.iter_mut().enumerate() {
        b.keep_audio = i < probes;
        let socket = Arc::clone(&b.socket);
        let tx = in_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let at = Instant::now();
                if tx.send((i, from, buf[..n].to_vec(), at)).await.is_err() {
                    break;
                }
            }
        });
    }
    let mut to_browser: Vec<DelayProbe> = (0..probes).map(|_| DelayProbe::new()).collect();
    let to_trunk: Vec<Arc<std::sync::Mutex<DelayProbe>>> = (0..probes)
        .map(|_| Arc::new(std::sync::Mutex::new(DelayProbe::new())))
        .collect();
    let trunk_back = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let trunks: Vec<Arc<UdpSocket>> = trunk_sockets.into_iter().map(Arc::new).collect();
    // Each simulated trunk protects what it sends and opens what it receives, as a trunk
    // speaking SRTP does; a packet that fails is not counted as come back.
    let mut trunk_out: Vec<Option<SrtpSession>> = Vec::with_capacity(trunks.len());
    for (i, t) in trunks.iter().enumerate() {
        let socket = Arc::clone(t);
        let back = Arc::clone(&trunk_back);
        let probe = to_trunk.get(i).cloned();
        let mut inbound = srtp.then(|| trunk_srtp(i)).transpose().ok().flatten();
        trunk_out.push(srtp.then(|| trunk_srtp(i)).transpose().ok().flatten());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, _)) = socket.recv_from(&mut buf).await {
                let at = Instant::now();
                let n = match inbound.as_mut() {
                    Some(session) if !rtp::is_rtcp(&buf[..n]) => {
                        match session.unprotect_rtp(&mut buf[..n]) {
                            Ok(len) => len,
                            Err(_) => continue,
                        }
                    }
                    _ => n,
                };
                back.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let (Some(probe), Ok(packet)) = (probe.as_ref(), rtp::parse(&buf[..n])) {
                    if let Ok(mut probe) = probe.lock() {
                        let measuring = at.duration_since(started) >= warmup;
                        probe.heard(Codec::Pcmu, packet.payload, at, measuring);
                    }
                }
            }
        });
    }
    // Calls are spread over the 20 ms frame in PHASES groups, as independent calls are:
    // every call sending in the same instant would time the gateway's queue, not its path.
    let mut clock = tokio::time::interval(FRAME_TIME / PHASES as u32);
    let mut tick = 0usize;
    let mut measure_start: Option<(Instant, u64, u64, u64)> = None;
    let total = warmup + Duration::from_secs(seconds);
    let mut timeouts: Vec<Instant> = vec![Instant::now(); browsers.len()];
    loop {
        tokio::select! {
            _ = clock.tick() => {
                let frame = tick / PHASES;
                let phase = tick % PHASES;
                tick += 1;
                let payload = &browser_frames[frame % browser_frames.len()];
                let pcmu = &pcmu_frames[frame % pcmu_frames.len()];
                let pulse_starts = frame.is_multiple_of(PULSE_PERIOD);
                for (i, b) in browsers.iter_mut().enumerate().skip(phase).step_by(PHASES) {
                    let probe = i < probes;
                    if b.connected.is_some() {
                        let audio = if probe {
                            &browser_pulses[frame % browser_pulses.len()]
                        } else {
                            payload
                        };
                        b.send_frame(audio);
                        timeouts[i] = b.drain().await;
                        if probe && pulse_starts {
                            if let Ok(mut p) = to_trunk[i].lock() {
                                p.sent = Some(Instant::now());
                            }
                        }
                    }
                    let header = RtpHeader {
                        marker: frame == 0,
                        payload_type: 0,
                        sequence: frame as u16,
                        timestamp: (frame * 160) as u32,
                        ssrc: 0x5eed_0000 + i as u32,
                        csrcs: Vec::new(),
                    };
                    let mut packet = Vec::with_capacity(200);
                    let audio = if probe { &pcmu_pulses[frame % pcmu_pulses.len()] } else { pcmu };
                    rtp::write(&header, audio, &mut packet);
                    if let Some(session) = trunk_out[i].as_mut() {
                        if session.protect_rtp(&mut packet).is_err() {
                            continue;
                        }
                    }
                    let _ = trunks[i].send_to(&packet, SocketAddr::from(([127, 0, 0, 1], ports[i]))).await;
                    if probe && pulse_starts {
                        to_browser[i].sent = Some(Instant::now());
                    }
                }
                let now = Instant::now();
                for (i, b) in browsers.iter_mut().enumerate() {
                    if timeouts[i] <= now {
                        let _ = b.rtc.handle_input(Input::Timeout(now));
                        timeouts[i] = b.drain().await;
                    }
                }
                let elapsed = started.elapsed();
                if measure_start.is_none() && elapsed >= warmup {
                    if let Some(f) = at_start.take() {
                        f();
                    }
                    let received: u64 = browsers.iter().map(|b| b.received).sum();
                    let opus: u64 = browsers.iter().map(|b| b.received_opus).sum();
                    measure_start = Some((now, received, opus, trunk_back.load(std::sync::atomic::Ordering::Relaxed)));
                }
                if elapsed >= total {
                    break;
                }
            }
            Some((i, from, bytes, at)) = in_rx.recv() => {
                if let Some(loss) = loss.filter(|_| is_rtp(&bytes)) {
                    rtp_in[i] += 1;
                    if loss.drops(Duration::ZERO, rtp_in[i] - 1) {
                        continue;
                    }
                }
                let b = &mut browsers[i];
                b.receive_at(from, &bytes, at);
                timeouts[i] = b.drain().await;
                if let Some(probe) = to_browser.get_mut(i) {
                    let measuring = started.elapsed() >= warmup;
                    for heard in b.heard.drain(..) {
                        if let Some(codec) = heard.codec {
                            probe.heard(codec, &heard.payload, heard.arrived, measuring);
                        }
                    }
                }
            }
        }
    }
    let (t0, received0, opus0, back0) = measure_start.unwrap_or((started, 0, 0, 0));
    LoadOutcome {
        measured: t0.elapsed(),
        received: browsers.iter().map(|b| b.received).sum::<u64>() - received0,
        received_opus: browsers.iter().map(|b| b.received_opus).sum::<u64>() - opus0,
        back: trunk_back.load(std::sync::atomic::Ordering::Relaxed) - back0,
        setup_ms: browsers
            .iter()
            .filter_map(|b| b.connected.map(|d| d.as_secs_f64() * 1000.0))
            .collect(),
        down: to_browser.into_iter().flat_map(|p| p.delays_ms).collect(),
        up: to_trunk
            .iter()
            .flat_map(|p| p.lock().map(|p| p.delays_ms.clone()).unwrap_or_default())
            .collect(),
    }
}

fn report(
    options: &BenchOptions,
    outcome: LoadOutcome,
    cpu: (CpuMark, CpuMark),
    rss: (u64, u64),
) -> BenchReport {
    BenchReport {
        calls: options.calls,
        connected: outcome.setup_ms.len(),
        measured: outcome.measured,
        gateway_cpu: cpu.1.total.saturating_sub(cpu.0.total),
        gateway_system: cpu.1.system.saturating_sub(cpu.0.system),
        setup_ms: outcome.setup_ms,
        frames_to_browsers: outcome.received,
        opus_frames_to_browsers: outcome.received_opus,
        frames_from_browsers: 0,
        trunk_packets_back: outcome.back,
        rss_kib_before: rss.0,
        rss_kib_after: rss.1,
        delay_to_browser_ms: outcome.down,
        delay_to_trunk_ms: outcome.up,
    }
}

/// Run the benchmark, the load in this process (its threads are not charged; its memory is
/// in the RSS figures).
pub fn run(options: BenchOptions) -> anyhow::Result<BenchReport> {
    if options.separate_load {
        return run_beside_load(options);
    }
    let rss_before = rss_kib();
    let mut gateway = GatewaySide::start(&options)?;
    let mut load = Load::new()?;
    for i in 0..options.calls {
        let (trunk, offer) = load.add(options.passthrough)?;
        let (_, answer) = gateway.add_call(trunk, offer, options.srtp)?;
        load.answer(i, &answer)?;
    }
    let ports = gateway.calls.iter().map(|c| c.rtp_port).collect();
    let start = Arc::new(std::sync::Mutex::new(CpuMark::default()));
    let mark = Arc::clone(&start);
    let outcome = load.run(
        LoadOptions::from(&options),
        ports,
        Box::new(move || {
            if let Ok(mut m) = mark.lock() {
                *m = CpuMark::now(false);
            }
        }),
    )?;
    let end = CpuMark::now(false);
    let rss_after = rss_kib();
    let start = start.lock().map(|m| *m).unwrap_or_default();
    gateway.stop();
    Ok(report(
        &options,
        outcome,
        (start, end),
        (rss_before, rss_after),
    ))
}

/// One line of the bench's exchange with its load process (JSON, one per line).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum LoadLine {
    /// Load → gateway: a call's trunk address and its browser's offer.
    Call { trunk: SocketAddr, offer: String },
    /// Gateway → load: the call's RTP port and the answer.
    Answer { port: u16, answer: String },
    /// Load → gateway: the warm-up is over.
    Measuring,
    /// Load → gateway: done, with what it saw.
    Done { outcome: LoadOutcome },
}

/// The gateway in this process, the load in a child (`callgate bench-load`): this process's
/// CPU and memory are the gateway's alone, as a relay's are when its peers are elsewhere.
fn run_beside_load(options: BenchOptions) -> anyhow::Result<BenchReport> {
    use std::io::{BufRead, Write};
    let rss_before = rss_kib();
    let mut gateway = GatewaySide::start(&options)?;
    let load_options = serde_json::to_string(&LoadOptions::from(&options))?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["bench-load", &load_options])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut to_load = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let mut from_load = std::io::BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    )
    .lines();
    let mut next_line = || -> anyhow::Result<LoadLine> {
        let line = from_load
            .next()
            .ok_or_else(|| anyhow::anyhow!("the load process ended early"))??;
        Ok(serde_json::from_str(&line)?)
    };
    // Every offer is read before any answer is written: neither side blocks on a full pipe
    // while the other is still writing.
    let mut offers = Vec::with_capacity(options.calls);
    for _ in 0..options.calls {
        let LoadLine::Call { trunk, offer } = next_line()? else {
            anyhow::bail!("the load process sent something else than a call");
        };
        offers.push((trunk, offer));
    }
    for (trunk, offer) in offers {
        let (port, answer) = gateway.add_call(trunk, offer, options.srtp)?;
        writeln!(
            to_load,
            "{}",
            serde_json::to_string(&LoadLine::Answer { port, answer })?
        )?;
    }
    to_load.flush()?;
    let mut start = None;
    let outcome = loop {
        match next_line()? {
            LoadLine::Measuring => start = Some(CpuMark::now(true)),
            LoadLine::Done { outcome } => break outcome,
            other => anyhow::bail!("unexpected from the load process: {other:?}"),
        }
    };
    let end = CpuMark::now(true);
    let rss_after = rss_kib();
    let _ = child.wait();
    gateway.stop();
    let start = start.ok_or_else(|| anyhow::anyhow!("the load never started measuring"))?;
    Ok(report(
        &options,
        outcome,
        (start, end),
        (rss_before, rss_after),
    ))
}

/// `callgate bench-load`: the simulated trunks and browsers of a bench whose gateway runs in
/// the parent process, which talks to it over stdin and stdout (see `LoadLine`).
pub fn run_load(options: LoadOptions) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let mut load = Load::new()?;
    let stdout = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let say = |line: &LoadLine| -> anyhow::Result<()> {
        let mut out = stdout.lock().map_err(|_| anyhow::anyhow!("stdout lock"))?;
        writeln!(out, "{}", serde_json::to_string(line)?)?;
        out.flush()?;
        Ok(())
    };
    let mut offers = Vec::with_capacity(options.calls);
    for _ in 0..options.calls {
        offers.push(load.add(options.passthrough)?);
    }
    for (trunk, offer) in offers {
        say(&LoadLine::Call { trunk, offer })?;
    }
    let mut ports = Vec::with_capacity(options.calls);
    let mut lines = std::io::stdin().lock().lines();
    for i in 0..options.calls {
        let line = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("the gateway ended early"))??;
        let LoadLine::Answer { port, answer } = serde_json::from_str(&line)? else {
            anyhow::bail!("the gateway sent something else than an answer");
        };
        load.answer(i, &answer)?;
        ports.push(port);
    }
    let started = Arc::clone(&stdout);
    let outcome = load.run(
        options,
        ports,
        Box::new(move || {
            if let Ok(mut out) = started.lock() {
                let line = serde_json::to_string(&LoadLine::Measuring).unwrap_or_default();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }),
    )?;
    say(&LoadLine::Done { outcome })
}

mod measure;
mod micro;
use measure::*;
pub use measure::{percentile, thread_cpu_split};
pub use micro::*;
