//! The services, reals and connections as `ipvsadm` prints them: `-Ln` (scheduler, flags,
//! forwarding method, weight, connections), `--stats`, `--rate` (with its number format:
//! K/M/G/T above 100 million unless `--exact`), `--thresholds` and `-Lnc`. Operators' scripts parse these
//! columns, so the widths are ipvsadm's.

use std::{fmt::Write as _, net::IpAddr, time::Duration};

use serde::Serialize;

use crate::dataplane::{Counters, RealCounters, ServiceCounters, Traffic, xdp::flows::Connection};

/// Which columns `list` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Columns {
    /// Scheduler, flags, forward, weight, connections (`-Ln`).
    #[default]
    Table,
    /// Conns, InPkts, OutPkts, InBytes, OutBytes (`--stats`).
    Stats,
    /// Per second: CPS, InPPS, OutPPS, InBPS, OutBPS (`--rate`; `Counters` holding rates).
    Rate,
    /// Uthreshold, Lthreshold, ActiveConn, InActConn (`--thresholds`).
    Thresholds,
}

/// `addr:port`, IPv6 in brackets (ipvsadm's `addrport_to_anyname` with `-n`).
fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// ipvsadm's `print_largenum`.
fn largenum(out: &mut String, n: u64, exact: bool) {
    if exact {
        let width = n.to_string().len();
        let width = if width <= 8 { 9 } else { width + 1 };
        let _ = write!(out, "{n:>width$}");
    } else if n < 100_000_000 {
        let _ = write!(out, "{n:>9}");
    } else if n < 1_000_000_000 {
        let _ = write!(out, "{:>8}K", n / 1_000);
    } else if n < 100_000_000_000 {
        let _ = write!(out, "{:>8}M", n / 1_000_000);
    } else if n < 100_000_000_000_000 {
        let _ = write!(out, "{:>8}G", n / 1_000_000_000);
    } else {
        let _ = write!(out, "{:>8}T", n / 1_000_000_000_000);
    }
}

fn title(out: &mut String, columns: Columns) {
    let names = match columns {
        Columns::Table => {
            out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
            out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
            return;
        }
        Columns::Thresholds => {
            out.push_str(
                // ipvsadm's title ends with a space.
                "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n",
            );
            out.push_str("  -> RemoteAddress:Port\n");
            return;
        }
        Columns::Stats => ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"],
        Columns::Rate => ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"],
    };
    let _ = writeln!(
        out,
        "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
        "Prot LocalAddress:Port", names[0], names[1], names[2], names[3], names[4]
    );
}

fn numbers(out: &mut String, t: &Traffic, exact: bool) {
    for n in [t.new_flows, t.packets, t.out_packets, t.bytes, t.out_bytes] {
        largenum(out, n, exact);
    }
}

fn service_line(out: &mut String, service: &ServiceCounters, columns: Columns, exact: bool) {
    let name = match (service.fwmark, service.addr) {
        (Some(mark), IpAddr::V4(_)) => format!("FWM  {mark}"),
        (Some(mark), IpAddr::V6(_)) => format!("FWM  {mark} IPv6"),
        (None, addr) => format!(
            "{}  {}",
            service.protocol.name(),
            endpoint(addr, service.port)
        ),
    };
    match columns {
        Columns::Table | Columns::Thresholds => {
            let _ = write!(out, "{name} {}", service.scheduler);
            if !service.sched_flags.is_empty() {
                let _ = write!(out, " ({})", service.sched_flags.join(","));
            }
            if let Some((timeout, prefix)) = service.persistent {
                let _ = write!(out, " persistent {timeout}");
                match service.addr {
                    IpAddr::V4(_) if prefix < 32 => {
                        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                        let _ = write!(out, " mask {}", std::net::Ipv4Addr::from(mask));
                    }
                    IpAddr::V6(_) if prefix < 128 => {
                        let _ = write!(out, " mask {prefix}");
                    }
                    _ => {}
                }
            }
            if service.ops {
                out.push_str(" ops");
            }
        }
        Columns::Stats | Columns::Rate => {
            let _ = write!(out, "{name:<33}");
            numbers(out, &service.traffic, exact);
        }
    }
    out.push('\n');
}

