//! HTTP digest authentication as SIP uses it (RFC 3261 §22, RFC 2617, RFC 7616): parsing and
//! printing challenges and credentials, answering a challenge (client side), checking
//! credentials and issuing stateless nonces (server side). Pure: callers pass the time, the
//! cnonce and the nonce secret.

use md5::Md5;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DigestError {
    #[error("not a Digest header")]
    NotDigest,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("unsupported algorithm {0}")]
    Algorithm(String),
    #[error("unterminated quoted value")]
    Unterminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn parse(s: &str) -> Result<Algorithm, DigestError> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Ok(Algorithm::Md5),
            "MD5-SESS" => Ok(Algorithm::Md5Sess),
            "SHA-256" => Ok(Algorithm::Sha256),
            "SHA-256-SESS" => Ok(Algorithm::Sha256Sess),
            _ => Err(DigestError::Algorithm(s.to_string())),
        }
    }

    fn hash(self, data: &str) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Md5::digest(data.as_bytes()).to_vec(),
            Algorithm::Sha256 | Algorithm::Sha256Sess => Sha256::digest(data.as_bytes()).to_vec(),
        };
        hex(&bytes)
    }

    fn hash_bytes(self, data: &[u8]) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Md5::digest(data).to_vec(),
            Algorithm::Sha256 | Algorithm::Sha256Sess => Sha256::digest(data).to_vec(),
        };
        hex(&bytes)
    }

    fn is_session(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `name=value` and `name="quoted, value"` pairs after the scheme.
fn params(value: &str) -> Result<Vec<(String, String)>, DigestError> {
    let rest = value.trim_start();
    let (scheme, rest) = rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len()));
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::NotDigest);
    }
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                val.push(n);
                            }
                        }
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => val.push(c),
                    }
                }
                if !closed {
                    return Err(DigestError::Unterminated);
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' || c.is_whitespace() {
                        break;
                    }
                    val.push(c);
                    chars.next();
                }
            }
        }
        out.push((name.to_ascii_lowercase(), val));
    }
    Ok(out)
}

fn find<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    pub qop: Vec<String>,
    pub stale: bool,
    pub domain: Option<String>,
}

impl Challenge {
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let p = params(value)?;
        Ok(Challenge {
            realm: find(&p, "realm").ok_or(DigestError::Missing("realm"))?.to_string(),
            nonce: find(&p, "nonce").ok_or(DigestError::Missing("nonce"))?.to_string(),
            opaque: find(&p, "opaque").map(str::to_string),
            algorithm: find(&p, "algorithm").map(Algorithm::parse).transpose()?.unwrap_or(Algorithm::Md5),
            qop: find(&p, "qop")
                .map(|q| q.split(',').map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()).collect())
                .unwrap_or_default(),
            stale: find(&p, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
            domain: find(&p, "domain").map(str::to_string),
        })
    }
}

impl std::fmt::Display for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest realm={}, nonce={}", quote(&self.realm), quote(&self.nonce))?;
        if let Some(o) = &self.opaque {
            write!(f, ", opaque={}", quote(o))?;
        }
        if let Some(d) = &self.domain {
            write!(f, ", domain={}", quote(d))?;
        }
        write!(f, ", algorithm={}", self.algorithm.as_str())?;
        if !self.qop.is_empty() {
            write!(f, ", qop={}", quote(&self.qop.join(",")))?;
        }
        if self.stale {
            write!(f, ", stale=true")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub cnonce: Option<String>,
    pub nc: Option<String>,
    pub qop: Option<String>,
    pub opaque: Option<String>,
}

impl Authorization {
    pub fn parse(value: &str) -> Result<Authorization, DigestError> {
        let p = params(value)?;
        let get = |n: &'static str| find(&p, n).map(str::to_string).ok_or(DigestError::Missing(n));
        Ok(Authorization {
            username: get("username")?,
            realm: get("realm")?,
            nonce: get("nonce")?,
            uri: get("uri")?,
            response: get("response")?,
            algorithm: find(&p, "algorithm").map(Algorithm::parse).transpose()?.unwrap_or(Algorithm::Md5),
            cnonce: find(&p, "cnonce").map(str::to_string),
            nc: find(&p, "nc").map(str::to_string),
            qop: find(&p, "qop").map(str::to_string),
            opaque: find(&p, "opaque").map(str::to_string),
        })
    }
}

