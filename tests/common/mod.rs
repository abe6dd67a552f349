//! Shared harness for the end-to-end tests: starts the real `callgate` binary on a config of
//! its own (loopback ports per test), runs real peers (sipp, baresip, tcpdump), and decodes
//! what they captured. Every external tool is required: a missing one fails the test.
#![allow(dead_code)]

mod agent_ws;
pub mod baresip;
pub mod browser;
pub mod caller;
pub mod page;
pub mod postgres;
pub mod tls;
#[allow(unused_imports)] // not every test binary speaks the agent protocol
pub use agent_ws::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "admin-token";

/// A test's own ports: SIP on `sip`, HTTP on `http`, RTP from `rtp_min` (`rtp_span` ports).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub sip: u16,
    pub http: u16,
    pub rtp_min: u16,
    pub rtp_span: u16,
}

impl Ports {
    /// Blocks of ports per test so tests in one binary can run in parallel. Every fixed port of
    /// the tests (these, and the peers' 25000-29999) lies below the kernel's ephemeral range
    /// (32768 and up), so a socket some process opened on port 0 never takes one of them.
    pub fn block(n: u16) -> Ports {
        Ports {
            sip: 11000 + n * 10,
            http: 12000 + n * 10,
            rtp_min: 14000 + n * 200,
            rtp_span: 200,
        }
    }

    /// A block whose RTP range takes 200 calls (30000-30799), for the one test that needs
    /// more than a hundred at once.
    pub fn wide(n: u16) -> Ports {
        Ports {
            rtp_min: 30000,
            rtp_span: 800,
            ..Ports::block(n)
        }
    }
}

pub fn require_tool(name: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is required for this test (the README's test command installs it)"
    );
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory under target/ for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    let dir = repo_root().join("target").join("test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir can be created");
    dir
}

/// Keys added to the tables of the harness's config (`[sip]`, `[http]`, `[webrtc]`,
/// `[media]`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tables<'a> {
    /// The SIP listener's address (127.0.0.1 when empty): cluster nodes take 127.0.0.3 and up.
    pub sip_ip: &'a str,
    pub sip: &'a str,
    pub http: &'a str,
    pub webrtc: &'a str,
    pub media: &'a str,
    /// The `[store]` table's keys (the node's own SQLite file when empty).
    pub store: &'a str,
}

pub struct Gateway {
    pub child: Child,
    pub ports: Ports,
    pub dir: PathBuf,
    pub log: PathBuf,
}

/// Extra TOML appended to the generated config (trunks, routes).
pub fn default_trunk(proxy_port: u16) -> String {
    format!(
        r#"
[[trunk]]
name = "local"
inbound_from = ["127.0.0.1/32"]
outbound_proxy = "sip:127.0.0.1:{proxy_port}"
username = "trunk"
password = "trunk-secret"
options_interval = 0
dial_plan = ["+1*", "sip:*@127.0.0.1", "sip:*@127.0.0.1:*"]
"#
    )
}

impl Gateway {
    pub fn start(name: &str, ports: Ports, extra: &str) -> Gateway {
        let gateway = Gateway::spawn(name, ports, extra, "");
        gateway.wait_healthy();
        gateway
    }

    /// Start with extra keys in the `[http]` table (TLS); the caller checks readiness.
    pub fn spawn(name: &str, ports: Ports, extra: &str, http_extra: &str) -> Gateway {
        Gateway::spawn_with(
            name,
            ports,
            extra,
            Tables {
                http: http_extra,
                ..Tables::default()
            },
        )
    }

    /// Start with extra keys in the `[webrtc]` table.
    pub fn start_with_webrtc(name: &str, ports: Ports, extra: &str, webrtc_extra: &str) -> Gateway {
        let gateway = Gateway::spawn_with(
            name,
            ports,
            extra,
            Tables {
                webrtc: webrtc_extra,
                ..Tables::default()
            },
        );
        gateway.wait_healthy();
        gateway
    }

    /// Start with extra keys in the `[media]` table.
    pub fn start_with_media(name: &str, ports: Ports, extra: &str, media_extra: &str) -> Gateway {
        Gateway::start_with_tables(
            name,
            ports,
            extra,
            Tables {
                media: media_extra,
                ..Tables::default()
            },
        )
    }

