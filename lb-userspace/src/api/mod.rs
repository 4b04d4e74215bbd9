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

use crate::status::Status;

/// A virtual service as ipvsadm names one: `-t` / `-u` and `VIP:port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRef {
    /// `TCP` or `UDP`.
    pub protocol: ServiceProtocol,
    pub addr: IpAddr,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceProtocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl ServiceRef {
    pub fn protocol(&self) -> crate::model::Protocol {
        match self.protocol {
            ServiceProtocol::Tcp => crate::model::Protocol::Tcp,
            ServiceProtocol::Udp => crate::model::Protocol::Udp,
        }
    }
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = self.protocol().name();
        write!(f, "{proto} {}", SocketAddr::new(self.addr, self.port))
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
        let service = ServiceRef {
            protocol: ServiceProtocol::Tcp,
            addr: "10.0.0.100".parse().unwrap(),
            port: 80,
        };
        for request in [
            Request::Status,
            Request::Zero { service: None },
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
    }
}
