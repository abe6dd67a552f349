//! A PostgreSQL server of the test's own (Debian's binaries, run as the `postgres` user:
//! PostgreSQL refuses to run as root), on 127.0.0.1 at a port of the test's choosing, with its
//! data in a scratch directory; stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

const PASSWORD: &str = "pg-test-secret";

/// Where Debian put the server's binaries (`/usr/lib/postgresql/<version>/bin`).
fn binaries() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .find(|bin| bin.join("initdb").exists());
    found.expect("postgresql is not installed (scripts/setup.sh installs it)")
}

/// Run a PostgreSQL program as the `postgres` user; panics with its output when it fails.
fn as_postgres(bin: &Path, program: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(program))
        .args(args)
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("runuser runs");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stop the server whose data is under `dir` at once, if one runs (a test's leftover or ours).
fn stop_now(bin: &Path, dir: &Path) {
    let _ = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join("pg_ctl"))
        .arg("-D")
        .arg(dir.join("data"))
        .args(["stop", "-m", "immediate"])
        .output();
}

impl Postgres {
    /// A fresh server with an empty `callgate` database owned by the `callgate` user.
    pub fn start(name: &str, port: u16) -> Postgres {
        let bin = binaries();
        // Under /tmp: the postgres user must be able to reach it.
        let dir = std::env::temp_dir().join(format!("callgate-pg-{name}"));
        if dir.join("data/postmaster.pid").exists() {
            stop_now(&bin, &dir);
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("postgres scratch dir");
        std::fs::write(dir.join("pw"), PASSWORD).expect("password file");
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown runs");
        assert!(chown.success(), "chown {}", dir.display());
        let data = dir.join("data");
        let pw = dir.join("pw");
        as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "callgate",
                "--pwfile",
                &pw.display().to_string(),
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let server = Postgres { dir, bin, port };
        server.pg_ctl("start");
        as_postgres(
            &server.bin,
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "callgate",
                "callgate",
            ],
        );
        server
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60",
            self.port,
            self.dir.display()
        );
        as_postgres(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.dir.join("data").display().to_string(),
                "-l",
                &self.dir.join("server.log").display().to_string(),
                "-w",
                "-t",
                "30",
                "-m",
                "fast",
                "-o",
                &options,
                action,
            ],
        );
    }

    /// The URL a node's `store.url` takes.
    pub fn url(&self) -> String {
        format!(
            "postgres://callgate:{PASSWORD}@127.0.0.1:{}/callgate",
            self.port
        )
    }

    /// Stop the server (connections are cut) and leave it stopped.
    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    pub fn start_again(&self) {
        self.pg_ctl("start");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        stop_now(&self.bin, &self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
