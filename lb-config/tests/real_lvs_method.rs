//! A `real_server`'s own `lvs_method` (keepalived's `rs_forwarding_handler`): it overrides
//! the virtual server's `lb_kind` for that real, with the same tunnel options, and reads
//! back from what `emit` writes.

use std::path::Path;

use lb_config::{
    ConfigError,
    emit::to_keepalived,
    model::{ForwardMethod, TunnelChecksum, TunnelType},
    parse,
};

const MIXED: &str = "
virtual_server 192.0.2.1 80 {
    lb_kind DR
    protocol TCP
    real_server 10.0.0.1 80 {
    }
    real_server 10.0.0.2 8080 {
        lvs_method NAT
    }
    real_server 10.0.0.3 80 {
        lvs_method TUN type gue port 6080 csum
    }
    real_server 2001:db8::4 80 {
        lvs_method TUN
    }
}
";

#[test]
fn each_real_is_forwarded_by_its_own_method_or_the_virtual_servers() {
    let loaded = parse(MIXED, Path::new("k.conf")).expect("parses");
    let vs = &loaded.config.virtual_servers[0];
    let methods: Vec<_> = vs
        .reals
        .iter()
        .map(|real| (real.port, vs.forwarding(real)))
        .collect();
    assert_eq!(
        methods,
        [
            (80, (ForwardMethod::Dr, TunnelType::Ipip)),
            // NAT translates ports: the real keeps 8080 (a DR real would get 80).
            (8080, (ForwardMethod::Nat, TunnelType::Ipip)),
            (
                80,
                (
                    ForwardMethod::Tun,
                    TunnelType::Gue {
                        port: 6080,
                        checksum: TunnelChecksum::Checksum
                    }
                )
            ),
            // An IPv6 real of an IPv4 VIP: 4in6, which only TUN carries.
            (80, (ForwardMethod::Tun, TunnelType::Ipip)),
        ]
    );
    assert!(vs.forwards_by(ForwardMethod::Dr) && vs.forwards_by(ForwardMethod::Tun));
    assert!(vs.translates_replies());
    assert_eq!(
        vs.tunnels().collect::<Vec<_>>(),
        [
            TunnelType::Gue {
                port: 6080,
                checksum: TunnelChecksum::Checksum
            },
            TunnelType::Ipip
        ]
    );
    // Written out and read back: the same model.
    let text = to_keepalived(&loaded.config);
    assert!(
        text.contains("lvs_method TUN type gue port 6080 csum"),
        "{text}"
    );
    let again = parse(&text, Path::new("emitted.conf")).expect("reads back");
    assert_eq!(again.config.virtual_servers, loaded.config.virtual_servers);
}

#[test]
fn a_method_no_server_uses_is_not_the_services() {
    // lb_kind TUN type gue, but every real forwards by DR and there is no sorry server.
    let text = "virtual_server 192.0.2.1 80 {\n lb_kind TUN type gue port 6080\n real_server 10.0.0.1 80 {\n  lvs_method DR\n }\n}\n";
    let loaded = parse(text, Path::new("k.conf")).expect("parses");
    let vs = &loaded.config.virtual_servers[0];
    assert_eq!(vs.tunnels().count(), 0);
    assert!(!vs.forwards_by(ForwardMethod::Tun) && vs.forwards_by(ForwardMethod::Dr));
    // A sorry server without a method of its own takes the virtual server's.
    let text = text.replace(" real_server", " sorry_server 10.0.0.9 80\n real_server");
    let loaded = parse(&text, Path::new("k.conf")).expect("parses");
    assert_eq!(loaded.config.virtual_servers[0].tunnels().count(), 1);
}

#[test]
fn a_dr_real_of_a_nat_service_gets_the_services_port() {
    let text = "virtual_server 192.0.2.1 80 {\n lb_kind NAT\n real_server 10.0.0.1 8080 {\n  lvs_method DR\n }\n}\n";
    let loaded = parse(text, Path::new("k.conf")).expect("parses");
    assert_eq!(loaded.config.virtual_servers[0].reals[0].port, 80);
    assert!(
        loaded.warnings.iter().any(|w| w
            .to_string()
            .contains("DR does not translate ports, so 80 is used")),
        "{:?}",
        loaded.warnings
    );
}

