//! The `callgate` command line: run the gateway, check a config file, and the operator's
//! trunk-testing tools (`dial`, `hangup`) that talk to a running gateway's admin API. With
//! `--features testkit`, also the benches and `demo` (`testkit_cli`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[cfg(feature = "testkit")]
mod testkit_cli;

const DEFAULT_CONFIG: &str = "config/callgate.toml";

/// callgate: a self-hosted SIP/WebRTC media gateway.
///
/// SIP trunks on one side, agents in the browser on the other. With no subcommand, runs the
/// gateway on config/callgate.toml (loopback only, as shipped).
#[derive(Parser)]
#[command(name = "callgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Configuration file for `serve` (the default command).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (the default).
    Serve,
    /// Validate a configuration file; exit 1 naming the key at fault.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Place a test call through a trunk of the running gateway (admin API).
    Dial {
        /// E.164 number (+15551234567) or SIP URI the dial plan allows.
        to: String,
        /// What the call does once answered: `echo`, or `announce:<wav path>`.
        #[arg(long, default_value = "echo")]
        media: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The load generator, benches and the demo caller (built with `--features testkit`).
    #[cfg(feature = "testkit")]
    #[command(flatten)]
    Testkit(testkit_cli::Cmd),
    /// End a call of the running gateway (admin API).
    Hangup {
        call_id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Args)]
struct AdminArgs {
    /// The gateway's HTTP listener.
    #[arg(long, default_value = "127.0.0.1:8080", env = "CALLGATE_HTTP")]
    http: String,
    /// Admin bearer token.
    #[arg(long, default_value = "admin-token", env = "CALLGATE_ADMIN_TOKEN")]
    token: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::Serve => serve(cli.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))),
        Cmd::CheckConfig { file } => match callgate::app::load_config(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Dial { to, media, admin } => {
            let body = serde_json::json!({"to": to, "media": media}).to_string();
            admin_request(&admin, "POST", "/v1/dial", Some(&body))
        }
        #[cfg(feature = "testkit")]
        Cmd::Testkit(command) => testkit_cli::run(command, cli.config),
        Cmd::Hangup { call_id, admin } => {
            admin_request(&admin, "POST", &format!("/v1/calls/{call_id}/hangup"), None)
        }
    }
}

/// `CALLGATE_LOG` (default `info`). The PostgreSQL client's own debug lines (every statement
/// with its parameters: callers' numbers) stay out unless asked for by name.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let mut wanted = std::env::var("CALLGATE_LOG").unwrap_or_else(|_| "info".into());
    if !wanted.contains("postgres") {
        wanted.push_str(",tokio_postgres=warn,postgres=warn");
    }
    tracing_subscriber::EnvFilter::try_new(&wanted)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

fn serve(path: PathBuf) -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_env_filter(log_filter())
        .init();
    let config = match callgate::app::load_config(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("callgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(callgate::app::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Build a runtime from `builder`, or say why not.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("callgate: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// A minimal HTTP/1.1 client for the loopback admin API (keeps an HTTP client crate out).
fn admin_request(admin: &AdminArgs, method: &str, path: &str, body: Option<&str>) -> ExitCode {
    let result = (|| -> anyhow::Result<(u16, String)> {
        let mut stream = std::net::TcpStream::connect(&admin.http)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            admin.http,
            admin.token,
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
    })();
    match result {
        Ok((status, body)) if (200..300).contains(&status) => {
            println!("{}", body.trim());
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("callgate: HTTP {status}: {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("callgate: cannot reach the gateway at {}: {e}", admin.http);
            ExitCode::FAILURE
        }
    }
}
