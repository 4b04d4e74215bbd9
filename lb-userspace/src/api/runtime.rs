//! Runtime changes applied to the running configuration, checked by the rules the
//! configuration reader applies (scheduler and method names, weight range, address
//! families, keepalived's DR/TUN port rule, duplicates). Pure: configuration in, new
//! configuration and a description out, or why not.

use std::{net::SocketAddr, time::Duration};

use super::{Change, ServiceRef};
use crate::model::{
    Config, ForwardMethod, Persistence, RealServer, SchedFlags, Scheduler, ServiceExtras,
    TunnelType, VirtualServer,
};

/// keepalived's weight range (`real_server` `weight`).
const MAX_WEIGHT: u32 = 65535;
/// keepalived's `delay_loop` default, for services added at runtime.
const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);

fn find<'a>(config: &'a mut Config, service: &ServiceRef) -> Result<&'a mut VirtualServer, String> {
    config
        .virtual_servers
        .iter_mut()
        .find(|vs| service.id().is(vs))
        .ok_or_else(|| format!("no virtual service {service}"))
}

fn scheduler(name: &str) -> Result<Scheduler, String> {
    Scheduler::from_name(name).ok_or_else(|| {
        format!(
            "unknown scheduler `{name}` (supported: {})",
            Scheduler::SUPPORTED
        )
    })
}

fn persistence(timeout: u32, vs_is_v4: bool) -> Option<Persistence> {
    (timeout > 0).then_some(Persistence {
        timeout_secs: timeout,
        prefix_len: if vs_is_v4 { 32 } else { 128 },
    })
}

fn weight(weight: u32) -> Result<u32, String> {
    if weight > MAX_WEIGHT {
        return Err(format!("weight {weight} is out of range 0..={MAX_WEIGHT}"));
    }
    Ok(weight)
}

/// The real `real` names: the one with its address and port; else a DR or TUN real at
/// its address, whose port is the service's whatever was asked (as ipvsadm's user typed
/// the real's own port).
fn find_real(vs: &mut VirtualServer, real: SocketAddr) -> Option<&mut RealServer> {
    let at = |r: &RealServer, port| (r.addr, r.port) == (real.ip(), port);
    let index = vs
        .reals
        .iter()
        .position(|r| at(r, real.port()))
        .or_else(|| {
            let by_method = |r: &RealServer| port_by(vs.forwarding(r).0, vs, real);
            vs.reals.iter().position(|r| at(r, by_method(r)))
        })?;
    vs.reals.get_mut(index)
}

/// The port of `real` in `vs` when it is forwarded by `forward`: DR and TUN cannot change
/// the port, so keepalived sets such a real's port to the service's.
fn port_by(forward: ForwardMethod, vs: &VirtualServer, real: SocketAddr) -> u16 {
    match forward {
        ForwardMethod::Dr | ForwardMethod::Tun => vs.port,
        ForwardMethod::Nat | ForwardMethod::FullNat => real.port(),
    }
}