impl std::fmt::Display for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
            quote(&self.username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(&self.uri),
            quote(&self.response),
            self.algorithm.as_str()
        )?;
        if let Some(o) = &self.opaque {
            write!(f, ", opaque={}", quote(o))?;
        }
        if let (Some(qop), Some(cnonce), Some(nc)) = (&self.qop, &self.cnonce, &self.nc) {
            write!(f, ", qop={qop}, cnonce={}, nc={nc}", quote(cnonce))?;
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn compute(algorithm: Algorithm, username: &str, realm: &str, password: &str, method: &str, uri: &str, nonce: &str, qop: Option<&str>, cnonce: &str, nc: &str, body: &[u8]) -> String {
    let mut ha1 = algorithm.hash(&format!("{username}:{realm}:{password}"));
    if algorithm.is_session() {
        ha1 = algorithm.hash(&format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = match qop {
        Some("auth-int") => algorithm.hash(&format!("{method}:{uri}:{}", algorithm.hash_bytes(body))),
        _ => algorithm.hash(&format!("{method}:{uri}")),
    };
    match qop {
        Some(q) => algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{q}:{ha2}")),
        None => algorithm.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Answer a challenge: qop=auth when offered (auth-int only when it is the sole choice).
#[allow(clippy::too_many_arguments)]
pub fn respond(challenge: &Challenge, method: &str, uri: &str, username: &str, password: &str, cnonce: &str, nc: u32, body: &[u8]) -> Authorization {
    let qop = if challenge.qop.iter().any(|q| q == "auth") {
        Some("auth".to_string())
    } else if challenge.qop.iter().any(|q| q == "auth-int") {
        Some("auth-int".to_string())
    } else {
        None
    };
    let nc = format!("{nc:08x}");
    let response = compute(
        challenge.algorithm,
        username,
        &challenge.realm,
        password,
        method,
        uri,
        &challenge.nonce,
        qop.as_deref(),
        cnonce,
        &nc,
        body,
    );
    Authorization {
        username: username.to_string(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_string(),
        response,
        algorithm: challenge.algorithm,
        cnonce: qop.as_ref().map(|_| cnonce.to_string()),
        nc: qop.as_ref().map(|_| nc),
        qop,
        opaque: challenge.opaque.clone(),
    }
}

/// Are these credentials right for `password`? Constant-time on the response.
pub fn verify(auth: &Authorization, method: &str, password: &str, body: &[u8]) -> bool {
    let expected = compute(
        auth.algorithm,
        &auth.username,
        &auth.realm,
        password,
        method,
        &auth.uri,
        &auth.nonce,
        auth.qop.as_deref(),
        auth.cnonce.as_deref().unwrap_or(""),
        auth.nc.as_deref().unwrap_or(""),
        body,
    );
    let given = auth.response.to_ascii_lowercase();
    expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    Fresh,
    Stale,
    Invalid,
}

/// Stateless nonces: the issue time and a keyed hash over it, so the server keeps nothing
/// per challenge and a forged or altered nonce is rejected.
pub struct NonceIssuer {
    secret: [u8; 32],
}

impl NonceIssuer {
    pub fn new(secret: [u8; 32]) -> NonceIssuer {
        NonceIssuer { secret }
    }

    fn mac(&self, timestamp: u64, realm: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(timestamp.to_be_bytes());
        h.update(realm.as_bytes());
        h.update(self.secret);
        hex(&h.finalize()[..16])
    }

    pub fn issue(&self, now_unix_secs: u64, realm: &str) -> String {
        format!("{now_unix_secs:016x}{}", self.mac(now_unix_secs, realm))
    }

    pub fn check(&self, nonce: &str, realm: &str, now_unix_secs: u64, max_age_secs: u64) -> NonceState {
        if nonce.len() != 48 || !nonce.is_ascii() {
            return NonceState::Invalid;
        }
        let Ok(timestamp) = u64::from_str_radix(&nonce[..16], 16) else {
            return NonceState::Invalid;
        };
        let mac = self.mac(timestamp, realm);
        let same = mac.bytes().zip(nonce[16..].bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if !same || timestamp > now_unix_secs + 60 {
            NonceState::Invalid
        } else if now_unix_secs - timestamp.min(now_unix_secs) > max_age_secs {
            NonceState::Stale
        } else {
            NonceState::Fresh
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example() {
        let ch = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .expect("parses");
        assert_eq!(ch.qop, vec!["auth", "auth-int"]);
        let auth = respond(&ch, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", "0a4f113b", 1, b"");
        assert_eq!(auth.response, "6629fae49393a05397450978507c4ef1");
        assert_eq!(auth.nc.as_deref(), Some("00000001"));
        assert!(verify(&auth, "GET", "Circle Of Life", b""));
        assert!(!verify(&auth, "GET", "circle of life", b""));
        assert!(!verify(&auth, "POST", "Circle Of Life", b""));
    }

    #[test]
    fn rfc7616_md5_and_sha256_examples() {
        for (algorithm, expected) in [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ] {
            let ch = Challenge::parse(&format!(
                r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
            ))
            .expect("parses");
            let auth = respond(&ch, "GET", "/dir/index.html", "Mufasa", "Circle of Life", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", 1, b"");
            assert_eq!(auth.response, expected, "{algorithm}");
            let reparsed = Authorization::parse(&auth.to_string()).expect("round trip");
            assert_eq!(reparsed, auth);
            assert!(verify(&reparsed, "GET", "Circle of Life", b""));
        }
    }

    #[test]
    fn challenge_prints_and_parses_back() {
        let ch = Challenge {
            realm: "callgate".into(),
            nonce: "abc".into(),
            opaque: Some("o\"q".into()),
            algorithm: Algorithm::Sha256,
            qop: vec!["auth".into()],
            stale: true,
            domain: None,
        };
        assert_eq!(Challenge::parse(&ch.to_string()), Ok(ch));
        assert_eq!(Challenge::parse("Basic realm=x"), Err(DigestError::NotDigest));
        assert_eq!(Challenge::parse("Digest nonce=1"), Err(DigestError::Missing("realm")));
        assert_eq!(Challenge::parse("Digest realm=\"x"), Err(DigestError::Unterminated));
        assert!(matches!(Challenge::parse("Digest realm=x, nonce=y, algorithm=AKAv1-MD5"), Err(DigestError::Algorithm(_))));
    }

    #[test]
    fn session_variant_and_no_qop() {
        let ch = Challenge::parse(r#"Digest realm="r", nonce="n", algorithm=MD5-sess, qop="auth""#).expect("parses");
        let auth = respond(&ch, "INVITE", "sip:a@b", "u", "p", "c", 1, b"");
        assert!(verify(&auth, "INVITE", "p", b""));
        let plain = Challenge::parse(r#"Digest realm="r", nonce="n""#).expect("parses");
        let auth = respond(&plain, "REGISTER", "sip:b", "u", "p", "c", 1, b"");
        assert!(auth.qop.is_none() && auth.cnonce.is_none());
        assert!(verify(&auth, "REGISTER", "p", b""));
        assert!(!auth.to_string().contains("qop"));
    }

    #[test]
    fn nonces_are_fresh_stale_or_invalid() {
        let issuer = NonceIssuer::new([7; 32]);
        let nonce = issuer.issue(1000, "realm");
        assert_eq!(issuer.check(&nonce, "realm", 1100, 300), NonceState::Fresh);
        assert_eq!(issuer.check(&nonce, "realm", 2000, 300), NonceState::Stale);
        assert_eq!(issuer.check(&nonce, "other", 1100, 300), NonceState::Invalid);
        let mut tampered = nonce.clone();
        tampered.replace_range(0..1, "1");
        assert_eq!(issuer.check(&tampered, "realm", 1100, 300), NonceState::Invalid);
        assert_eq!(issuer.check("short", "realm", 1100, 300), NonceState::Invalid);
        assert_eq!(NonceIssuer::new([8; 32]).check(&nonce, "realm", 1100, 300), NonceState::Invalid);
    }
}
