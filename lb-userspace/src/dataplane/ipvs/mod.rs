//! The IPVS backend: the kernel's IP Virtual Server driven over generic netlink (family
//! `IPVS`, as ipvsadm and keepalived drive it), for hosts where XDP cannot run.
//!
//! - `apply` reconciles the kernel's table with the desired state (`reconcile`): it adds,
//!   edits and removes services and their destinations and sets the three timeouts
//!   `ipvsadm --set` has. It never flushes. Services it did not add and that the
//!   configuration does not declare are left alone, as keepalived leaves them; a declared
//!   service that already exists (from an earlier run, say) is adopted. FullNAT is refused
//!   before anything changes. TUN's outer source addresses (`tun_sources`) are not used:
//!   IPVS routes the tunnel itself. Next hops are the kernel's business too, so nothing
//!   is ever unresolved.
//! - `upkeep` has nothing to do: IPVS expires its connections and keeps their counts.
//! - `counters` lists every TCP and UDP service of the kernel, as `ipvsadm -Ln` does,
//!   whoever made it; IPVS has no outcome counters.
//! - `remove_owned` deletes the services this backend added or adopted: for a graceful
//!   stop (keepalived removes its services on exit). Dropping the backend removes
//!   nothing, so a crash or restart keeps traffic flowing.
//! - `connections` reads `/proc/net/ip_vs_conn` (`ipvsadm -Lnc`).
//! - `start_daemon`, `stop_daemon` and `daemons` drive the kernel's own sync daemon
//!   (`daemon`), for `lvs_sync_daemon` (`sync::kernel`); `flush` is `ipvsadm -C`
//!   (`lvs_flush`).
//!
//! Every IPVS command but nlctrl's family lookup needs CAP_NET_ADMIN.

pub mod conn_table;
pub mod counters;
pub mod daemon;
pub mod error;
pub mod genl;
pub mod messages;
pub mod reconcile;
pub mod replies;
pub mod socket;

#[cfg(all(test, target_endian = "little"))]
mod fixtures;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use daemon::{DaemonConfig, DaemonState, KernelDaemon};
pub use error::{DecodeError, IpvsError};
use messages::{
    IPVS_GENL_NAME, Info, KernelDest, KernelService, KernelTimeouts, Request, ServiceKey,
};
use reconcile::{KernelEntry, KernelTable, Operation, WantedService};
use socket::GenlSocket;

use super::{
    ApplyReport, Counters, Dataplane, DataplaneError, DesiredState, diff::ServiceId,
    xdp::flows::Connection,
};

pub struct IpvsDataplane {
    socket: GenlSocket,
    /// The id nlctrl gave the `IPVS` family.
    family: u16,
    info: Info,
    /// The services this backend added or adopted.
    owned: BTreeSet<ServiceKey>,
}

impl IpvsDataplane {
    /// Find the kernel's IPVS and check that we may use it. Fails with
    /// `IpvsError::NotRegistered` where the kernel has no IPVS.
    pub fn open() -> Result<Self, DataplaneError> {
        Ok(Self::open_ipvs()?)
    }

    fn open_ipvs() -> Result<Self, IpvsError> {
        let socket = GenlSocket::open()?;
        let family = socket
            .resolve_family(IPVS_GENL_NAME)?
            .ok_or(IpvsError::NotRegistered)?;
        let mut dataplane = Self {
            socket,
            family,
            info: Info {
                version: 0,
                conn_table_size: 0,
            },
            owned: BTreeSet::new(),
        };
        dataplane.info = dataplane.get_info()?;
        Ok(dataplane)
    }

    /// IPVS's version and connection table size.
    pub fn info(&self) -> Info {
        self.info
    }

    /// ipvsadm's header: `IP Virtual Server version 1.2.1 (size=4096)`.
    pub fn describe(&self) -> String {
        self.info.banner()
    }

    /// The services this backend added or adopted.
    pub fn owned(&self) -> &BTreeSet<ServiceKey> {
        &self.owned
    }

    fn request(
        &self,
        operation: &str,
        request: &Request,
        on_data: impl FnMut(u8, &[u8]) -> Result<(), DecodeError>,
    ) -> Result<(), IpvsError> {
        self.socket.exchange(
            operation,
            request.is_dump(),
            |sequence| request.encode(self.family, sequence),
            on_data,
        )
    }

    /// The one answer of a GET that is not a dump.
    fn get_one<T>(
        &self,
        operation: &'static str,
        request: Request,
        decode: impl Fn(u8, &[u8]) -> Result<T, DecodeError>,
    ) -> Result<T, IpvsError> {
        let mut answer = None;
        self.request(operation, &request, |command, attrs| {
            answer = Some(decode(command, attrs)?);
            Ok(())
        })?;
        answer.ok_or(IpvsError::Decode {
            operation: operation.to_owned(),
            source: DecodeError::Missing {
                attribute: "the answer",
                within: "the kernel's reply",
            },
        })
    }