    /// Start with extra keys in any of the tables the harness writes.
    pub fn start_with_tables(name: &str, ports: Ports, extra: &str, tables: Tables) -> Gateway {
        let gateway = Gateway::spawn_with(name, ports, extra, tables);
        gateway.wait_healthy();
        gateway
    }

    fn spawn_with(name: &str, ports: Ports, extra: &str, tables: Tables) -> Gateway {
        let Tables {
            sip_ip,
            sip: sip_extra,
            http: http_extra,
            webrtc: webrtc_extra,
            media: media_extra,
            store,
        } = tables;
        let dir = scratch(name);
        let root = repo_root();
        let config = format!(
            r#"
admin_token_sha256 = "10a4c7c9fc5206d6f36dc6944a81bb6f4a3cb0e25014ae3b12e6c3e52712292a"
[sip]
listen = "{sip_ip}:{sip}"
{sip_extra}
[http]
listen = "127.0.0.1:{http}"
{http_extra}
[webrtc]
listen = "127.0.0.1:{webrtc}"
{webrtc_extra}
[rtp]
bind = "127.0.0.1"
port_min = {rtp_min}
port_max = {rtp_max}
[media]
hold_audio = "{root}/config/hold.wav"
{media_extra}
[recording]
directory = "{dir}/recordings"
[store]
{store}
[[route]]
user = "echo"
action = "echo"
[[route]]
user = "announce"
action = "announce"
file = "{root}/config/announcement.wav"
{extra}
"#,
            sip_ip = if sip_ip.is_empty() {
                "127.0.0.1"
            } else {
                sip_ip
            },
            sip = ports.sip,
            http = ports.http,
            webrtc = ports.http + 1,
            rtp_min = ports.rtp_min,
            rtp_max = ports.rtp_min + ports.rtp_span - 1,
            root = root.display(),
            dir = dir.display(),
            store = if store.is_empty() {
                format!("database = \"{}/callgate.db\"", dir.display())
            } else {
                store.to_string()
            },
        );
        let config_path = dir.join("callgate.toml");
        std::fs::write(&config_path, config).expect("config written");
        let log = dir.join("gateway.log");
        let child = Gateway::launch(&config_path, &log);
        Gateway {
            child,
            ports,
            dir,
            log,
        }
    }

    fn launch(config_path: &Path, log: &Path) -> Child {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        Command::new(env!("CARGO_BIN_EXE_callgate"))
            .arg("serve")
            .arg("--config")
            .arg(config_path)
            .current_dir(repo_root())
            .env("CALLGATE_LOG", "debug")
            .stdout(log_file.try_clone().expect("log clone"))
            .stderr(log_file)
            .spawn()
            .expect("callgate binary starts")
    }

