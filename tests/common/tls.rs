//! Certificates for the SIP TLS tests, made with openssl: a CA and a leaf for 127.0.0.1.

use std::path::Path;
use std::process::{Command, Stdio};

/// Certificates made here, PEM: a CA, and a key and certificate for 127.0.0.1 it signed.
pub struct Certificates {
    pub ca: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub cert: std::path::PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?} failed");
}

pub fn make_certificates(dir: &Path) -> Certificates {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "1", "-subj", "/CN=callgate test CA"],
        ]
        .concat()
        .iter()
        .chain(["-keyout", "ca.key", "-out", "ca.pem"].iter())
        .copied()
        .collect::<Vec<_>>(),
    );
    openssl(
        dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ],
    );
    Certificates {
        ca: dir.join("ca.pem"),
        key: dir.join("key.pem"),
        cert: dir.join("cert.pem"),
    }
}

/// baresip takes its certificate and key in one file: `dir/baresip.pem`.
pub fn baresip_pem(dir: &Path, certificates: &Certificates) -> std::path::PathBuf {
    let combined = dir.join("baresip.pem");
    let mut pem = std::fs::read(&certificates.cert).expect("cert");
    pem.extend(std::fs::read(&certificates.key).expect("key"));
    std::fs::write(&combined, pem).expect("combined pem");
    combined
}

/// The `[sip]` keys of a TLS listener on `port` with these certificates.
pub fn tls_tables(port: u16, certificates: &Certificates) -> String {
    format!(
        "tls_listen = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        certificates.cert.display(),
        certificates.key.display()
    )
}
