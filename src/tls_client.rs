//! TLS toward servers the gateway connects to (webhook and CRM receivers over https, trunks
//! over SIP TLS): rustls on aws-lc-rs, verifying the server's certificate against the
//! system's CA bundle or against one CA the operator pinned.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio_rustls::rustls;

/// The CA bundle Debian's `ca-certificates` installs.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Roots from a PEM file; an error names the file.
fn roots_from(path: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("{}: no CA certificate in it", path.display()));
    }
    Ok(roots)
}

fn config_with(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client config that trusts only the CA in `ca` (PEM).
pub fn pinned(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    config_with(roots_from(ca)?)
}

/// A client config that trusts the system's CAs, built once.
pub fn system() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let roots = roots_from(Path::new(SYSTEM_ROOTS)).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no system CA bundle: TLS to servers will fail");
            rustls::RootCertStore::empty()
        });
        config_with(roots).unwrap_or_else(|_| {
            Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        })
    }))
}
