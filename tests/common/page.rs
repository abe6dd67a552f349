//! The dialer page in Debian's headless Chromium (`tests/browser/agent.mjs`, driven by
//! playwright-core) with a fake microphone playing a 1 kHz tone: the script's stdout lines
//! (READY, ANSWERED, RESULT {json}, ...) arrive on a channel.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{repo_root, require_tool, Gateway};

/// The browser agent script, its stdout lines arriving on a channel.
pub struct BrowserAgent {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl BrowserAgent {
    pub fn start(gw: &Gateway, dir: &Path, mode: &str, extra_env: &[(&str, &str)]) -> BrowserAgent {
        require_tool("node");
        require_tool("chromium");
        let browser_dir = repo_root().join("tests/browser");
        assert!(
            browser_dir.join("node_modules/playwright-core").exists(),
            "playwright-core is not installed: run ./scripts/setup.sh"
        );
        let fake_mic = dir.join("mic.wav");
        let status = Command::new("sox")
            .args(["-n", "-r", "48000", "-c", "1", "-b", "16"])
            .arg(&fake_mic)
            .args(["synth", "60", "sine", "1000", "vol", "0.5"])
            .status()
            .expect("sox runs");
        assert!(status.success());
        let mut command = Command::new("node");
        command
            .arg(browser_dir.join("agent.mjs"))
            .current_dir(&browser_dir)
            .env(
                "CALLGATE_URL",
                format!("http://127.0.0.1:{}/", gw.ports.http),
            )
            .env("CALLGATE_TOKEN", "demo-token")
            .env("MODE", mode)
            .env("FAKE_AUDIO", &fake_mic)
            .env("SHOTS", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("browser.log")).expect("browser log"),
            ));
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("node starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        BrowserAgent { child, lines }
    }

    /// The next line starting with `prefix`; panics with the browser log on FAILED or timeout.
    pub fn expect(&self, prefix: &str, within: Duration, dir: &Path, gw: &Gateway) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) if line.starts_with("FAILED") => panic!(
                    "browser: {line}\n{}\ngateway:\n{}",
                    std::fs::read_to_string(dir.join("browser.log")).unwrap_or_default(),
                    gw.log_text()
                ),
                Ok(_) => {}
                Err(_) => panic!(
                    "browser never said {prefix}\n{}\ngateway:\n{}",
                    std::fs::read_to_string(dir.join("browser.log")).unwrap_or_default(),
                    gw.log_text()
                ),
            }
        }
    }
}

impl Drop for BrowserAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A number field of the browser's JSON line.
pub fn number(json: &str, key: &str) -> f64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} in {json}"));
    let rest = &json[at + key.len() + 3..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {json}"))
}

/// The page received the far end's audio during the measurement (its RESULT line): inbound
/// packets grew by more than 50, and Chromium reported a level.
pub fn assert_page_receives(result: &str, what: &str) {
    let (before, after) = (
        number(result, "packets_before"),
        number(result, "packets_after"),
    );
    assert!(
        after > before + 50.0,
        "{what}: packets did not grow: {result}"
    );
    assert!(
        number(result, "audio_level") > 0.01,
        "{what}: no level: {result}"
    );
}