    /// Kill the gateway outright (SIGKILL: no goodbye, no flush) and start it again on the
    /// same config and database.
    pub fn crash_and_restart(&mut self) {
        self.crash();
        self.restart();
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start again on the same config and database (after `crash`).
    pub fn restart(&mut self) {
        self.child = Gateway::launch(&self.dir.join("callgate.toml"), &self.log);
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = self.http("GET", "/healthz", None, None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("gateway did not become healthy; log:\n{}", self.log_text());
    }

    pub fn sip_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.sip))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One HTTP/1.1 request to the gateway; (status, body).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.ports.http))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.unwrap_or("");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// A GET whose body may be binary: status, the head's header lines, the body's bytes.
    pub fn get_bytes(&self, path: &str, token: &str, headers: &str) -> (u16, String, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.ports.http)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n{headers}Connection: close\r\n\r\n"
        )
        .expect("request");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("response");
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head");
        let head = String::from_utf8_lossy(&response[..split]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, head, response[split + 4..].to_vec())
    }

    /// A `/metrics` sample's value, the sample named with its labels (0 when absent).
    pub fn metric(&self, sample: &str) -> f64 {
        let (_, body) = self
            .http("GET", "/metrics", Some(ADMIN_TOKEN), None)
            .expect("metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn live_calls(&self) -> usize {
        let (_, body) = self
            .http("GET", "/v1/live-calls", Some(ADMIN_TOKEN), None)
            .expect("live calls");
        let v: serde_json::Value = serde_json::from_str(&body).expect("live calls JSON");
        v["calls"].as_array().map(|a| a.len()).unwrap_or(0)
    }

    /// Wait until no call is live (or panic with the log).
    pub fn wait_idle(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.live_calls() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "calls still live after {within:?}; log:\n{}",
            self.log_text()
        );
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().expect("gateway reaped");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Write an 8 kHz mu-law raw tone file for sipp's `rtp_stream` (sox).
pub fn make_ulaw_tone(path: &Path, seconds: f32, freq: u32) {
    require_tool("sox");
    let status = Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-e", "u-law", "-t", "ul"])
        .arg(path)
        .args([
            "synth",
            &seconds.to_string(),
            "sine",
            &freq.to_string(),
            "vol",
            "0.5",
        ])
        .status()
        .expect("sox runs");
    assert!(status.success(), "sox made the tone");
}

/// Run sipp to completion (bounded by -timeout and a hard kill) and return its output.
pub fn run_sipp(dir: &Path, args: &[String], hard_limit: Duration) -> Output {
    require_tool("sipp");
    let mut child = Command::new("sipp")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp starts");
    let deadline = Instant::now() + hard_limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("sipp output")
}

pub fn spawn_sipp(dir: &Path, args: &[String]) -> Child {
    require_tool("sipp");
    Command::new("sipp")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp starts")
}

pub fn wait_child(mut child: Child, hard_limit: Duration) -> Output {
    let deadline = Instant::now() + hard_limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("child output")
}

/// Counters from sipp's `-trace_stat` CSV (last row): (successful, failed).
pub fn sipp_call_counts(stat_csv: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(stat_csv).expect("sipp stat file");
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().expect("stat header").split(';').collect();
    let last: Vec<&str> = lines.next_back().expect("stat row").split(';').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| last.get(i))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("column {name} in sipp stats"))
    };
    (col("SuccessfulCall(C)"), col("FailedCall(C)"))
}

pub fn scenario(name: &str) -> String {
    repo_root()
        .join("tests")
        .join("sipp")
        .join(name)
        .display()
        .to_string()
}

/// A packet capture on loopback (tcpdump), stopped on drop.
pub struct Capture {
    child: Child,
    pub file: PathBuf,
}