fn real_line(out: &mut String, real: &RealCounters, columns: Columns, exact: bool) {
    let name = endpoint(real.addr, real.port);
    match columns {
        Columns::Table => {
            let _ = writeln!(
                out,
                "  -> {name:<28} {:<7} {:<6} {:<10} {:<10}",
                real.forward, real.weight, real.active_conns, real.inactive_conns
            );
        }
        Columns::Thresholds => {
            let _ = writeln!(
                out,
                "  -> {name:<28} {:<10} {:<10} {:<10} {:<10}",
                real.upper_threshold, real.lower_threshold, real.active_conns, real.inactive_conns
            );
        }
        Columns::Stats => {
            let _ = write!(out, "  -> {name:<28}");
            numbers(out, &real.traffic, exact);
            out.push('\n');
        }
        Columns::Rate => {
            let t = &real.traffic;
            let _ = write!(
                out,
                "  -> {name:<28} {:>8} {:>8} {:>8}",
                t.new_flows, t.packets, t.out_packets
            );
            largenum(out, t.bytes, exact);
            largenum(out, t.out_bytes, exact);
            out.push('\n');
        }
    }
}

/// `ipvsadm -Ln` (with `--stats` or `--rate` as `columns` says): `header` first when
/// given (ipvsadm prints its version line only when listing every service). Retired reals
/// (removed, still carrying established flows) are not shown, as IPVS hides them.
pub fn list(counters: &Counters, header: Option<&str>, columns: Columns, exact: bool) -> String {
    let mut out = String::new();
    if let Some(header) = header {
        out.push_str(header);
        out.push('\n');
    }
    title(&mut out, columns);
    for service in &counters.services {
        service_line(&mut out, service, columns, exact);
        for real in service.reals.iter().filter(|r| !r.retired) {
            real_line(&mut out, real, columns, exact);
        }
    }
    out
}

/// Per-second rates between two snapshots taken `elapsed` apart, in the shape of the
/// snapshots (for `list` with `Columns::Rate`). Services and reals missing from `before`
/// count from zero; counters that went down (zeroed) count from zero too.
pub fn rates(before: &Counters, after: &Counters, elapsed: Duration) -> Counters {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let per_second = |now: &Traffic, then: Option<&Traffic>| {
        let then = then.copied().unwrap_or_default();
        let rate = |a: u64, b: u64| {
            let delta = if a >= b { a - b } else { a };
            (delta as f64 / secs).round() as u64
        };
        Traffic {
            packets: rate(now.packets, then.packets),
            bytes: rate(now.bytes, then.bytes),
            new_flows: rate(now.new_flows, then.new_flows),
            out_packets: rate(now.out_packets, then.out_packets),
            out_bytes: rate(now.out_bytes, then.out_bytes),
        }
    };
    let mut result = after.clone();
    for service in &mut result.services {
        let old = before.services.iter().find(|s| s.id() == service.id());
        service.traffic = per_second(&service.traffic, old.map(|s| &s.traffic));
        for real in &mut service.reals {
            let old_real = old.and_then(|s| {
                s.reals
                    .iter()
                    .find(|r| (r.addr, r.port) == (real.addr, real.port))
            });
            real.traffic = per_second(&real.traffic, old_real.map(|r| &r.traffic));
        }
    }
    result
}

