use super::*;

const SHIPPED: &str = include_str!("../../../../config/callgate.toml");

#[test]
fn shipped_config_is_valid() {
    let config: Config = toml::from_str(SHIPPED).expect("shipped config parses");
    config.validate().expect("shipped config validates");
    assert_eq!(config.sip.listen.to_string(), "127.0.0.1:5060");
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.admin_token_sha256, sha256_hex("admin-token"));
    assert!(config.agents.iter().any(|a| a.id == "demo"
        && a.token_sha256 == sha256_hex("demo-token")
        && a.dids == ["+15550000100"]));
}

#[test]
fn demo_secrets_refused_off_loopback() {
    let mut config: Config = toml::from_str(SHIPPED).expect("shipped config parses");
    config.http.listen = "0.0.0.0:8080".parse().expect("literal");
    let err = config.validate().expect_err("demo secrets exposed");
    assert!(err.to_string().contains("admin_token_sha256"), "{err}");
}

#[test]
fn bad_values_name_their_key() {
    let mut config: Config = toml::from_str(SHIPPED).expect("shipped config parses");
    config.trunks[0].inbound_from.push("300.1.1.1/8".into());
    let err = config.validate().expect_err("bad CIDR");
    assert!(
        err.to_string().starts_with("trunk[0].inbound_from[1]"),
        "{err}"
    );
}

/// The keys of names, webhooks and ICE servers: each bad value names its key.
#[test]
fn names_webhooks_and_ice_servers_name_their_key() {
    for (extra, key) in [
        ("[lookup]\nurl = \"ftp://crm\"\n", "lookup.url"),
        ("[lookup]\nurl = \"http://crm\"\ntimeout_ms = 0\n", "lookup.timeout_ms"),
        ("[contacts]\ncountry_code = \"+1\"\n", "contacts.country_code"),
        (
            "[[webhook]]\nurl = \"http://crm/hooks\"\nevents = [\"call.made\"]\nsecret = \"0123456789abcdef\"\n",
            "webhook[0].events[0]",
        ),
        (
            "[[webhook]]\nurl = \"http://crm/hooks\"\nevents = [\"*\"]\nsecret = \"short\"\n",
            "webhook[0].secret",
        ),
        (
            "[[webrtc.ice_server]]\nurls = [\"turn:turn.example.com\"]\n",
            "webrtc.ice_server[0].shared_secret",
        ),
        (
            "[[webrtc.ice_server]]\nurls = [\"http://turn.example.com\"]\n",
            "webrtc.ice_server[0].urls[0]",
        ),
    ] {
        let config: Config =
            toml::from_str(&format!("{SHIPPED}\n{extra}")).expect("parses");
        let e = config.validate().expect_err(extra).to_string();
        assert!(e.starts_with(&format!("{key}:")), "{extra}: {e}");
    }
}

/// A proxy without a port is on 5060, or 5061 over TLS, whether it is named by an
/// address or a host name; the b2bua and the TLS connector both go by this.
#[test]
fn a_trunks_proxy_defaults_its_port_by_transport() {
    use crate::sip::transaction::Transport;
    let mut config: Config = toml::from_str(SHIPPED).expect("shipped config parses");
    let trunk = &mut config.trunks[0];
    for (proxy, port, transport) in [
        ("sip:127.0.0.1;transport=tls", 5061, Transport::Tls),
        ("sip:localhost;transport=tls", 5061, Transport::Tls),
        ("sips:127.0.0.1", 5061, Transport::Tls),
        ("sip:127.0.0.1;transport=tcp", 5060, Transport::Tcp),
        ("sip:127.0.0.1", 5060, Transport::Udp),
        ("sip:127.0.0.1:5080;transport=tls", 5080, Transport::Tls),
    ] {
        trunk.outbound_proxy = Some(proxy.into());
        let (_, addr, t) = trunk.proxy().expect(proxy);
        assert_eq!((addr.port(), t), (port, transport), "{proxy}");
    }
}

#[test]
fn roles_are_agent_or_supervisor() {
    let config: Config = toml::from_str(SHIPPED).expect("shipped config parses");
    assert!(config.agents.iter().any(|a| a.role == Role::Supervisor));
    assert!(config.agents.iter().any(|a| a.role == Role::Agent));
    let boss = SHIPPED.replace("role = \"supervisor\"", "role = \"boss\"");
    let err = toml::from_str::<Config>(&boss)
        .expect_err("no such role")
        .to_string();
    assert!(err.contains("boss") && err.contains("supervisor"), "{err}");
}

