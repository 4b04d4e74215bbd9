//! Every map of the balancer. All are pinned by name under the directory userspace gives
//! (`/sys/fs/bpf/<instance>/`), so `lbd` can restart without losing flows and `lbctl` can
//! read them while `lbd` is down. Layouts are in `lb_common`.

use crate::local_end::FnatScratch;
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use lb_common::{
    BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BenchFrame, ConnCounts, DEFAULT_FLOW_TABLE_SIZE,
    DEFAULT_SCHED_TABLE_ENTRIES, DecapSource, FlowKey, FlowState, LocalAddr, MAX_DECAP_SOURCES,
    MAX_LAYOUT_STAMPS, MAX_LOCAL_ADDRS, MAX_REALS, MAX_SERVICES, NatOrigin, Outcome,
    PERSIST_TABLE_SIZE, PersistKey, PersistState, RealInfo, SYNC_EVENTS_BYTES, ServiceInfo,
    ServiceKey, Settings, TrafficStats, VipKey,
    conn::Timeouts,
    decap_stats,
    sched::{LOCALITY_TABLE_SIZE, LocalityEntry, LocalityKey},
};

/// Virtual services: (VIP, port, protocol) → id, scheduler and table. Not
/// preallocated, so that an update never rewrites an element a packet is reading.
#[map(name = "LB_SERVICES")]
pub static SERVICES: HashMap<ServiceKey, ServiceInfo> =
    HashMap::pinned(MAX_SERVICES, BPF_F_NO_PREALLOC);

/// Real servers by id: where and how to send.
#[map(name = "LB_REALS")]
pub static REALS: Array<RealInfo> = Array::pinned(MAX_REALS, 0);

/// The arena of scheduling tables: each service's table is a range of real ids here
/// (`ServiceInfo::table_offset`, `table_len`). Size is set by userspace at load time.
#[map(name = "LB_TABLES")]
pub static TABLES: Array<u32> = Array::pinned(DEFAULT_SCHED_TABLE_ENTRIES, 0);

/// Per-CPU position in each rr/wrr service's sequence.
#[map(name = "LB_RR_CURSORS")]
pub static RR_CURSORS: PerCpuArray<u32> = PerCpuArray::pinned(MAX_SERVICES, 0);

/// Established flows → their real. Size is set by userspace at load time.
#[map(name = "LB_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, 0);

/// NAT and FullNAT: a reply's 5-tuple as it leaves the real → the VIP and port (and for
/// FullNAT the client) to put back. For FullNAT an entry is also the reservation of its
/// local address and port. Size is set by userspace at load time (the flow table's).
#[map(name = "LB_NAT_REVERSE")]
pub static NAT_REVERSE: LruHashMap<FlowKey, NatOrigin> =
    LruHashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, 0);

/// What the configuration uses (`FEATURE_*` bits) and the FullNAT port range (one entry).
#[map(name = "LB_SETTINGS")]
pub static SETTINGS: Array<Settings> = Array::pinned(1, 0);

/// Every VIP address (of any service): whose echo requests `echo` answers.
#[map(name = "LB_VIPS")]
pub static VIPS: HashMap<VipKey, u8> = HashMap::pinned(MAX_SERVICES, 0);

/// Per-CPU: the flow a new flow overwrites, between scheduling and recording it
/// (`conntrack::set_replaced`; not pinned).
#[map(name = "LB_REPLACED")]
pub static REPLACED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// FullNAT: per-CPU room for the reservation being drawn (not pinned).
#[map(name = "LB_FNAT_SCRATCH")]
pub static FNAT_SCRATCH: PerCpuArray<FnatScratch> = PerCpuArray::with_max_entries(1, 0);

/// FullNAT local addresses by id; a service's
/// pool is a list of these ids in `LB_TABLES` (`ServiceInfo::laddr_len`).
#[map(name = "LB_LOCAL_ADDRS")]
pub static LOCAL_ADDRS: Array<LocalAddr> = Array::pinned(MAX_LOCAL_ADDRS, 0);

