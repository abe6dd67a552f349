//! An agent's (or supervisor's) browser for tests that need exact timing: a str0m peer with
//! ICE, DTLS and SRTP on a thread of its own, negotiated over the agent's WebSocket, sending a
//! tone as Opus every 20 ms and keeping what it hears, decoded, with arrival times.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callgate::media::codec::Decoder;
use callgate::sdp::Codec;
use callgate::webrtc::peer::{tone_frames, HeardFrame, SimulatedBrowser};
use serde_json::json;

use super::{connect_agent, next_of, request, AgentSocket, Gateway};

/// Sign in with `token` on the agent WebSocket (the snapshot taken) and connect a browser
/// sending a tone at `hz`.
pub fn signed_in(gw: &Gateway, token: &str, hz: f64) -> (AgentSocket, Browser) {
    let mut socket = connect_agent(gw, &format!("?token={token}"));
    next_of(&mut socket, "calls.snapshot");
    let browser = Browser::connect(&mut socket, hz);
    (socket, browser)
}

/// 8 kHz PCM frames as they arrived.
pub type Heard = Arc<Mutex<Vec<(Instant, Vec<i16>)>>>;
/// Audio frames as they arrived, undecoded, with their RTP sequence numbers and times.
pub type Payloads = Arc<Mutex<Vec<HeardFrame>>>;

pub struct Browser {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
    heard: Heard,
    /// The audio payloads as they arrived, undecoded.
    payloads: Payloads,
    /// The path toward the browser loses every n-th RTP packet (0: none).
    drop_every: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
    /// The gateway's answer to its offer.
    pub answer: String,
}

impl Browser {
    /// Negotiate over the agent's socket (`webrtc.offer` → `webrtc.answer`) and start sending
    /// a tone at `hz`, offering Opus only.
    pub fn connect(agent: &mut AgentSocket, hz: f64) -> Browser {
        Browser::connect_offering(agent, hz, false)
    }

    /// As `connect`, offering PCMU next to Opus when `pcmu` (as Chrome does); it sends Opus.
    pub fn connect_offering(agent: &mut AgentSocket, hz: f64, pcmu: bool) -> Browser {
        let (offer_tx, offer_rx) = std::sync::mpsc::channel::<String>();
        let (answer_tx, answer_rx) = std::sync::mpsc::channel::<String>();
        let stop = Arc::new(AtomicBool::new(false));
        let heard: Heard = Arc::new(Mutex::new(Vec::new()));
        let stopped = Arc::clone(&stop);
        let keep = Arc::clone(&heard);
        let payloads: Payloads = Arc::new(Mutex::new(Vec::new()));
        let keep_payloads = Arc::clone(&payloads);
        let drop_every = Arc::new(AtomicUsize::new(0));
        let lossy = Arc::clone(&drop_every);
        let lost = Arc::new(AtomicUsize::new(0));
        let count_lost = Arc::clone(&lost);
        let thread =
            std::thread::spawn(move || {
                callgate::webrtc::install_crypto();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                let mut browser = SimulatedBrowser::offering(true, pcmu)
                    .await
                    .expect("browser socket");
                browser.keep_audio = true;
                offer_tx.send(browser.offer().expect("offer")).expect("offer sent");
                let answer = answer_rx.recv().expect("answer");
                assert!(browser.answer(&answer), "the gateway's answer is accepted");
                let frames = tone_frames(Codec::Opus, hz);
                let mut opus = Decoder::new(Codec::Opus).expect("decoder");
                let mut g711 = Decoder::new(Codec::Pcmu).expect("decoder");
                let socket = Arc::clone(&browser.socket);
                let mut buf = vec![0u8; 2048];
                let mut clock = tokio::time::interval(Duration::from_millis(20));
                let mut sent = 0usize;
                let mut rtp_seen = 0usize;
                while !stopped.load(Ordering::SeqCst) {
                    tokio::select! {
                        _ = clock.tick() => {
                            if browser.connected.is_some() {
                                browser.send_frame(&frames[sent % frames.len()]);
                                sent += 1;
                            }
                            let _ = browser.rtc.handle_input(str0m::Input::Timeout(Instant::now()));
                            browser.drain().await;
                        }
                        received = socket.recv_from(&mut buf) => {
                            if let Ok((n, from)) = received {
                                // RTP (not RTCP, RFC 5761 types 192-223) is what the path loses.
                                let rtp = n > 12
                                    && buf[0] >> 6 == 2
                                    && !(192..=223).contains(&buf[1]);
                                if rtp {
                                    rtp_seen += 1;
                                    let every = lossy.load(Ordering::Relaxed);
                                    if every > 0 && rtp_seen.is_multiple_of(every) {
                                        count_lost.fetch_add(1, Ordering::Relaxed);
                                        continue;
                                    }
                                }
                                browser.receive(from, &buf[..n]);
                                browser.drain().await;
                            }
                        }
                    }
                    if !browser.heard.is_empty() {
                        let mut kept = keep.lock().expect("heard");
                        let mut raw = keep_payloads.lock().expect("payloads");
                        for frame in browser.heard.drain(..) {
                            let decoder = match frame.codec {
                                Some(Codec::Pcmu) => &mut g711,
                                _ => &mut opus,
                            };
                            let mut pcm = Vec::new();
                            if decoder.decode(&frame.payload, &mut pcm).is_ok() {
                                kept.push((frame.at, pcm));
                            }
                            raw.push(frame);
                        }
                    }
                }
                browser.received
            })
            });
        let offer = offer_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("offer");
        let answer = request(agent, json!({"type": "webrtc.offer", "sdp": offer}));
        assert_eq!(answer["type"], "webrtc.answer", "{answer}");
        let answer = answer["sdp"].as_str().expect("sdp").to_string();
        answer_tx.send(answer.clone()).expect("answer handed over");
        Browser {
            stop,
            thread: Some(thread),
            heard,
            payloads,
            drop_every,
            lost,
            answer,
        }
    }

    /// From now on the path toward the browser loses every `n`-th RTP packet (0: none); the
    /// browser's receiver reports tell the gateway.
    pub fn lose_every(&self, n: usize) {
        self.drop_every.store(n, Ordering::Relaxed);
    }

    /// The audio payloads that arrived between `from` and `to`, undecoded.
    pub fn payloads_between(&self, from: Instant, to: Instant) -> Vec<Vec<u8>> {
        self.frames_between(from, to)
            .into_iter()
            .map(|f| f.payload)
            .collect()
    }

    /// The audio frames that arrived between `from` and `to`.
    pub fn frames_between(&self, from: Instant, to: Instant) -> Vec<HeardFrame> {
        self.payloads
            .lock()
            .expect("payloads")
            .iter()
            .filter(|f| f.at >= from && f.at <= to)
            .cloned()
            .collect()
    }

    /// RTP packets the lossy path dropped so far.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::Relaxed)
    }

    /// What it heard between `from` and `to`, as one run of samples.
    pub fn heard_between(&self, from: Instant, to: Instant) -> Vec<i16> {
        self.heard
            .lock()
            .expect("heard")
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .flat_map(|(_, pcm)| pcm.iter().copied())
            .collect()
    }

    /// Stop; the number of audio frames it received.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("browser thread"))
            .unwrap_or(0)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