#[test]
fn srtp_keys_go_over_plain_sip_only_when_allowed() {
    let mut config: Config = toml::from_str(SHIPPED).expect("shipped config parses");
    let trunk = &mut config.trunks[0];
    assert_eq!(trunk.srtp, SrtpMode::Off);
    trunk.outbound_proxy = Some("sip:127.0.0.1:5080".into());
    trunk.srtp = SrtpMode::Required;
    let err = config.validate().expect_err("keys over UDP");
    assert!(err.to_string().contains("trunk[0].srtp"), "{err}");
    config.trunks[0].srtp_over_plain_sip = true;
    config.validate().expect("allowed explicitly");
    config.trunks[0].srtp_over_plain_sip = false;
    config.trunks[0].outbound_proxy = Some("sip:127.0.0.1:5081;transport=tls".into());
    config.validate().expect("over TLS");
    let bad = SHIPPED.replace("[[trunk]]", "[[trunk]]\nsrtp = \"sometimes\"");
    assert!(toml::from_str::<Config>(&bad).is_err());
}

#[test]
fn cidr_matching() {
    let net = Cidr::parse("127.0.0.0/8").expect("valid");
    assert!(net.contains("127.1.2.3".parse().expect("ip")));
    assert!(net.contains("::ffff:127.0.0.1".parse().expect("ip")));
    assert!(!net.contains("10.0.0.1".parse().expect("ip")));
    assert!(Cidr::parse("0.0.0.0/0")
        .expect("valid")
        .contains("8.8.8.8".parse().expect("ip")));
    assert!(Cidr::parse("1.2.3.4/33").is_none());
}

#[test]
fn dial_plan_globs() {
    assert!(dial_plan_matches("+1*", "+15551234567"));
    assert!(!dial_plan_matches("+1*", "+445551234567"));
    assert!(dial_plan_matches("sip:*@127.0.0.1", "sip:bob@127.0.0.1"));
    assert!(dial_plan_matches(
        "sip:*@127.0.0.1:*",
        "sip:bob@127.0.0.1:5080"
    ));
    assert!(!dial_plan_matches("sip:*@127.0.0.1", "sip:bob@10.0.0.1"));
}

#[test]
fn dial_plan_stars_stay_in_the_user_part_and_never_backtrack() {
    // What a `*` must not reach: other hosts through parameters, headers or a second @.
    for target in [
        "sip:x@evil.example;maddr=127.0.0.1",
        "sip:x@evil.example;x=@127.0.0.1",
        "sip:x@evil.example?h=@127.0.0.1",
        "sip:x@evil.example@127.0.0.1",
        "sip:x:pw@127.0.0.1",
        "sip:bob@127.0.0.1;transport=tcp",
        "sip:@127.0.0.1",
    ] {
        assert!(!dial_plan_matches("sip:*@127.0.0.1", target), "{target}");
        assert!(!dial_plan_matches("sip:*@127.0.0.1:*", target), "{target}");
    }
    assert!(!dial_plan_matches("+1*", "+1555@evil.example"));
    assert!(!dial_plan_matches("+1*", "+1555;phone-context=x"));
    assert!(!dial_plan_matches("sip:*@127.0.0.1:*", "sip:bob@127.0.0.1"));
    assert!(!dial_plan_matches(
        "sip:*@127.0.0.1:*",
        "sip:bob@127.0.0.1:50x"
    ));
    assert!(dial_plan_matches(
        "sip:*@127.0.0.1:5080",
        "sip:bob@127.0.0.1:5080"
    ));
    assert!(dial_plan_matches("+1555*99", "+15551234599"));
    assert!(!dial_plan_matches("+1555*99", "+1555"));
    assert!(dial_plan_matches("+1*2*3*", "+1x2y3z"));
    assert!(dial_plan_matches("*", "+4420"));
    // Many stars against a long near miss: the recursive glob took exponential time.
    let pattern = format!("+{}b", "*a".repeat(20));
    let target = format!("+{}", "a".repeat(5000));
    assert!(!dial_plan_matches(&pattern, &target));
    assert!(dial_plan_matches(&pattern, &(target + "b")));
}

#[test]
fn proxy_names_are_looked_up_by_the_shell_and_an_unresolved_one_is_refused() {
    use std::net::{IpAddr, SocketAddr};
    let mut config: Config = toml::from_str(SHIPPED).expect("shipped config parses");
    config.trunks[0].outbound_proxy = Some("sip:carrier.example;transport=tcp".into());
    config
        .validate()
        .expect("a name passes validation without a lookup");
    assert!(
        config.trunks[0].proxy().is_none(),
        "the core never looks a name up"
    );
    let asked = std::cell::RefCell::new(Vec::new());
    config
        .resolve_trunks(|host, port| {
            asked.borrow_mut().push((host.to_string(), port));
            Some(IpAddr::from([192, 0, 2, 7]))
        })
        .expect("resolves");
    assert_eq!(
        asked.into_inner(),
        vec![("carrier.example".to_string(), 5060)]
    );
    let (_, addr, _) = config.trunks[0].proxy().expect("proxy");
    assert_eq!(addr, "192.0.2.7:5060".parse::<SocketAddr>().unwrap());
    let err = config
        .resolve_trunks(|_, _| None)
        .expect_err("an unknown name");
    assert!(err.to_string().contains("trunk[0].outbound_proxy"), "{err}");
}

