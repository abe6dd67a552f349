//! The `iceServers` the dialer page gives its peer connection: STUN and TURN servers from
//! `[[webrtc.ice_server]]`, with TURN credentials made per sign-in the way coturn's
//! `use-auth-secret` checks them (the TURN REST API, draft-uberti-behave-turn-rest): the
//! username is `<expiry unix time>:<agent id>`, the password base64(HMAC-SHA-1(secret,
//! username)). Nothing is stored; the TURN server needs only the shared secret.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;

use crate::config::IceServerConfig;

/// The TURN REST password for `username`.
pub fn turn_password(secret: &str, username: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `RTCIceServer` objects for `agent`, signed in at `now` (Unix seconds).
pub fn ice_servers(servers: &[IceServerConfig], agent: &str, now: u64) -> Value {
    Value::Array(
        servers
            .iter()
            .map(|s| match (&s.shared_secret, &s.username, &s.credential) {
                (Some(secret), _, _) => {
                    let username = format!("{}:{agent}", now + s.credential_ttl_seconds);
                    let credential = turn_password(secret, &username);
                    json!({"urls": s.urls, "username": username, "credential": credential})
                }
                (None, Some(username), Some(credential)) => {
                    json!({"urls": s.urls, "username": username, "credential": credential})
                }
                _ => json!({"urls": s.urls}),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value coturn computes for the same secret and username (its `turnutils_uclient
    /// -W` and the TURN REST draft's example use this construction; checked here against
    /// Python's hmac module: base64(HMAC-SHA-1("secret", "1700000000:demo"))).
    #[test]
    fn the_password_is_base64_hmac_sha1_of_the_username() {
        assert_eq!(
            turn_password("secret", "1700000000:demo"),
            "wX/usE3d4apPzTrTHBKPQpQW9Gc="
        );
    }

    #[test]
    fn shared_secret_servers_get_time_limited_credentials_and_stun_none() {
        let servers = [
            IceServerConfig {
                urls: vec!["stun:stun.example.com:3478".into()],
                shared_secret: None,
                credential_ttl_seconds: 3600,
                username: None,
                credential: None,
            },
            IceServerConfig {
                urls: vec!["turn:turn.example.com:3478".into()],
                shared_secret: Some("0123456789abcdef".into()),
                credential_ttl_seconds: 3600,
                username: None,
                credential: None,
            },
        ];
        let v = ice_servers(&servers, "demo", 1_000);
        assert_eq!(v[0], json!({"urls": ["stun:stun.example.com:3478"]}));
        assert_eq!(v[1]["username"], "4600:demo");
        assert_eq!(
            v[1]["credential"],
            turn_password("0123456789abcdef", "4600:demo")
        );
    }
}
