//! lbd's control API: one JSON request per line on a Unix socket (mode 0600, under
//! `/run/lbd/<instance>/`), one JSON response line back. lbctl is its client.
//!
//! Runtime changes (`Change`) edit the running configuration as ipvsadm edits IPVS: they
//! are checked as the configuration would be (`runtime::apply`), applied through the
//! controller like a reload, and stay runtime-only: the next reload or restart reads the
//! file again, and lbd says so in every answer.

pub mod client;
pub mod runtime;
pub mod server;

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{dataplane::diff::ServiceId, status::Status};

/// A virtual service as ipvsadm names one: `-t` / `-u` and `VIP:port`, or `-f MARK`
/// (with `-6` for IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRef {
    /// `TCP` or `UDP` (TCP for a firewall-mark service, as the kernel records it).
    pub protocol: ServiceProtocol,
    /// The VIP; the family's unspecified address for a firewall-mark service.
    pub addr: IpAddr,
    /// 0 for a firewall-mark service.
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceProtocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl ServiceRef {
    /// The address service `protocol` `addr`.
    pub fn address(protocol: ServiceProtocol, addr: SocketAddr) -> Self {
        Self {
            protocol,
            addr: addr.ip(),
            port: addr.port(),
            fwmark: None,
        }
    }

    /// The firewall-mark service `mark` of IPv4, or of IPv6.
    pub fn fwmark(mark: u32, ipv6: bool) -> Self {
        Self {
            protocol: ServiceProtocol::Tcp,
            addr: crate::model::VirtualServer::fwmark_addr(ipv6),
            port: 0,
            fwmark: Some(mark),
        }
    }

    pub fn protocol(&self) -> crate::model::Protocol {
        match self.protocol {
            ServiceProtocol::Tcp => crate::model::Protocol::Tcp,
            ServiceProtocol::Udp => crate::model::Protocol::Udp,
        }
    }

    pub fn id(&self) -> ServiceId {
        ServiceId {
            addr: self.addr,
            port: self.port,
            protocol: self.protocol(),
            fwmark: self.fwmark,
        }
    }
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.id().fmt(f)
    }
}

/// A runtime change, in ipvsadm's terms (`-A -E -D -a -e -d`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum Change {
    /// `-A`: a new virtual service (no reals yet).
    AddService {
        service: ServiceRef,
        /// IPVS's name; default wlc (ipvsadm's and keepalived's default).
        scheduler: Option<String>,
        /// keepalived's `lb_kind`: DR (ipvsadm's default), NAT, TUN.
        forward: Option<String>,
        /// `persistence_timeout` in seconds.
        persistent: Option<u32>,
    },
    /// `-E`: change a service's scheduler or persistence.
    EditService {
        service: ServiceRef,
        scheduler: Option<String>,
        /// Some(0) turns persistence off.
        persistent: Option<u32>,
    },
    /// `-D`.
    RemoveService { service: ServiceRef },
    /// `-a`: a new real (weight 1 unless given, as ipvsadm).
    AddReal {
        service: ServiceRef,
        real: SocketAddr,
        weight: Option<u32>,
        /// ipvsadm's per-real method; it must be the service's (`lb_kind`).
        forward: Option<String>,
    },
    /// `-e`: change a real's weight.
    EditReal {
        service: ServiceRef,
        real: SocketAddr,
        weight: u32,
    },
    /// `-d`.
    RemoveReal {
        service: ServiceRef,
        real: SocketAddr,
    },
}

/// What lbctl asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// VRRP instances, checkers, unsaved changes.
    Status,
    Change {
        change: Change,
    },
    /// `-Z`: zero the counters of one service, or all.
    Zero {
        service: Option<ServiceRef>,
    },
}

/// lbd's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "kebab-case")]
pub enum Response {
    /// Done; what was done, in words.
    Done {
        message: String,
    },
    Status {
        status: Box<Status>,
    },
    /// Refused; nothing changed.
    Refused {
        error: String,
    },
}

/// The control socket of an instance's run directory.
pub fn socket_path(run_dir: &std::path::Path) -> std::path::PathBuf {
    run_dir.join("control.sock")
}

/// Longest request line lbd reads.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip_through_json() {
        let service = ServiceRef::address(ServiceProtocol::Tcp, "10.0.0.100:80".parse().unwrap());
        for request in [
            Request::Status,
            Request::Zero { service: None },
            Request::Zero {
                service: Some(ServiceRef::fwmark(7, true)),
            },
            Request::Change {
                change: Change::EditReal {
                    service,
                    real: "10.0.1.2:80".parse().unwrap(),
                    weight: 0,
                },
            },
        ] {
            let line = serde_json::to_string(&request).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), request);
        }
        let line = r#"{"request":"change","change":{"change":"remove-service","service":{"protocol":"UDP","addr":"::1","port":53}}}"#;
        let parsed: Request = serde_json::from_str(line).unwrap();
        assert!(matches!(
            parsed,
            Request::Change {
                change: Change::RemoveService { .. }
            }
        ));
        assert_eq!(service.to_string(), "TCP 10.0.0.100:80");
        assert_eq!(ServiceRef::fwmark(7, false).to_string(), "FWM 7");
        assert_eq!(ServiceRef::fwmark(7, true).to_string(), "FWM 7 IPv6");
        // Address services are sent as before, without a fwmark.
        assert!(!serde_json::to_string(&service).unwrap().contains("fwmark"));
    }
}