/// `config` with `change` made, and what was done; or why it cannot be.
pub fn apply(config: &Config, change: &Change) -> Result<(Config, String), String> {
    let mut config = config.clone();
    let done = match change {
        Change::AddService {
            service,
            scheduler: algo,
            forward,
            persistent,
        } => {
            if find(&mut config, service).is_ok() {
                return Err(format!("virtual service {service} exists already"));
            }
            let forward = match forward.as_deref() {
                None => ForwardMethod::Dr,
                Some(name) => ForwardMethod::from_name(name).ok_or_else(|| {
                    format!(
                        "unknown forwarding method `{name}` (supported: {})",
                        ForwardMethod::SUPPORTED
                    )
                })?,
            };
            if forward == ForwardMethod::FullNat {
                return Err(
                    "FNAT needs a local_address_group: add the service in the configuration file"
                        .to_owned(),
                );
            }
            let scheduler = scheduler(algo.as_deref().unwrap_or("wlc"))?;
            config.virtual_servers.push(VirtualServer {
                addr: service.addr,
                port: service.port,
                protocol: service.protocol(),
                fwmark: service.fwmark,
                scheduler,
                sched_flags: SchedFlags::default(),
                persistence: persistence(persistent.unwrap_or(0), service.addr.is_ipv4()),
                one_packet: false,
                forward,
                local_addresses: Vec::new(),
                tun_sources: Vec::new(),
                tunnel: TunnelType::Ipip,
                delay_loop: DEFAULT_DELAY_LOOP,
                extras: ServiceExtras::default(),
                reals: Vec::new(),
            });
            format!(
                "added virtual service {service} ({}, lb_kind {forward:?})",
                scheduler.name()
            )
        }
        Change::EditService {
            service,
            scheduler: algo,
            persistent,
        } => {
            let vs = find(&mut config, service)?;
            if let Some(name) = algo {
                vs.scheduler = scheduler(name)?;
            }
            if let Some(timeout) = persistent {
                vs.persistence = persistence(*timeout, vs.addr.is_ipv4());
            }
            format!(
                "virtual service {service}: scheduler {}, persistence {}",
                vs.scheduler.name(),
                vs.persistence
                    .map_or("off".to_owned(), |p| format!("{} s", p.timeout_secs))
            )
        }
        Change::RemoveService { service } => {
            find(&mut config, service)?;
            config.virtual_servers.retain(|vs| !service.id().is(vs));
            format!("removed virtual service {service}")
        }
        Change::AddReal {
            service,
            real,
            weight: w,
            forward,
        } => {
            let vs = find(&mut config, service)?;
            if real.is_ipv4() != vs.addr.is_ipv4() {
                return Err(format!(
                    "real server {real} is not of the address family of {service}"
                ));
            }
            // ipvsadm -a -g/-i/-m: the real's own method (keepalived's real_server
            // lvs_method) when it differs from the virtual server's.
            let lvs_method = match forward {
                Some(name) => {
                    let wanted = ForwardMethod::from_name(name)
                        .ok_or_else(|| format!("unknown forwarding method `{name}`"))?;
                    match (vs.forward, wanted) {
                        (ours, wanted) if ours == wanted => None,
                        (ForwardMethod::FullNat, _) | (_, ForwardMethod::FullNat) => {
                            return Err(format!(
                                "{service} forwards by {}: FullNAT is for every real of a virtual server or none",
                                vs.forward.name()
                            ));
                        }
                        (_, wanted) => Some((wanted, TunnelType::Ipip)),
                    }
                }
                None => None,
            };
            let method = lvs_method.map_or(vs.forward, |(method, _)| method);
            let port = port_by(method, vs, *real);
            // A real is its address and port, as IPVS's destination (a DR or TUN one gets
            // the service's port).
            if vs
                .reals
                .iter()
                .any(|r| (r.addr, r.port) == (real.ip(), port))
            {
                return Err(format!(
                    "real server {} {port} is in {service} already",
                    real.ip()
                ));
            }
            let weight = weight(w.unwrap_or(1))?;
            vs.reals.push(RealServer {
                addr: real.ip(),
                port,
                weight,
                checkers: Vec::new(),
                notify_up: None,
                notify_down: None,
                inhibit_on_failure: false,
                upper_threshold: 0,
                lower_threshold: 0,
                smtp_alert: None,
                lvs_method,
            });
            let mut done = format!(
                "added real server {} {port} to {service}, weight {weight}",
                real.ip()
            );
            if port != real.port() {
                done.push_str(&format!(
                    " (port {} set to the service's: {} does not translate ports)",
                    real.port(),
                    method.name()
                ));
            }
            done
        }
        Change::EditReal {
            service,
            real,
            weight: w,
        } => {
            let vs = find(&mut config, service)?;
            let weight = weight(*w)?;
            let entry = find_real(vs, *real)
                .ok_or_else(|| format!("no real server {real} in {service}"))?;
            let before = entry.weight;
            entry.weight = weight;
            format!("real server {real} of {service}: weight {before} -> {weight}")
        }
        Change::RemoveReal { service, real } => {
            let vs = find(&mut config, service)?;
            let port = find_real(vs, *real)
                .ok_or_else(|| format!("no real server {real} in {service}"))?
                .port;
            vs.reals.retain(|r| (r.addr, r.port) != (real.ip(), port));
            format!("removed real server {real} from {service}")
        }
    };
    Ok((config, done))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::api::ServiceProtocol;

    fn config() -> Config {
        let text = "virtual_server 10.0.0.100 80 {\n lb_kind DR\n lb_algo rr\n protocol TCP\n real_server 10.0.1.2 80 {\n  weight 2\n }\n}\n";
        crate::config::parse(text, Path::new("t.conf"))
            .unwrap()
            .config
    }

    fn web() -> ServiceRef {
        ServiceRef::address(ServiceProtocol::Tcp, "10.0.0.100:80".parse().unwrap())
    }

    #[test]
    fn reals_are_added_weighted_and_removed() {
        let add = Change::AddReal {
            service: web(),
            real: "10.0.1.3:8080".parse().unwrap(),
            weight: None,
            forward: Some("DR".into()),
        };
        let (config, done) = apply(&config(), &add).unwrap();
        assert_eq!(
            done,
            "added real server 10.0.1.3 80 to TCP 10.0.0.100:80, weight 1 (port 8080 set to the service's: DR does not translate ports)"
        );
        assert_eq!(config.virtual_servers[0].reals[1].port, 80);
        assert!(apply(&config, &add).unwrap_err().contains("already"));
        let drain = Change::EditReal {
            service: web(),
            real: "10.0.1.2:80".parse().unwrap(),
            weight: 0,
        };
        let (config, done) = apply(&config, &drain).unwrap();
        assert_eq!(
            done,
            "real server 10.0.1.2:80 of TCP 10.0.0.100:80: weight 2 -> 0"
        );
        assert_eq!(config.virtual_servers[0].reals[0].weight, 0);
        let remove = Change::RemoveReal {
            service: web(),
            real: "10.0.1.3:80".parse().unwrap(),
        };
        let (config, _) = apply(&config, &remove).unwrap();
        assert_eq!(config.virtual_servers[0].reals.len(), 1);
    }

    #[test]
    fn reals_of_one_address_on_two_ports_are_told_apart() {
        // A DR real 10.0.1.9:80 and a NAT real 10.0.1.9:8080 (lvs_method NAT) in one service.
        let add = |config: &Config, addr: &str, forward: &str| {
            apply(
                config,
                &Change::AddReal {
                    service: web(),
                    real: addr.parse().unwrap(),
                    weight: None,
                    forward: Some(forward.into()),
                },
            )
        };
        let (config, _) = add(&config(), "10.0.1.9:80", "DR").unwrap();
        let (config, _) = add(&config, "10.0.1.9:8080", "NAT").unwrap();
        // The same again: refused, whichever port a DR real is named by.
        assert!(
            add(&config, "10.0.1.9:8080", "NAT")
                .unwrap_err()
                .contains("already")
        );
        assert!(
            add(&config, "10.0.1.9:81", "DR")
                .unwrap_err()
                .contains("already")
        );
        // 8080 names the NAT real, not the DR one at the same address.
        let drain = Change::EditReal {
            service: web(),
            real: "10.0.1.9:8080".parse().unwrap(),
            weight: 0,
        };
        let (config, _) = apply(&config, &drain).unwrap();
        let weights: Vec<(u16, u32)> = config.virtual_servers[0]
            .reals
            .iter()
            .filter(|r| r.addr.to_string() == "10.0.1.9")
            .map(|r| (r.port, r.weight))
            .collect();
        assert_eq!(weights, [(80, 1), (8080, 0)]);
        let remove = Change::RemoveReal {
            service: web(),
            real: "10.0.1.9:8080".parse().unwrap(),
        };
        let (config, _) = apply(&config, &remove).unwrap();
        let left: Vec<u16> = config.virtual_servers[0]
            .reals
            .iter()
            .filter(|r| r.addr.to_string() == "10.0.1.9")
            .map(|r| r.port)
            .collect();
        assert_eq!(left, [80]);
    }

    #[test]
    fn a_real_added_with_another_method_gets_its_own_lvs_method() {
        // ipvsadm -a -t 10.0.0.100:80 -r 10.0.1.9:8080 -m in a DR service: NAT translates
        // ports, so the real keeps 8080.
        let nat_real = "10.0.1.9:8080".parse().unwrap();
        let add = Change::AddReal {
            service: web(),
            real: nat_real,
            weight: None,
            forward: Some("NAT".into()),
        };
        let (config, done) = apply(&config(), &add).unwrap();
        assert_eq!(
            done,
            "added real server 10.0.1.9 8080 to TCP 10.0.0.100:80, weight 1"
        );
        let vs = &config.virtual_servers[0];
        let real = vs.reals.last().unwrap();
        assert_eq!(
            (real.port, real.lvs_method),
            (8080, Some((ForwardMethod::Nat, TunnelType::Ipip)))
        );
        assert_eq!(vs.forwarding(real).0, ForwardMethod::Nat);
        assert!(vs.forwards_by(ForwardMethod::Nat) && vs.forwards_by(ForwardMethod::Dr));
        // Found again by its own port, and removed.
        let drain = Change::EditReal {
            service: web(),
            real: nat_real,
            weight: 0,
        };
        let (config, _) = apply(&config, &drain).unwrap();
        let remove = Change::RemoveReal {
            service: web(),
            real: nat_real,
        };
        let (config, _) = apply(&config, &remove).unwrap();
        assert!(!config.virtual_servers[0].forwards_by(ForwardMethod::Nat));
    }

    #[test]
    fn bad_changes_are_refused_with_the_reason() {
        let cases = [
            (
                Change::EditReal {
                    service: web(),
                    real: "10.0.1.2:80".parse().unwrap(),
                    weight: 70000,
                },
                "weight 70000 is out of range 0..=65535",
            ),
            (
                Change::AddService {
                    service: web(),
                    scheduler: None,
                    forward: None,
                    persistent: None,
                },
                "virtual service TCP 10.0.0.100:80 exists already",
            ),
            (
                Change::EditService {
                    service: web(),
                    scheduler: Some("fastest".into()),
                    persistent: None,
                },
                "unknown scheduler `fastest` (supported: rr, wrr, lc, wlc, sh, dh, sed, nq, mh, fo, ovf, twos, lblc, lblcr)",
            ),
            (
                Change::AddReal {
                    service: web(),
                    real: "[2001:db8::1]:80".parse().unwrap(),
                    weight: None,
                    forward: None,
                },
                "real server [2001:db8::1]:80 is not of the address family of TCP 10.0.0.100:80",
            ),
            (
                Change::AddReal {
                    service: web(),
                    real: "10.0.1.9:80".parse().unwrap(),
                    weight: None,
                    forward: Some("FNAT".into()),
                },
                "TCP 10.0.0.100:80 forwards by DR: FullNAT is for every real of a virtual server or none",
            ),
            (
                Change::RemoveService {
                    service: ServiceRef { port: 81, ..web() },
                },
                "no virtual service TCP 10.0.0.100:81",
            ),
        ];
        for (change, error) in cases {
            assert_eq!(apply(&config(), &change).unwrap_err(), error, "{change:?}");
        }
    }

    #[test]
    fn services_are_added_edited_and_removed() {
        let dns = ServiceRef::address(ServiceProtocol::Udp, "10.0.0.53:53".parse().unwrap());
        let (config, done) = apply(
            &config(),
            &Change::AddService {
                service: dns,
                scheduler: Some("sh".into()),
                forward: Some("NAT".into()),
                persistent: Some(300),
            },
        )
        .unwrap();
        assert_eq!(
            done,
            "added virtual service UDP 10.0.0.53:53 (sh, lb_kind Nat)"
        );
        let vs = &config.virtual_servers[1];
        assert_eq!(
            (vs.scheduler, vs.forward),
            (Scheduler::Sh, ForwardMethod::Nat)
        );
        assert_eq!(vs.persistence.unwrap().timeout_secs, 300);
        let (config, _) = apply(
            &config,
            &Change::EditService {
                service: dns,
                scheduler: None,
                persistent: Some(0),
            },
        )
        .unwrap();
        assert_eq!(config.virtual_servers[1].persistence, None);
        let (config, _) = apply(&config, &Change::RemoveService { service: dns }).unwrap();
        assert_eq!(config.virtual_servers.len(), 1);
    }

    #[test]
    fn firewall_mark_services_are_their_mark_and_family() {
        let marked = ServiceRef::fwmark(5, false);
        let (config, done) = apply(
            &config(),
            &Change::AddService {
                service: marked,
                scheduler: Some("rr".into()),
                forward: None,
                persistent: None,
            },
        )
        .unwrap();
        assert_eq!(done, "added virtual service FWM 5 (rr, lb_kind Dr)");
        let vs = &config.virtual_servers[1];
        assert_eq!((vs.fwmark, vs.port), (Some(5), 0));
        // DR keeps the packet's port: the real's is the service's, 0.
        let (config, done) = apply(
            &config,
            &Change::AddReal {
                service: marked,
                real: "10.0.1.9:80".parse().unwrap(),
                weight: Some(3),
                forward: None,
            },
        )
        .unwrap();
        assert!(
            done.starts_with("added real server 10.0.1.9 0 to FWM 5, weight 3"),
            "{done}"
        );
        // The same mark for IPv6 is another service.
        let v6 = Change::RemoveService {
            service: ServiceRef::fwmark(5, true),
        };
        assert_eq!(
            apply(&config, &v6).unwrap_err(),
            "no virtual service FWM 5 IPv6"
        );
        let (config, _) = apply(&config, &Change::RemoveService { service: marked }).unwrap();
        assert_eq!(config.virtual_servers.len(), 1);
    }
}