#[test]
fn required_srtp_over_a_plain_proxy_is_refused_whether_it_is_named_or_not() {
    for proxy in ["sip:127.0.0.1:5080", "sip:sbc.carrier.example"] {
        let mut config: Config = toml::from_str(SHIPPED).expect("shipped config parses");
        config.trunks[0].outbound_proxy = Some(proxy.into());
        config.trunks[0].srtp = SrtpMode::Required;
        let err = config.validate().expect_err(proxy);
        assert!(err.to_string().contains("trunk[0].srtp"), "{proxy}: {err}");
        config.trunks[0].outbound_proxy = Some(format!("{proxy};transport=tls"));
        config.validate().expect("over TLS the keys are protected");
    }
}

#[test]
fn a_cluster_names_this_node_and_a_registrar_trunk_with_a_proxy() {
    let base: Config = toml::from_str(SHIPPED).expect("shipped config parses");
    let trunk = base.trunks[0].name.clone();
    let with = |node: &str, registrar: &str, proxy: Option<&str>| {
        let mut config = base.clone();
        config.trunks[0].outbound_proxy = proxy.map(str::to_string);
        config.cluster = Some(ClusterConfig {
            node: node.into(),
            registrar: registrar.into(),
            lease: 30,
        });
        config.http.public_url = Some("https://a.example.com".into());
        config.store.backend = StoreBackend::Postgres;
        config.store.url = Some("postgres://cg@127.0.0.1/cg".into());
        config.validate().map_err(|e| e.to_string())
    };
    assert!(with("a", &trunk, Some("sip:127.0.0.2:5060")).is_ok());
    let err = with("a", "nowhere", Some("sip:127.0.0.2:5060")).unwrap_err();
    assert!(err.contains("cluster.registrar"), "{err}");
    let err = with("a", &trunk, None).unwrap_err();
    assert!(err.contains("cluster.registrar"), "{err}");
    let err = with("a b", &trunk, Some("sip:127.0.0.2:5060")).unwrap_err();
    assert!(err.contains("cluster.node"), "{err}");
    // A cluster on each node's own SQLite would split the call log and claim agents nowhere.
    let mut alone = base.clone();
    alone.trunks[0].outbound_proxy = Some("sip:127.0.0.2:5060".into());
    alone.cluster = Some(ClusterConfig {
        node: "a".into(),
        registrar: trunk.clone(),
        lease: 30,
    });
    alone.http.public_url = Some("https://a.example.com".into());
    let err = alone.validate().unwrap_err().to_string();
    assert!(err.contains("store.backend"), "{err}");
}

#[test]
fn a_cluster_node_is_reached_at_a_public_url_that_is_an_origin() {
    let mut config: Config = toml::from_str(SHIPPED).expect("shipped config parses");
    config.trunks[0].outbound_proxy = Some("sip:127.0.0.2:5060".into());
    config.store.backend = StoreBackend::Postgres;
    config.store.url = Some("postgres://cg@127.0.0.1/cg".into());
    let registrar = config.trunks[0].name.clone();
    config.cluster = Some(ClusterConfig {
        node: "a".into(),
        registrar,
        lease: 30,
    });
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains("http.public_url"),
        "required in a cluster: {err}"
    );
    let with = |url: &str| {
        let mut config = config.clone();
        config.http.public_url = Some(url.into());
        config.validate().map_err(|e| e.to_string())
    };
    for good in [
        "https://a.example.com",
        "https://a.example.com/",
        "http://127.0.0.3:12860",
        "http://[::1]:8080",
        "http://[::1]",
    ] {
        assert!(with(good).is_ok(), "{good}: {:?}", with(good));
    }
    for bad in [
        "",
        "a.example.com",
        "ftp://a.example.com",
        "https://",
        "https://a.example.com/calls",
        "https://user@a.example.com",
        "https://a.example.com:99999",
        "https://a.example.com:0",
        "https://a.example.com?x=1",
        "javascript:alert(1)",
    ] {
        let err = with(bad).unwrap_err();
        assert!(err.contains("http.public_url"), "{bad}: {err}");
    }
}

#[test]
fn a_postgres_store_needs_its_url_and_sqlite_takes_none() {
    let base: Config = toml::from_str(SHIPPED).expect("shipped config parses");
    assert_eq!(base.store.backend, StoreBackend::Sqlite);
    let with = |store: &str| {
        let mut config = base.clone();
        config.store = toml::from_str(store).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())
    };
    assert!(with("backend = \"postgres\"\nurl = \"postgres://cg@127.0.0.1/cg\"").is_ok());
    let err = with("backend = \"postgres\"").unwrap_err();
    assert!(err.contains("store.url"), "{err}");
    let err = with("url = \"postgres://cg@127.0.0.1/cg\"").unwrap_err();
    assert!(err.contains("store.url"), "{err}");
    let err = with("backend = \"mysql\"").unwrap_err();
    assert!(err.contains("backend"), "{err}");
}