    fn get_info(&self) -> Result<Info, IpvsError> {
        self.get_one(
            "reading IPVS's version",
            Request::GetInfo,
            replies::decode_info,
        )
    }

    fn kernel_timeouts(&self) -> Result<KernelTimeouts, IpvsError> {
        self.get_one(
            "reading IPVS's timeouts",
            Request::GetConfig,
            replies::decode_config,
        )
    }

    /// Every service of the kernel.
    pub fn services(&self) -> Result<Vec<KernelService>, IpvsError> {
        let mut services = Vec::new();
        self.request(
            "listing services",
            &Request::GetServices,
            |command, attrs| {
                services.push(replies::decode_service(command, attrs)?);
                Ok(())
            },
        )?;
        Ok(services)
    }

    /// The destinations of a service (none if it does not exist).
    pub fn dests(&self, service: &ServiceKey) -> Result<Vec<KernelDest>, IpvsError> {
        let mut dests = Vec::new();
        let operation = format!("listing the reals of service {service}");
        self.request(
            &operation,
            &Request::GetDests(*service),
            |command, attrs| {
                dests.push(replies::decode_dest(command, attrs, service.addr)?);
                Ok(())
            },
        )?;
        Ok(dests)
    }

    /// Every service with its destinations.
    fn services_with_dests(&self) -> Result<Vec<(KernelService, Vec<KernelDest>)>, IpvsError> {
        let mut all = Vec::new();
        for service in self.services()? {
            let dests = self.dests(&service.key)?;
            all.push((service, dests));
        }
        Ok(all)
    }

    /// The kernel's table: every service, the destinations of the wanted ones.
    fn kernel_table(
        &self,
        wanted: &BTreeMap<ServiceKey, WantedService>,
    ) -> Result<KernelTable, IpvsError> {
        let mut table = KernelTable {
            services: BTreeMap::new(),
            timeouts: self.kernel_timeouts()?,
        };
        for service in self.services()? {
            let key = service.key;
            let dests = if wanted.contains_key(&key) {
                self.dests(&key)?
                    .into_iter()
                    .map(|dest| (dest.key, dest.settings))
                    .collect()
            } else {
                BTreeMap::new()
            };
            table.services.insert(
                key,
                KernelEntry {
                    settings: service.settings,
                    dests,
                },
            );
        }
        Ok(table)
    }

    /// Carry out one operation, keeping `owned` up to date.
    fn execute(&mut self, operation: &Operation) -> Result<(), IpvsError> {
        let description = operation.describe();
        tracing::debug!(operation = %description, "IPVS");
        let result = self.request(&description, &operation.request(), |_, _| Ok(()));
        match (result, operation) {
            (Ok(()), Operation::AddService(key, _)) => {
                self.owned.insert(*key);
                Ok(())
            }
            (Ok(()), Operation::RemoveService(key)) => {
                self.owned.remove(key);
                Ok(())
            }
            (Ok(()), _) => Ok(()),
            // IPVS loads `ip_vs_NAME` itself; ENOENT means there is no such module.
            (
                Err(IpvsError::Kernel { errno, .. }),
                Operation::AddService(_, settings) | Operation::EditService(_, settings),
            ) if errno == libc::ENOENT => Err(IpvsError::MissingScheduler {
                operation: description,
                scheduler: settings.scheduler.clone(),
            }),
            (Err(error), _) => Err(error),
        }
    }

    /// Start the kernel's sync daemon in `state` (an error if it runs already).
    pub fn start_daemon(&self, state: DaemonState, config: &DaemonConfig) -> Result<(), IpvsError> {
        let request = Request::NewDaemon(state, config.clone());
        self.request(
            &format!("start the {} sync daemon", state.name()),
            &request,
            |_, _| Ok(()),
        )
    }