/// `ipvsadm -Lnc`.
pub fn connections(connections: &[Connection]) -> String {
    let mut out = String::from("IPVS connection entries\n");
    let _ = writeln!(
        out,
        "pro expire {:<11} {:<18} {:<18} destination",
        "state", "source", "virtual"
    );
    for c in connections {
        let expire = format!("{:02}:{:02}", c.expire_secs / 60, c.expire_secs % 60);
        let _ = writeln!(
            out,
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
            c.protocol.name(),
            expire,
            c.state,
            endpoint(c.client.ip(), c.client.port()),
            endpoint(c.vip.ip(), c.vip.port()),
            endpoint(c.real.ip(), c.real.port()),
        );
    }
    out
}

/// The JSON of a listing: the services with their reals and counters, and the packets of
/// each outcome (drops and passes by reason).
#[derive(Serialize)]
pub struct ListJson<'a> {
    pub services: &'a [ServiceCounters],
    pub outcomes: std::collections::BTreeMap<&'static str, u64>,
}

impl<'a> ListJson<'a> {
    pub fn of(counters: &'a Counters) -> Self {
        Self {
            services: &counters.services,
            outcomes: counters
                .outcomes
                .iter()
                .map(|(outcome, n)| (outcome.name(), *n))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP service on port 80 of `addr`, scheduled by rr.
    fn tcp_service(addr: &str, traffic: Traffic, reals: Vec<RealCounters>) -> ServiceCounters {
        ServiceCounters {
            addr: addr.parse().unwrap(),
            port: 80,
            protocol: crate::model::Protocol::Tcp,
            fwmark: None,
            scheduler: "rr",
            sched_flags: vec![],
            persistent: None,
            ops: false,
            traffic,
            reals,
        }
    }

    fn num(n: u64, exact: bool) -> String {
        let mut out = String::new();
        largenum(&mut out, n, exact);
        out
    }

    #[test]
    fn large_numbers_take_ipvsadm_units() {
        assert_eq!(num(99_999_999, false), " 99999999");
        assert_eq!(num(123_456_789, false), "  123456K");
        assert_eq!(num(12_345_678_901, false), "   12345M");
        assert_eq!(num(123_456_789_012, false), "     123G");
        assert_eq!(num(123_456_789_012_345, false), "     123T");
        assert_eq!(num(123_456_789, true), " 123456789");
        assert_eq!(num(5, true), "        5");
    }

    #[test]
    fn thresholds_are_listed_in_ipvsadms_columns() {
        let real = |port, upper, lower, active| RealCounters {
            addr: "192.168.1.180".parse().unwrap(),
            port,
            forward: "Route",
            weight: 1,
            retired: false,
            traffic: Traffic::default(),
            active_conns: active,
            inactive_conns: 0,
            upper_threshold: upper,
            lower_threshold: lower,
        };
        let counters = Counters {
            outcomes: vec![],
            services: vec![tcp_service(
                "172.25.116.175",
                Traffic::default(),
                vec![real(80, 0, 0, 5), real(81, 10000, 100, 7)],
            )],
        };
        // As ipvsadm -Ln --thresholds prints them.
        assert_eq!(
            list(&counters, None, Columns::Thresholds, false),
            "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n  -> RemoteAddress:Port\nTCP  172.25.116.175:80 rr\n  -> 192.168.1.180:80             0          0          5          0         \n  -> 192.168.1.180:81             10000      100        7          0         \n"
        );
    }

    #[test]
    fn rates_divide_the_difference_by_the_interval() {
        let service = |packets| {
            let traffic = Traffic {
                packets,
                ..Traffic::default()
            };
            tcp_service("10.0.0.1", traffic, vec![])
        };
        let before = Counters {
            outcomes: vec![],
            services: vec![service(100)],
        };
        let after = Counters {
            outcomes: vec![],
            services: vec![service(400)],
        };
        let rates = rates(&before, &after, Duration::from_secs(2));
        assert_eq!(rates.services[0].traffic.packets, 150);
        let zeroed = super::rates(&after, &before, Duration::from_secs(1));
        assert_eq!(zeroed.services[0].traffic.packets, 100, "zeroed: from 0");
    }
}
