//! baresip, a real softphone, for the tests: a config directory that plays a WAV as its
//! microphone and records what it hears (sndfile's `dump-*-dec.wav`), one account, and the
//! process started in the gateway's folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A WAV of `seconds` of a `hz` sine at `volume` (0..1), 8 kHz mono, made with sox.
pub fn sox_tone(path: &Path, seconds: u32, hz: u32, volume: f32) {
    let status = Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
        .arg(path)
        .args(["synth", &seconds.to_string(), "sine", &hz.to_string()])
        .args(["vol", &volume.to_string()])
        .status()
        .expect("sox runs");
    assert!(status.success(), "sox made no {}", path.display());
}

/// Write baresip's `config` and `accounts` into `dir/baresip`: SIP on `listen` (TLS one port
/// above), `extra` config lines, `source` as the microphone, G.711 only.
pub fn configure(dir: &Path, listen: u16, extra: &str, source: &Path, account: &str) -> PathBuf {
    let cfg = dir.join("baresip");
    std::fs::create_dir_all(&cfg).expect("baresip config dir");
    std::fs::write(
        cfg.join("config"),
        format!(
            "sip_listen 127.0.0.1:{listen}\n{extra}audio_source aufile,{}\naudio_player aufile,{}\nmodule_path /usr/lib/baresip/modules\nmodule stdio.so\nmodule g711.so\nmodule aufile.so\nmodule sndfile.so\nmodule account.so\nmodule menu.so\n",
            source.display(),
            dir.join("played.wav").display()
        ),
    )
    .expect("baresip config");
    std::fs::write(cfg.join("accounts"), format!("{account}\n")).expect("baresip accounts");
    cfg
}

/// Start baresip on `cfg` in `dir` for at most `seconds`, running `command` (e.g. a
/// `/dial`) if given.
pub fn start(cfg: &Path, dir: &Path, command: Option<&str>, seconds: u32) -> Child {
    let mut baresip = Command::new("baresip");
    baresip.arg("-4").arg("-f").arg(cfg);
    if let Some(command) = command {
        baresip.arg("-e").arg(command);
    }
    baresip
        .args(["-t", &seconds.to_string()])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baresip starts")
}

/// The samples baresip heard (its decoded dump in `dir`), and the dump's sample rate.
pub fn heard(dir: &Path, stdout: &str) -> (u32, Vec<i16>) {
    let dump = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("dump-") && n.ends_with("-dec.wav"))
        })
        .unwrap_or_else(|| panic!("baresip wrote no dump: {stdout}"));
    super::read_wav_mono(&dump)
}