    /// Stop the kernel's sync daemon in `state`; `false` if none ran.
    pub fn stop_daemon(&self, state: DaemonState) -> Result<bool, IpvsError> {
        let request = Request::DelDaemon(state);
        match self.request(
            &format!("stop the {} sync daemon", state.name()),
            &request,
            |_, _| Ok(()),
        ) {
            Ok(()) => Ok(true),
            Err(IpvsError::Kernel { errno, .. }) if errno == libc::ESRCH => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The sync daemons the kernel runs (`ipvsadm -L --daemon`).
    pub fn daemons(&self) -> Result<Vec<KernelDaemon>, IpvsError> {
        let mut daemons = Vec::new();
        self.request(
            "list the sync daemons",
            &Request::GetDaemons,
            |command, attrs| {
                daemons.push(daemon::decode_daemon(command, attrs)?);
                Ok(())
            },
        )?;
        Ok(daemons)
    }

    /// Remove every service of the kernel's IPVS, whoever made it (`ipvsadm -C`).
    pub fn flush(&mut self) -> Result<(), IpvsError> {
        self.request("flush", &Request::Flush, |_, _| Ok(()))?;
        self.owned.clear();
        Ok(())
    }

    /// Delete the services this backend added or adopted (for a graceful stop). A
    /// service already gone is no error; the first failure is returned after trying all.
    pub fn remove_owned(&mut self) -> Result<(), DataplaneError> {
        let mut first_error = None;
        for key in std::mem::take(&mut self.owned) {
            match self.execute(&Operation::RemoveService(key)) {
                Ok(()) => {}
                Err(IpvsError::Kernel { errno, .. }) if errno == libc::ESRCH => {}
                Err(error) => {
                    self.owned.insert(key);
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// The kernel's connections (see `connections`), with each real's forwarding method
    /// filled in from the destinations.
    pub fn connections(&self) -> Result<Vec<Connection>, DataplaneError> {
        let mut connections = conn_table::read(usize::MAX)?;
        let mut forwards: BTreeMap<(u8, IpAddr, u16, IpAddr), &'static str> = BTreeMap::new();
        // The table does not say which connections came through a firewall-mark
        // service: those go by the real alone.
        let mut marked: BTreeMap<IpAddr, &'static str> = BTreeMap::new();
        for (service, dests) in self.services_with_dests()? {
            let key = service.key;
            let Ok(protocol) = u8::try_from(key.protocol) else {
                continue;
            };
            for dest in dests {
                let forward = counters::forward_name(dest.settings.forward);
                match key.fwmark {
                    Some(_) => marked.insert(dest.key.addr, forward),
                    None => forwards.insert((protocol, key.addr, key.port, dest.key.addr), forward),
                };
            }
        }
        for connection in &mut connections {
            let protocol = connection.protocol.ip_proto();
            let (vip, real) = (connection.vip, connection.real.ip());
            // A port-0 service (all ports) carries connections of every port.
            connection.forward = forwards
                .get(&(protocol, vip.ip(), vip.port(), real))
                .or_else(|| forwards.get(&(protocol, vip.ip(), 0, real)))
                .or_else(|| marked.get(&real))
                .copied()
                .unwrap_or("?");
        }
        Ok(connections)
    }
}

/// Remove every service of the kernel's IPVS, whoever made it (keepalived's `lvs_flush`
/// and `lvs_flush_on_stop`): whether the kernel has IPVS (without it there is nothing to
/// remove).
pub fn flush_if_present() -> Result<bool, DataplaneError> {
    match IpvsDataplane::open_ipvs() {
        Ok(mut ipvs) => {
            ipvs.flush()?;
            Ok(true)
        }
        Err(IpvsError::NotRegistered) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// The kernel's connections from `/proc/net/ip_vs_conn`, without the forwarding method
/// (`?`; `IpvsDataplane::connections` fills it in). Needs no privilege and no netlink;
/// `conn_table::read` takes a limit for tables of millions.
pub fn connections() -> Result<Vec<Connection>, DataplaneError> {
    Ok(conn_table::read(usize::MAX)?)
}

impl Dataplane for IpvsDataplane {
    fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        let wanted = reconcile::wanted(desired)?;
        let kernel = self.kernel_table(&wanted)?;
        for operation in reconcile::plan(&wanted, &desired.timeouts, &kernel, &self.owned) {
            self.execute(&operation)?;
        }
        // Every wanted service now exists and is ours; the others we owned are gone.
        self.owned = wanted.into_keys().collect();
        Ok(ApplyReport::default())
    }

    fn upkeep(
        &mut self,
        _now: std::time::Instant,
    ) -> Result<Option<std::time::Instant>, DataplaneError> {
        Ok(None)
    }

    fn stop(&mut self) -> Result<(), DataplaneError> {
        self.remove_owned()
    }

    fn counters(&self) -> Result<Counters, DataplaneError> {
        let mut services: Vec<_> = self
            .services_with_dests()?
            .iter()
            .filter_map(|(service, dests)| counters::service_counters(service, dests))
            .collect();
        counters::sort_services(&mut services);
        Ok(Counters {
            outcomes: Vec::new(),
            services,
        })
    }

    fn zero_counters(&mut self, service: Option<ServiceId>) -> Result<(), DataplaneError> {
        let key = service.map(ServiceKey::from);
        let operation = match key {
            Some(key) => format!("zeroing the counters of service {key}"),
            None => "zeroing all counters".to_owned(),
        };
        self.request(&operation, &Request::Zero(key), |_, _| Ok(()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_says_clearly_when_the_kernel_has_no_ipvs() {
        match IpvsDataplane::open() {
            // This host's kernel has no IPVS (nlctrl needs no privilege to say so).
            Err(DataplaneError::Ipvs {
                source: IpvsError::NotRegistered,
            }) => {
                let message = IpvsError::NotRegistered.to_string();
                assert!(message.contains("generic netlink family \"IPVS\" not found"));
                assert!(message.contains("ip_vs module"));
            }
            // A kernel with IPVS: opening works as root and is refused without
            // CAP_NET_ADMIN.
            Ok(dataplane) => assert!(dataplane.info().version > 0),
            Err(DataplaneError::Ipvs {
                source: IpvsError::Kernel { errno, .. },
            }) if errno == libc::EPERM => {}
            Err(other) => panic!("unexpected: {other}"),
        }
    }
}
