//! Where lbctl's views read the services, counters and connections: the XDP data plane's
//! pinned maps, or the kernel's IPVS (as ipvsadm does). Both work while lbd is stopped.
//! Which one: `--dataplane`, else the one lbd's status file names, else XDP when its
//! maps are pinned, else IPVS.

use lb_userspace::{
    dataplane::{
        Counters, Dataplane,
        backend::{DataplaneKind, DataplaneStatus},
        ipvs::IpvsDataplane,
        xdp::{PinnedMaps, dump, flows, read_counters},
    },
    status,
};

use crate::{Args, Failure};

pub enum Source {
    Pinned(PinnedMaps),
    Ipvs(IpvsDataplane),
}

/// The backend lbd runs, as its status file says (none when it never ran).
fn recorded(args: &Args) -> Option<DataplaneStatus> {
    status::read_status(&status::status_file(&args.run_dir()))
        .ok()
        .and_then(|status| status.dataplane)
}

impl Source {
    pub fn open(args: &Args) -> Result<Self, Failure> {
        let kind = args
            .dataplane
            .or_else(|| recorded(args).map(|d| d.kind))
            .unwrap_or(if args.pin_dir().exists() {
                DataplaneKind::Xdp
            } else {
                DataplaneKind::Ipvs
            });
        match kind {
            DataplaneKind::Xdp => Ok(Source::Pinned(PinnedMaps::open(&args.pin_dir())?)),
            DataplaneKind::Ipvs => Ok(Source::Ipvs(IpvsDataplane::open()?)),
        }
    }

    /// The pinned maps (`map list`, `map dump`): only the XDP data plane has them.
    pub fn maps(args: &Args) -> Result<PinnedMaps, Failure> {
        match Source::open(args)? {
            Source::Pinned(maps) => Ok(maps),
            Source::Ipvs(_) => Err(Failure {
                message: "lbd runs on the kernel's IPVS, which has no BPF maps; use -L, --stats or -c (or --dataplane xdp for maps left pinned)".into(),
                code: 1,
            }),
        }
    }

    pub fn counters(&self) -> Result<Counters, Failure> {
        Ok(match self {
            Source::Pinned(maps) => read_counters(maps)?,
            Source::Ipvs(ipvs) => ipvs.counters()?,
        })
    }

    pub fn connections(&self, limit: usize) -> Result<Vec<flows::Connection>, Failure> {
        Ok(match self {
            Source::Pinned(maps) => flows::read(maps, flows::monotonic_now_ns(), limit)?,
            Source::Ipvs(ipvs) => {
                let mut all = ipvs.connections()?;
                all.truncate(limit);
                all
            }
        })
    }

    /// The first line of a full listing (ipvsadm prints its version and table size):
    /// which data plane, and why IPVS if XDP fell back.
    pub fn header(&self, args: &Args) -> String {
        match self {
            Source::Pinned(_) => {
                let size = dump::summary(&args.pin_dir(), lb_common::map_names::FLOWS)
                    .map_or(0, |m| m.max_entries);
                format!(
                    "lbd XDP Virtual Server, instance {} (flow table size={size})",
                    args.name
                )
            }
            Source::Ipvs(ipvs) => {
                let mut line = format!(
                    "lbd on the kernel's IPVS, instance {} ({})",
                    args.name,
                    ipvs.describe()
                );
                if let Some(reason) = recorded(args).and_then(|d| d.fallback_reason) {
                    line.push_str(&format!("; XDP fell back: {reason}"));
                }
                line
            }
        }
    }
}
