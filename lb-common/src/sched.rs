//! How the data plane schedules a new flow, per service (`ServiceInfo::sched`), and the
//! table sizes userspace builds for it. Userspace computes every table; the data plane only
//! reads them (see `lb-ebpf/src/sched/` and `lb-userspace/src/sched/`).

/// rr and wrr: the table is one cycle of real ids in order; a per-CPU cursor walks it.
pub const KIND_SEQUENCE: u8 = 0;
/// sh: `SH_TABLE_SIZE` buckets of real ids, indexed by the hash of the source address
/// (and port with `FLAG_HASH_PORT`).
pub const KIND_SOURCE_HASH: u8 = 1;
/// dh: the same buckets, indexed by the hash of the destination address.
pub const KIND_DEST_HASH: u8 = 2;
/// mh: a Maglev lookup table of `MAGLEV_TABLE_SIZE` real ids, indexed by the hash of the
/// source address (and port with `FLAG_HASH_PORT`).
pub const KIND_MAGLEV: u8 = 3;
/// lc, wlc, sed, nq, ovf: the table lists the service's reals (at most
/// `LEAST_CONN_MAX_REALS`); the data plane picks by `LB_REAL_CONNS` and weights.
pub const KIND_LC: u8 = 4;
pub const KIND_WLC: u8 = 5;
pub const KIND_SED: u8 = 6;
pub const KIND_NQ: u8 = 7;
pub const KIND_OVF: u8 = 8;
/// twos: the table is a weighted multiset of the reals (each in proportion to its weight,
/// wrr's cycle); two random entries, of which the one with fewer connections per weight.
pub const KIND_TWOS: u8 = 9;
/// lblc, lblcr: the table lists the service's reals as for lc; `LB_LOCALITY` remembers
/// the real (lblc) or set of reals (lblcr) of each destination address.
pub const KIND_LBLC: u8 = 10;
pub const KIND_LBLCR: u8 = 11;

/// Scheduler names, as `ServiceInfo::scheduler` indexes them (IPVS's names).
pub const NAMES: [&str; 14] = [
    "rr", "wrr", "lc", "wlc", "sh", "dh", "sed", "nq", "mh", "fo", "ovf", "twos", "lblc", "lblcr",
];

/// `sh-fallback` / `mh-fallback` (IPVS `IP_VS_SVC_F_SCHED1`): when the hashed real cannot
/// take the flow, probe on to the next one that can.
pub const FLAG_FALLBACK: u8 = 1;
/// `sh-port` / `mh-port` (IPVS `IP_VS_SVC_F_SCHED2`): hash the source port too.
pub const FLAG_HASH_PORT: u8 = 2;

/// Buckets of an sh/dh table (IPVS `IP_VS_SH_TAB_SIZE` with the default 8 bits).
pub const SH_TABLE_SIZE: u32 = 256;
/// Entries of a Maglev table: a prime, as Maglev needs.
pub const MAGLEV_TABLE_SIZE: u32 = 65537;
/// Reals a least-connection scheduler compares (a bounded loop in the data plane).
pub const LEAST_CONN_MAX_REALS: u32 = 256;
/// Probes of a fallback before giving up (every bucket of an sh table).
pub const FALLBACK_PROBES: u32 = 256;
/// Longest rr/wrr cycle; longer wrr cycles are scaled down.
pub const MAX_SEQUENCE_LEN: u32 = 65536;

/// Entries of `LB_LOCALITY` (an LRU map): destination addresses lblc/lblcr remember, over
/// all services. IPVS starts collecting unused entries at 16,384 per service.
pub const LOCALITY_TABLE_SIZE: u32 = 1 << 16;
/// Reals an lblcr destination's set holds at most (IPVS's sets are unbounded, but a real
/// joins only when every member is overloaded, so they stay small).
pub const LOCALITY_SET_MAX: usize = 8;
/// IPVS's `lblc_expiration` and `lblcr_expiration` default (24 h): an entry unused that
/// long is forgotten, and an lblcr set unchanged that long loses its most loaded member.
pub const LOCALITY_EXPIRATION_NS: u64 = 24 * 3600 * 1_000_000_000;

/// Key of `LB_LOCALITY`: a service and the destination address of its packets.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct LocalityKey {
    pub service_id: u32,
    /// Network order, IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
}

/// Value of `LB_LOCALITY`: the real ids this destination goes to (lblc: one; lblcr: a
/// set of up to `LOCALITY_SET_MAX`).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct LocalityEntry {
    /// The first `len` are the set, in the order they joined.
    pub reals: [u32; LOCALITY_SET_MAX],
    pub len: u32,
    pub _pad: u32,
    /// `CLOCK_MONOTONIC` of the last new flow to this destination.
    pub last_use_ns: u64,
    /// `CLOCK_MONOTONIC` of the last change of the set.
    pub last_change_ns: u64,
}

/// Whether a scheduler of `kind` picks the same real for a packet whatever came before it
/// (sh, dh, mh: a hash of the packet's addresses). Only these schedule a TCP segment of no
/// known connection (not a SYN: begun on another director, or before this one lost the
/// flow), as IPVS does with `sloppy_tcp`: they send it where its connection is. Others
/// would pick a real at random for it, so the segment goes to the kernel unscheduled, as
/// IPVS without `sloppy_tcp` does.
#[inline(always)]
pub const fn schedules_mid_stream(kind: u8) -> bool {
    matches!(kind, KIND_SOURCE_HASH | KIND_DEST_HASH | KIND_MAGLEV)
}