fn errors(text: &str) -> Vec<String> {
    match parse(text, Path::new("k.conf")) {
        Err(ConfigError::Invalid { errors, .. }) => {
            errors.iter().map(ToString::to_string).collect()
        }
        other => panic!("expected errors, got {other:?}"),
    }
}

#[test]
fn fullnat_is_for_every_real_or_none() {
    assert_eq!(
        errors(
            "virtual_server 192.0.2.1 80 {\n lb_kind DR\n real_server 10.0.0.1 80 {\n  lvs_method FNAT\n }\n}\n"
        ),
        [
            "k.conf:4: error: real_server lvs_method FNAT: FullNAT is a virtual server's method (lb_kind FNAT), for all its reals"
        ]
    );
    let fnat = "local_address_group pool {\n 10.0.0.200\n}\nvirtual_server 192.0.2.1 80 {\n lb_kind FNAT\n laddr_group_name pool\n real_server 10.0.0.1 80 {\n  lvs_method NAT\n }\n real_server 10.0.0.2 80 {}\n}\n";
    assert_eq!(
        errors(fnat),
        [
            "k.conf:7: error: real_server 10.0.0.1 lvs_method NAT: a FullNAT virtual server forwards every real by FullNAT (its replies need the director's local addresses)"
        ]
    );
}

#[test]
fn a_bad_lvs_method_is_an_error_with_its_line() {
    assert_eq!(
        errors(
            "virtual_server 192.0.2.1 80 {\n lb_kind DR\n real_server 10.0.0.1 80 {\n  lvs_method MAGIC\n }\n}\n"
        ),
        [
            "k.conf:4: error: real_server lvs_method `MAGIC` is not supported (supported: DR, TUN, NAT)"
        ]
    );
    assert_eq!(
        errors(
            "virtual_server 192.0.2.1 80 {\n lb_kind DR\n real_server 10.0.0.1 80 {\n  lvs_method TUN type gue\n }\n}\n"
        ),
        ["k.conf:4: error: a GUE tunnel needs `port N`, the reals' GUE port"]
    );
}

#[test]
fn the_sorry_server_has_its_own_method_too() {
    let text = "virtual_server 192.0.2.1 80 {\n lb_kind DR\n sorry_server_lvs_method TUN type gre csum\n sorry_server 10.0.0.9 80\n real_server 10.0.0.1 80 {}\n}\n";
    let loaded = parse(text, Path::new("k.conf")).expect("parses");
    let vs = &loaded.config.virtual_servers[0];
    let gre = TunnelType::Gre {
        checksum: TunnelChecksum::Checksum,
    };
    assert_eq!(
        vs.extras.sorry_server_lvs_method,
        Some((ForwardMethod::Tun, gre))
    );
    // The sorry server's tunnel counts among the service's (its only one here).
    assert_eq!(vs.tunnels().collect::<Vec<_>>(), [gre]);
    assert!(vs.forwards_by(ForwardMethod::Tun) && !vs.translates_replies());
    let again =
        parse(&to_keepalived(&loaded.config), Path::new("emitted.conf")).expect("reads back");
    assert_eq!(again.config.virtual_servers, loaded.config.virtual_servers);
    let fnat = "local_address_group pool {\n 10.0.0.200\n}\nvirtual_server 192.0.2.1 80 {\n lb_kind FNAT\n laddr_group_name pool\n sorry_server 10.0.0.9 80\n sorry_server_lvs_method DR\n real_server 10.0.0.2 80 {}\n}\n";
    assert_eq!(
        errors(fnat),
        [
            "k.conf:8: error: sorry_server_lvs_method DR: a FullNAT virtual server forwards every real by FullNAT (its replies need the director's local addresses)"
        ]
    );
}
