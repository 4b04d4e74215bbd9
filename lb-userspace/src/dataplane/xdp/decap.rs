//! `lb_decap` on a real server in TUN mode (`lbd --decap IFACE`): the program strips the
//! IPIP/ip6ip6 header of packets for the VIPs it is given, so the real needs no ipip or
//! ip6_tunnel device. Its maps are private to the process (the program keeps them while it
//! runs); the balancer's maps in the same object are created at their smallest. Like the
//! balancer, it is attached through pinned links (`links`): it goes on stripping tunnels
//! if lbd crashes, and a new lbd swaps its own program in.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use lb_common::{decap_stats, map_names as names, program_names};

use super::{AttachMode, XdpOptions, counters, links, load_object, map_error, program_mut};
use crate::dataplane::DataplaneError;

pub struct Decap {
    ebpf: Ebpf,
    attachments: Vec<links::Attachment>,
    /// Where the links are pinned (`None`: they go with the process).
    links_dir: Option<PathBuf>,
    vips: BTreeSet<IpAddr>,
}

impl Decap {
    /// Load the decap program (not attached yet); its links are pinned under pin
    /// directory `pins` when given.
    pub fn load(pins: Option<&Path>) -> Result<Self, DataplaneError> {
        let (mut ebpf, _) = load_object(&XdpOptions::minimal())?;
        program_mut(&mut ebpf, program_names::DECAP)?
            .load()
            .map_err(|source| DataplaneError::Program {
                program: program_names::DECAP,
                source,
            })?;
        Ok(Self {
            ebpf,
            attachments: Vec::new(),
            links_dir: pins.map(|pins| links::links_dir(pins).join("decap")),
            vips: BTreeSet::new(),
        })
    }

    /// Attach to `interface` (see `XdpDataplane::attach`).
    pub fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<links::Attached, DataplaneError> {
        let program = program_mut(&mut self.ebpf, program_names::DECAP)?;
        let attachment = links::attach(
            program,
            program_names::DECAP,
            interface,
            mode,
            self.links_dir.as_deref(),
        )?;
        let attached = attachment.attached.clone();
        self.attachments.push(attachment);
        Ok(attached)
    }

    /// Strip tunnels for exactly these VIPs.
    pub fn set_vips(&mut self, vips: &[IpAddr]) -> Result<(), DataplaneError> {
        let wanted: BTreeSet<IpAddr> = vips.iter().copied().collect();
        super::sync_vip_set(&mut self.ebpf, names::DECAP_VIPS, &mut self.vips, wanted)
    }

    /// The loaded program (for BPF_PROG_TEST_RUN).
    pub fn program(&self) -> Result<&aya::programs::Xdp, DataplaneError> {
        super::program(&self.ebpf, program_names::DECAP)
    }

    /// Packets decapsulated so far, summed over CPUs.
    pub fn decapsulated(&self) -> Result<u64, DataplaneError> {
        let map = self
            .ebpf
            .map(names::DECAP_STATS)
            .ok_or_else(|| counters::missing(names::DECAP_STATS))?;
        let stats: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(map_error(names::DECAP_STATS))?;
        let values = stats
            .get(&decap_stats::DECAPSULATED, 0)
            .map_err(map_error(names::DECAP_STATS))?;
        Ok(values.iter().sum())
    }

    /// Detach from every interface.
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        for attachment in self.attachments.drain(..) {
            attachment.detach()?;
        }
        Ok(())
    }

    /// Let go of every interface, leaving the program attached (pinned links).
    pub fn leave_all(&mut self) {
        for attachment in self.attachments.drain(..) {
            attachment.leave();
        }
    }
}