impl Capture {
    pub fn start(file: PathBuf, filter: &str) -> Capture {
        require_tool("tcpdump");
        let child = Command::new("tcpdump")
            .args(["-i", "lo", "-n", "-U", "-s", "2048", "-w"])
            .arg(&file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump starts");
        // tcpdump needs a moment before it captures.
        std::thread::sleep(Duration::from_millis(1000));
        Capture { child, file }
    }

    pub fn stop(mut self) -> Vec<UdpPacket> {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        read_pcap_udp(&self.file)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
pub struct UdpPacket {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// UDP datagrams of an IPv4 pcap file (Ethernet, Linux cooked v1/v2 or raw link types).
pub fn read_pcap_udp(path: &Path) -> Vec<UdpPacket> {
    let data = std::fs::read(path).unwrap_or_default();
    if data.len() < 24 {
        return Vec::new();
    }
    let le = data[0..4] == [0xd4, 0xc3, 0xb2, 0xa1] || data[0..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let u32_at = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let link = u32_at(&data[20..24]);
    let link_header = match link {
        1 => 14,
        113 => 16,
        276 => 20,
        101 | 228 => 0,
        0 => 4,
        _ => 14,
    };
    let mut out = Vec::new();
    let mut pos = 24;
    while pos + 16 <= data.len() {
        let caplen = u32_at(&data[pos + 8..pos + 12]) as usize;
        let start = pos + 16;
        let end = start + caplen;
        if end > data.len() {
            break;
        }
        let frame = &data[start..end];
        pos = end;
        if frame.len() < link_header + 20 {
            continue;
        }
        let ip = &frame[link_header..];
        if ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip.len() < ihl + 8 {
            continue;
        }
        let udp = &ip[ihl..];
        let src_port = u16::from_be_bytes([udp[0], udp[1]]);
        let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
        out.push(UdpPacket {
            src_port,
            dst_port,
            payload: udp[8..].to_vec(),
        });
    }
    out
}

/// G.711 mu-law to linear (the test's own decoder, independent of the gateway's).
pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = u & 0x0f;
    let magnitude = ((i32::from(mantissa) << 3) + 0x84) << exponent;
    let sample = magnitude - 0x84;
    (if sign != 0 { -sample } else { sample }) as i16
}

/// G.711 µ-law encoding (the classic segment search), the tests' own.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let s = i32::from(sample);
    let (sign, magnitude) = if s < 0 {
        (0x80, (-s).min(32635))
    } else {
        (0, s.min(32635))
    };
    let biased = magnitude + BIAS;
    let exponent = (7..=14).rev().find(|e| biased & (1 << e) != 0).unwrap_or(7) - 7;
    let mantissa = (biased >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// The amplitude of the `hz` component of 8 kHz samples (a full-scale sine: 32767).
pub fn tone_amplitude(samples: &[i16], hz: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let w = std::f64::consts::TAU * hz / 8000.0;
    let (mut re, mut im) = (0.0, 0.0);
    for (i, s) in samples.iter().enumerate() {
        re += f64::from(*s) * (w * i as f64).cos();
        im += f64::from(*s) * (w * i as f64).sin();
    }
    2.0 * (re * re + im * im).sqrt() / samples.len() as f64
}

pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|s| f64::from(*s).powi(2)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// The dominant frequency of 8 kHz samples by a plain DFT scan (tests only).
pub fn dominant_frequency(samples: &[i16], lo: u32, hi: u32) -> u32 {
    let n = samples.len().min(8000);
    let s = &samples[..n];
    let mut best = (0.0f64, lo);
    let mut f = lo;
    while f <= hi {
        let w = 2.0 * std::f64::consts::PI * f64::from(f) / 8000.0;
        let (mut re, mut im) = (0.0, 0.0);
        for (i, x) in s.iter().enumerate() {
            re += f64::from(*x) * (w * i as f64).cos();
            im += f64::from(*x) * (w * i as f64).sin();
        }
        let p = re * re + im * im;
        if p > best.0 {
            best = (p, f);
        }
        f += 10;
    }
    best.1
}

/// The status code of a SIP response's text (0 for anything else).
pub fn sip_status(text: &str) -> u16 {
    if !text.starts_with("SIP/2.0") {
        return 0;
    }
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A loopback UDP socket for a raw SIP peer, reads bounded by `timeout`.
/// Bind a test's fixed UDP address. A port a finished peer of an earlier test (a sipp or a
/// gateway still exiting) held can take a moment to come free, so `AddrInUse` is retried for
/// up to 3 s.
pub fn bind_udp(addr: &str) -> UdpSocket {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match UdpSocket::bind(addr) {
            Ok(socket) => return socket,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    }
}

pub fn sip_socket(port: u16, timeout: Duration) -> UdpSocket {
    let socket = bind_udp(&format!("127.0.0.1:{port}"));
    socket
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    socket
}

/// Send one raw SIP datagram from `from` and wait for the first response line.
pub fn sip_exchange(from: &str, to: SocketAddr, message: &[u8]) -> Option<String> {
    let socket = bind_udp(from);
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    socket.send_to(message, to).expect("send");
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = socket.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        // Skip 100 Trying: the test wants the final answer.
        if text.starts_with("SIP/2.0 100") {
            continue;
        }
        return Some(text);
    }
}

/// A SIP request with the usual mandatory headers, for raw exchanges. `{port}` in
/// `extra_headers` or `body` is not substituted: callers format it themselves.
pub fn raw_request(
    method: &str,
    uri: &str,
    local: &str,
    extra_headers: &str,
    body: &str,
) -> Vec<u8> {
    let branch = format!("z9hG4bK{:x}", rand_u64());
    let tag = format!("{:x}", rand_u64());
    let call_id = format!("{:x}@test", rand_u64());
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nFrom: <sip:tester@{local}>;tag={tag}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContact: <sip:tester@{local}>\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn rand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Whether an Opus packet carries in-band FEC for the frame before it.
pub fn opus_has_fec(packet: &[u8]) -> bool {
    // SAFETY: the pointer and length describe one live slice; libopus only reads it.
    unsafe { opusic_sys::opus_packet_has_lbrr(packet.as_ptr(), packet.len() as i32) == 1 }
}

pub fn sdp_offer(port: u16, formats: &str, rtpmaps: &str, direction: &str) -> String {
    format!(
        "v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP {formats}\r\n{rtpmaps}a={direction}\r\n"
    )
}

/// A child process killed when the guard drops, so a failing test leaves no peer running
/// (a leftover sipp would hold its port and answer the next run's calls).
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }

    pub fn take(&mut self) -> Child {
        self.0.take().expect("child taken once")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Capture what the gateway's RTP ports send to a peer's media port.
pub fn capture_rtp_to(gw: &Gateway, media_port: u16) -> Capture {
    Capture::start(
        gw.dir.join(format!("rtp-{media_port}.pcap")),
        &format!(
            "udp and dst port {media_port} and src portrange {}-{}",
            gw.ports.rtp_min,
            gw.ports.rtp_min + gw.ports.rtp_span - 1
        ),
    )
}

/// Set a sipp option in an argument list: replace its value, or add it.
pub fn set_sipp_arg(args: &mut Vec<String>, flag: &str, value: impl ToString) {
    match args.iter().position(|a| a == flag) {
        Some(i) => args[i + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
}

/// Arguments for one sipp peer running `scenario_file` for a single call on loopback, with
/// its statistics and errors in `dir`; `target` is the gateway for a UAC, `None` for a UAS.
pub fn single_call_sipp_args(
    dir: &Path,
    scenario_file: &str,
    target: Option<(u16, &str)>,
    local_port: u16,
    media_port: u16,
) -> Vec<String> {
    let mut args = Vec::new();
    if let Some((sip_port, service)) = target {
        args.extend([
            format!("127.0.0.1:{sip_port}"),
            "-s".into(),
            service.to_string(),
            // The caller's number, `[caller]` in the UAC scenarios.
            "-key".into(),
            "caller".into(),
            "+15551230001".into(),
        ]);
    }
    args.extend(one_call_sipp_args(
        scenario(scenario_file),
        local_port,
        media_port,
        &dir.join("stats.csv"),
    ));
    args.extend([
        "-trace_err".into(),
        "-error_file".into(),
        dir.join("errors.log").display().to_string(),
    ]);
    args
}

/// The core of a single-call sipp run on loopback: the scenario file (a path), its SIP and
/// media ports, a 120 s limit that counts as an error, and statistics into `stats`.
pub fn one_call_sipp_args(
    scenario_path: String,
    local_port: u16,
    media_port: u16,
    stats: &Path,
) -> Vec<String> {
    vec![
        "-sf".into(),
        scenario_path,
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        local_port.to_string(),
        "-mi".into(),
        "127.0.0.1".into(),
        "-mp".into(),
        media_port.to_string(),
        "-m".into(),
        "1".into(),
        "-timeout".into(),
        "120s".into(),
        "-timeout_error".into(),
        "-trace_stat".into(),
        "-stf".into(),
        stats.display().to_string(),
        "-nostdin".into(),
    ]
}

/// The demo agent of the shipped config (token `demo-token`, DID +15550000100).
pub const DEMO_AGENT: &str = r#"
[[agent]]
id = "demo"
name = "Demo Agent"
token_sha256 = "7c43ef5ae21d43ce2743f770c68e24def1a43ee2f416d2438410c8af7af2ff2c"
dids = ["+15550000100"]
"#;

/// The demo supervisor (token `super-token`, no DIDs).
pub const SUPERVISOR_AGENT: &str = r#"
[[agent]]
id = "super"
name = "Demo Supervisor"
token_sha256 = "a0a85699c09012035f8809a0c181e5ce770cdeed87b5086716cd809c65d62756"
role = "supervisor"
"#;

/// The second demo agent (token `demo2-token`, DID +15550000200).
pub const DEMO2_AGENT: &str = r#"
[[agent]]
id = "demo2"
name = "Second Demo Agent"
token_sha256 = "aaccc247faacecbda79efb8c0ffcdc36fd01544071ebcc29372878fce2792787"
dids = ["+15550000200"]
"#;

/// A WAV's first channel and its sample rate.
pub fn read_wav_mono(path: &std::path::Path) -> (u32, Vec<i16>) {
    let mut reader =
        hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let mono = samples
        .chunks(usize::from(spec.channels))
        .map(|c| c[0])
        .collect();
    (spec.sample_rate, mono)
}
