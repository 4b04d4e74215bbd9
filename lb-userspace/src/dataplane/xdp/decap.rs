//! `lb_decap` on a real server in TUN mode (`lbd --decap IFACE`): the program strips the
//! IPIP/ip6ip6 header of packets for the VIPs it is given, sent from the directors' tunnel
//! sources it is given (`director_sources`), so the real needs no ipip or ip6_tunnel
//! device. Its maps are private to the process (the program keeps them while it
//! runs); the balancer's maps in the same object are created at their smallest. Like the
//! balancer, it is attached through pinned links (`links`): it goes on stripping tunnels
//! if lbd crashes, and a new lbd swaps its own program in.

use std::{
    collections::BTreeSet,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use crate::model::{Config, ForwardMethod};
use aya::{
    Ebpf,
    maps::{
        MapData, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
};
use lb_common::{
    DecapSource, MAX_DECAP_SOURCES, decap_source, decap_stats, map_names as names, program_names,
};

use super::{
    AttachMode, XdpOptions, counters, links, load_object, map_error, object::load_program,
};
use crate::dataplane::DataplaneError;

pub struct Decap {
    ebpf: Ebpf,
    attachments: Vec<links::Attachment>,
    /// Where the links are pinned (`None`: they go with the process).
    links_dir: Option<PathBuf>,
    vips: BTreeSet<IpAddr>,
    sources: BTreeSet<Prefix>,
}

impl Decap {
    /// Load the decap program (not attached yet); its links are pinned under pin
    /// directory `pins` when given.
    pub fn load(pins: Option<&Path>) -> Result<Self, DataplaneError> {
        let (mut ebpf, _) = load_object(&XdpOptions::minimal())?;
        load_program(&mut ebpf, program_names::DECAP)?;
        Ok(Self {
            ebpf,
            attachments: Vec::new(),
            links_dir: pins.map(|pins| links::links_dir(pins).join("decap")),
            vips: BTreeSet::new(),
            sources: BTreeSet::new(),
        })
    }

    /// Attach to `interface` (see `XdpDataplane::attach`).
    pub fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<links::Attached, DataplaneError> {
        links::attach_kept(
            &mut self.ebpf,
            program_names::DECAP,
            interface,
            mode,
            self.links_dir.as_deref(),
            &mut self.attachments,
        )
    }

    /// Strip tunnels for exactly these VIPs.
    pub fn set_vips(&mut self, vips: &[IpAddr]) -> Result<(), DataplaneError> {
        let wanted: BTreeSet<IpAddr> = vips.iter().copied().collect();
        super::sync_vip_set(&mut self.ebpf, names::DECAP_VIPS, &mut self.vips, wanted)
    }

    /// Strip tunnels sent from exactly these sources (the directors').
    pub fn set_sources(&mut self, sources: &[Prefix]) -> Result<(), DataplaneError> {
        let wanted: BTreeSet<Prefix> = sources.iter().copied().collect();
        if wanted.len() > MAX_DECAP_SOURCES as usize {
            return Err(DataplaneError::Capacity {
                what: "decap tunnel sources",
                max: MAX_DECAP_SOURCES,
            });
        }
        let name = names::DECAP_SOURCES;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| counters::missing(name))?;
        let mut trie: LpmTrie<&mut MapData, DecapSource, u8> =
            LpmTrie::try_from(map).map_err(map_error(name))?;
        // Removals first (room for the additions), each entry recorded as it is done, so
        // that a failure halfway leaves `sources` true to the map for the next try.
        let gone: Vec<Prefix> = self.sources.difference(&wanted).copied().collect();
        for prefix in gone {
            super::removed(trie.remove(&prefix.key()))
                .map_err(map_error("removing a tunnel source"))?;
            self.sources.remove(&prefix);
        }
        let new: Vec<Prefix> = wanted.difference(&self.sources).copied().collect();
        for prefix in new {
            trie.insert(&prefix.key(), 1, 0)
                .map_err(map_error("adding a tunnel source"))?;
            self.sources.insert(prefix);
        }
        Ok(())
    }

    /// The loaded program (for BPF_PROG_TEST_RUN).
    pub fn program(&self) -> Result<&aya::programs::Xdp, DataplaneError> {
        super::program(&self.ebpf, program_names::DECAP)
    }

    /// Packets decapsulated so far, summed over CPUs.
    pub fn decapsulated(&self) -> Result<u64, DataplaneError> {
        self.count(decap_stats::DECAPSULATED)
    }

    /// Tunnelled packets for a VIP from a source that is not a director's, passed
    /// untouched so far, summed over CPUs.
    pub fn from_unknown_sources(&self) -> Result<u64, DataplaneError> {
        self.count(decap_stats::UNKNOWN_SOURCE)
    }

    /// Counter `stat` (`decap_stats`), summed over CPUs.
    fn count(&self, stat: u32) -> Result<u64, DataplaneError> {
        let map = self
            .ebpf
            .map(names::DECAP_STATS)
            .ok_or_else(|| counters::missing(names::DECAP_STATS))?;
        let stats: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(map_error(names::DECAP_STATS))?;
        let values = stats.get(&stat, 0).map_err(map_error(names::DECAP_STATS))?;
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

/// An address prefix: `ADDR` (every bit) or `ADDR/LEN`, IPv4 or IPv6 (`--decap-source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// With the bits past `len` cleared.
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// The prefix of `addr` alone.
    pub fn host(addr: IpAddr) -> Prefix {
        Prefix {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// Its key in `LB_DECAP_SOURCES`.
    fn key(&self) -> Key<DecapSource> {
        let (addr, family) = super::addr_bytes(self.addr);
        Key::new(8 + u32::from(self.len), decap_source(family, &addr))
    }
}

/// Why `--decap-source` text is not a prefix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    #[error("`{text}` is not an IPv4 or IPv6 address")]
    Address { text: String },
    #[error("`{text}`: a prefix length is 0..=32 for IPv4 and 0..=128 for IPv6")]
    Length { text: String },
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| PrefixError::Address {
            text: text.to_owned(),
        })?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => bits,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|len| *len <= bits)
                .ok_or_else(|| PrefixError::Length {
                    text: text.to_owned(),
                })?,
        };
        let addr = match addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::from((u32::from(v4) & mask).to_be_bytes())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::from((u128::from(v6) & mask).to_be_bytes())
            }
        };
        Ok(Prefix { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The directors' tunnel sources that `config` names: the outer sources of its TUN
/// services (`tun_source`, global_defs `lvs_tun_source`), and the directors' own addresses
/// of its VRRP instances (`unicast_src_ip`, `unicast_peer`); then `extra`
/// (`--decap-source`). Sorted, without duplicates.
pub fn director_sources(config: &Config, extra: &[Prefix]) -> Vec<Prefix> {
    let tun = config
        .virtual_servers
        .iter()
        .filter(|vs| vs.forwards_by(ForwardMethod::Tun))
        .flat_map(|vs| &vs.tun_sources)
        .chain(&config.tun_sources);
    let vrrp = config
        .vrrp_instances
        .iter()
        .flat_map(|instance| instance.unicast_src_ip.iter().chain(&instance.unicast_peer));
    let mut sources: Vec<Prefix> = tun
        .chain(vrrp)
        .map(|addr| Prefix::host(*addr))
        .chain(extra.iter().copied())
        .collect();
    sources.sort();
    sources.dedup();
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_read_as_addresses_with_a_length() {
        let parse = |text: &str| text.parse::<Prefix>();
        assert_eq!(parse("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(parse("10.1.2.3/16").unwrap().to_string(), "10.1.0.0/16");
        assert_eq!(
            parse("2001:db8::1/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert!(matches!(
            parse("10.0.0.1/33"),
            Err(PrefixError::Length { .. })
        ));
        assert!(matches!(parse("eth0"), Err(PrefixError::Address { .. })));
    }

    #[test]
    fn director_sources_come_from_tun_services_and_vrrp_peers() {
        let text = "
global_defs {
    lvs_tun_source 192.0.2.250
}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    unicast_src_ip 10.0.0.2
    unicast_peer {
        10.0.0.3
    }
    virtual_ipaddress {
        192.0.2.80
    }
}
virtual_server 192.0.2.80 80 {
    lb_kind TUN
    protocol TCP
    tun_source 10.0.0.9
    real_server 10.0.0.11 80 {}
}
";
        let loaded = lb_config::parse(text, Path::new("k.conf")).expect("valid");
        let extra = ["10.9.0.0/24".parse().unwrap()];
        let sources: Vec<String> = director_sources(&loaded.config, &extra)
            .iter()
            .map(Prefix::to_string)
            .collect();
        assert_eq!(
            sources,
            [
                "10.0.0.2/32",
                "10.0.0.3/32",
                "10.0.0.9/32",
                "10.9.0.0/24",
                "192.0.2.250/32"
            ]
        );
    }
}