/// Connection timeouts per state (one entry; IPVS's defaults until userspace writes it).
#[map(name = "LB_TIMEOUTS")]
pub static TIMEOUTS: Array<Timeouts> = Array::pinned(1, 0);

/// Persistence pins: (service, masked client address) → real.
#[map(name = "LB_PERSIST")]
pub static PERSIST: LruHashMap<PersistKey, PersistState> =
    LruHashMap::pinned(PERSIST_TABLE_SIZE, 0);

/// lblc/lblcr: (service, destination address) → its real or set of reals. An LRU map,
/// as IPVS collects the least recently used entries when its table is full.
#[map(name = "LB_LOCALITY")]
pub static LOCALITY: LruHashMap<LocalityKey, LocalityEntry> =
    LruHashMap::pinned(LOCALITY_TABLE_SIZE, 0);

/// Active and inactive connections per real id, shared by all CPUs (atomic updates);
/// userspace maps it into its memory (`BPF_F_MMAPABLE`) to update it atomically too.
#[map(name = "LB_REAL_CONNS")]
pub static REAL_CONNS: Array<ConnCounts> = Array::pinned(MAX_REALS, BPF_F_MMAPABLE);

/// Per-CPU counters per service id.
#[map(name = "LB_SERVICE_STATS")]
pub static SERVICE_STATS: PerCpuArray<TrafficStats> = PerCpuArray::pinned(MAX_SERVICES, 0);

/// Per-CPU counters per real id.
#[map(name = "LB_REAL_STATS")]
pub static REAL_STATS: PerCpuArray<TrafficStats> = PerCpuArray::pinned(MAX_REALS, 0);

/// Per-CPU packet counters per `Outcome`.
#[map(name = "LB_OUTCOMES")]
pub static OUTCOMES: PerCpuArray<u64> = PerCpuArray::pinned(Outcome::COUNT, 0);

/// `lb_decap` (on a real server): the VIPs whose tunnelled packets it strips.
#[map(name = "LB_DECAP_VIPS")]
pub static DECAP_VIPS: HashMap<VipKey, u8> = HashMap::pinned(MAX_SERVICES, 0);

/// The layout version of each pinned map (map name, NUL-padded → version), stamped by
/// userspace; the programs never read it.
#[map(name = "LB_LAYOUT")]
pub static LAYOUT: HashMap<[u8; 16], u32> = HashMap::pinned(MAX_LAYOUT_STAMPS, 0);

/// `lb_decap`: the directors' tunnel source prefixes (`lb_common::DecapSource`); a
/// tunnelled packet from any other source is not stripped.
#[map(name = "LB_DECAP_SOURCES")]
pub static DECAP_SOURCES: LpmTrie<DecapSource, u8> = LpmTrie::pinned(MAX_DECAP_SOURCES, 0);

/// `lb_decap`: per-CPU counters (`lb_common::decap_stats`).
#[map(name = "LB_DECAP_STATS")]
pub static DECAP_STATS: PerCpuArray<u64> = PerCpuArray::pinned(decap_stats::COUNT, 0);

/// The frame the bench programs put back (benchmarks only; not pinned).
#[map(name = "LB_BENCH_FRAME")]
pub static BENCH_FRAME: Array<BenchFrame> = Array::with_max_entries(1, 0);

/// The bench programs' client counter (benchmarks only; not pinned).
#[map(name = "LB_BENCH_COUNTER")]
pub static BENCH_COUNTER: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The entry of real `id`, if it is in use.
#[inline(always)]
pub fn real(id: u32) -> Option<&'static RealInfo> {
    REALS.get(id).filter(|real| real.family != 0)
}

/// Connection sync: flows recorded and state changes, for userspace's sync daemon
/// (`sync`), written only while it runs (`FEATURE_SYNC_EVENTS`).
#[map(name = "LB_SYNC_EVENTS")]
pub static SYNC_EVENTS: RingBuf = RingBuf::pinned(SYNC_EVENTS_BYTES, 0);
