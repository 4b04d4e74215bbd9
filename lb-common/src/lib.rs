//! Map keys, map values and constants shared by the XDP programs (`lb-ebpf`) and userspace
//! (`lb-userspace`).
//!
//! Rules for every type here: `#[repr(C)]`, no implicit padding (explicit `_pad` fields that
//! are always zero), addresses and ports as network-order byte arrays, no enums or `Option`
//! in map values. The `user` feature implements `aya::Pod` for them.
#![no_std]

pub mod conn;
pub mod hash;
mod outcome;
pub mod sched;

pub use outcome::{Outcome, xdp_action};

/// Maximum number of virtual services (VIP, port, protocol).
pub const MAX_SERVICES: u32 = 512;
/// Maximum number of real servers over all services (one entry per service and real).
pub const MAX_REALS: u32 = 4096;
/// Maximum number of distinct FullNAT local addresses over all services.
pub const MAX_LOCAL_ADDRS: u32 = 1024;
/// Default number of entries of `LB_TABLES`, the arena that holds every service's
/// scheduling table (4 bytes each: 16 MiB, room for 60 Maglev tables).
pub const DEFAULT_SCHED_TABLE_ENTRIES: u32 = 1 << 22;
/// Default number of entries of the LRU flow table.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1 << 20;
/// Entries of the LRU persistence table (clients pinned by `persistence_timeout`).
pub const PERSIST_TABLE_SIZE: u32 = 1 << 18;

/// `BPF_F_NO_PREALLOC`: map flag of `LB_SERVICES`.
pub const BPF_F_NO_PREALLOC: u32 = 1;
/// `BPF_F_MMAPABLE`: map flag of `LB_REAL_CONNS`, which userspace maps into its memory to
/// update the counts atomically, as the data plane does.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// `family` value of an IPv4 address stored in a 16-byte array (first 4 bytes used).
pub const FAMILY_IPV4: u8 = 4;
/// `family` value of an IPv6 address.
pub const FAMILY_IPV6: u8 = 6;

/// IP protocol numbers used in keys.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Names of the maps in the eBPF object (and of their pins under `/sys/fs/bpf/<instance>/`).
pub mod map_names {
    pub const SERVICES: &str = "LB_SERVICES";
    pub const REALS: &str = "LB_REALS";
    pub const TABLES: &str = "LB_TABLES";
    pub const RR_CURSORS: &str = "LB_RR_CURSORS";
    pub const FLOWS: &str = "LB_FLOWS";
    pub const REAL_CONNS: &str = "LB_REAL_CONNS";
    pub const PERSIST: &str = "LB_PERSIST";
    /// lblc/lblcr: a destination address's real or set of reals.
    pub const LOCALITY: &str = "LB_LOCALITY";
    pub const TIMEOUTS: &str = "LB_TIMEOUTS";
    pub const DECAP_VIPS: &str = "LB_DECAP_VIPS";
    pub const DECAP_SOURCES: &str = "LB_DECAP_SOURCES";
    /// The layout versions of the pinned maps, stamped by the build that created them
    /// (userspace only; see `lb-userspace`'s `dataplane::xdp::layout`).
    pub const LAYOUT: &str = "LB_LAYOUT";
    pub const NAT_REVERSE: &str = "LB_NAT_REVERSE";
    pub const SETTINGS: &str = "LB_SETTINGS";
    pub const LOCAL_ADDRS: &str = "LB_LOCAL_ADDRS";
    pub const VIPS: &str = "LB_VIPS";
    /// Benchmarks only (not pinned): the frame the bench programs put back (`BenchFrame`).
    pub const BENCH_FRAME: &str = "LB_BENCH_FRAME";
    pub const DECAP_STATS: &str = "LB_DECAP_STATS";
    pub const SERVICE_STATS: &str = "LB_SERVICE_STATS";
    pub const REAL_STATS: &str = "LB_REAL_STATS";
    pub const OUTCOMES: &str = "LB_OUTCOMES";
    pub const SYNC_EVENTS: &str = "LB_SYNC_EVENTS";
    /// Per-CPU scratch of the balancer (not pinned): the flow a new flow overwrites, and
    /// FullNAT's reservation being drawn.
    pub const REPLACED: &str = "LB_REPLACED";
    pub const FNAT_SCRATCH: &str = "LB_FNAT_SCRATCH";
    /// Benchmarks only (not pinned): the bench programs' client counter.
    pub const BENCH_COUNTER: &str = "LB_BENCH_COUNTER";

    /// Every map of the eBPF object, by the names above (a test loads the object and
    /// checks its maps against this list).
    pub const ALL: &[&str] = &[
        SERVICES,
        REALS,
        TABLES,
        RR_CURSORS,
        FLOWS,
        REAL_CONNS,
        PERSIST,
        LOCALITY,
        TIMEOUTS,
        DECAP_VIPS,
        DECAP_SOURCES,
        LAYOUT,
        NAT_REVERSE,
        SETTINGS,
        LOCAL_ADDRS,
        VIPS,
        BENCH_FRAME,
        DECAP_STATS,
        SERVICE_STATS,
        REAL_STATS,
        OUTCOMES,
        SYNC_EVENTS,
        REPLACED,
        FNAT_SCRATCH,
        BENCH_COUNTER,
    ];
}

/// Names of the XDP programs in the eBPF object.
pub mod program_names {
    /// The load balancer.
    pub const BALANCER: &str = "lb_xdp";
    /// Passes every frame. Attached to the peer of a veth that receives XDP_TX/REDIRECT
    /// frames in native mode: without an XDP program there the kernel drops them.
    pub const PASS: &str = "lb_xdp_pass";
    /// On a real server: strips the IPIP/ip6ip6 header of packets for a VIP (TUN mode).
    pub const DECAP: &str = "lb_decap";
    /// Benchmark baseline: swaps the Ethernet addresses, XDP_TX.
    pub const BENCH_MACSWAP: &str = "lb_bench_macswap";
    /// Benchmark sink: drops every frame (the receiving end of the live-frames run).
    pub const BENCH_DROP: &str = "lb_bench_drop";
    /// Benchmark generator: puts the frame of `LB_BENCH_FRAME` back, XDP_TX.
    pub const BENCH_GENERATOR: &str = "lb_bench_generator";
    /// Benchmark harness: puts the frame of `LB_BENCH_FRAME` back, then balances it.
    pub const BENCH_BALANCER: &str = "lb_bench_balancer";
    /// Clock calibration (run by userspace with BPF_PROG_TEST_RUN, never attached): writes
    /// `ClockSample` over the start of its frame.
    pub const CLOCK: &str = "lb_clock";
}

/// Key of `LB_SERVICES`: what identifies a virtual service.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct ServiceKey {
    /// VIP, network order; IPv4 uses the first 4 bytes, the rest is zero.
    pub addr: [u8; 16],
    /// Port, network order.
    pub port: [u8; 2],
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// `FAMILY_IPV4` or `FAMILY_IPV6`.
    pub family: u8,
}

/// Value of `LB_SERVICES` (a hash without preallocation, `BPF_F_NO_PREALLOC`: an update
/// swaps in a new element and frees the old one after readers are done with it).
///
/// The service's scheduling table is `LB_TABLES[table_offset .. table_offset + table_len]`;
/// what its entries mean depends on `sched` (see `sched`).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct ServiceInfo {
    /// Index into the per-service arrays (stats, rr cursors); `< MAX_SERVICES`.
    pub id: u32,
    /// First entry of the service's table in `LB_TABLES`.
    pub table_offset: u32,
    /// Entries in the table; 0 means no real can take new flows.
    pub table_len: u32,
    /// `sched::KIND_*`: how the table is used.
    pub sched: u8,
    /// `sched::FLAG_*` bits.
    pub sched_flags: u8,
    /// `persistence_granularity` as a prefix length of the client address (32 or 128
    /// for the address itself).
    pub persist_prefix: u8,
    /// `SERVICE_FLAG_*` bits.
    pub flags: u8,
    /// `persistence_timeout` in seconds; 0: no persistence.
    pub persist_timeout: u32,
    /// FullNAT: the service's local address pool, as `LB_LOCAL_ADDRS` ids, is the
    /// `laddr_len` entries of `LB_TABLES` right after the scheduling table (published
    /// with it, in one range); 0 for other modes.
    pub laddr_len: u32,
    /// The scheduler's name as `sched::NAMES[scheduler]` (for lbctl; `sched` is what the
    /// data plane acts on, and rr and wrr share one kind).
    pub scheduler: u8,
    pub _pad: [u8; 3],
}

impl ServiceInfo {
    /// An entry with only what scheduling reads (the id and the table), the rest zero.
    #[inline(always)]
    pub const fn table_only(id: u32, table_offset: u32, table_len: u32, sched: u8) -> Self {
        Self {
            id,
            table_offset,
            table_len,
            sched,
            sched_flags: 0,
            persist_prefix: 0,
            flags: 0,
            persist_timeout: 0,
            laddr_len: 0,
            scheduler: 0,
            _pad: [0; 3],
        }
    }
}

/// Key of `LB_DECAP_VIPS` (on a real server): a VIP whose tunnelled packets `lb_decap`
/// strips.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct VipKey {
    /// Network order, IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 3],
}

/// Key data of `LB_DECAP_SOURCES` (an LPM trie, on a real server): the outer source
/// addresses (directors) whose tunnelled packets `lb_decap` strips. The family byte comes
/// first, then the address (network order, IPv4 in the first 4 bytes); a prefix of `len`
/// address bits matches `8 + len` bits of it.
pub type DecapSource = [u8; 17];

/// The key data of `addr` (`FAMILY_*` `family`) in `LB_DECAP_SOURCES`.
#[inline(always)]
pub const fn decap_source(family: u8, addr: &[u8; 16]) -> DecapSource {
    let mut data = [0; 17];
    data[0] = family;
    let mut i = 0;
    while i < 16 {
        data[1 + i] = addr[i];
        i += 1;
    }
    data
}

/// Entries of `LB_LAYOUT` (one per pinned map).
pub const MAX_LAYOUT_STAMPS: u32 = 64;

/// Most `LB_DECAP_SOURCES` prefixes.
pub const MAX_DECAP_SOURCES: u32 = 256;

/// Counters of `lb_decap` (`LB_DECAP_STATS`, per CPU).
pub mod decap_stats {
    /// Tunnelled packets for a configured VIP, stripped and passed on.
    pub const DECAPSULATED: u32 = 0;
    /// Tunnelled packets for another address: passed untouched.
    pub const OTHER_TUNNEL: u32 = 1;
    /// Tunnelled packets for a VIP from an outer source that is not a director's
    /// (`LB_DECAP_SOURCES`): passed untouched, not stripped (a remote host could otherwise
    /// inject packets with any inner source).
    pub const UNKNOWN_SOURCE: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// `ops` (IPVS one-packet scheduling, UDP only): every datagram is scheduled on its own and
/// no flow is recorded.
pub const SERVICE_FLAG_OPS: u8 = 1;

/// Key of `LB_PERSIST`: a service and a client address masked to the service's
/// `persistence_granularity` (IPVS's persistence template).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct PersistKey {
    pub service_id: u32,
    /// Client address, masked, network order (IPv4 in the first 4 bytes).
    pub client: [u8; 16],
}

/// Value of `LB_PERSIST`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct PersistState {
    /// The real this client (prefix) is pinned to.
    pub real_id: u32,
    /// `RealInfo::generation` of that real when the client was pinned.
    pub real_generation: u16,
    pub _pad: u16,
    /// `CLOCK_MONOTONIC` of the last new connection it directed, or of the last sweep
    /// that found one of its connections alive.
    pub last_seen_ns: u64,
}

/// Value of `LB_REALS` (an array indexed by real id). `family == 0` marks a free entry.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct RealInfo {
    /// Real server address, network order (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    /// Interface the real is reached through; the frame leaves there.
    pub ifindex: u32,
    /// Service this entry belongs to (a real in two services has two entries).
    pub service_id: u32,
    /// Ethernet address of the real (its neighbour entry): the frame's destination.
    pub mac: [u8; 6],
    /// Ethernet address of `ifindex`: the frame's source.
    pub src_mac: [u8; 6],
    /// Real server port, network order (informational for DR: the port is not rewritten).
    pub port: [u8; 2],
    pub family: u8,
    /// `REAL_FLAG_*` bits.
    pub flags: u8,
    /// VLAN id the real is reached on (the egress was a VLAN device on `ifindex`); 0 for
    /// untagged. DR keeps the frame's tags, so it forwards only frames of this VLAN.
    pub vlan: u16,
    /// IPVS weight (0..=65535). 0: takes no new flows; the least-connection schedulers
    /// weigh connection counts with it.
    pub weight: u16,
    /// The last weight above 0 (IPVS's `last_weight`): Maglev keeps a real at weight 0 in
    /// its table with the slots of this weight, also across a restart of lbd.
    pub last_weight: u16,
    /// MTU of the egress interface: TUN drops what would not fit once encapsulated.
    pub mtu: u16,
    /// `FWD_*`: how packets reach this real.
    pub fwd: u8,
    /// TUN: `TUNNEL_*`, the encapsulation (0, IPIP, in entries written before it existed).
    pub tunnel: u8,
    /// Bumped each time the id is given to another real (wrapping). A flow records the
    /// generation of its real; a flow whose real's id has since gone to another real is
    /// not that real's connection.
    pub generation: u16,
    /// TUN: the outer source address (the director's address towards the real), network
    /// order, same family as `addr`.
    pub tunnel_src: [u8; 16],
}

/// `RealInfo::tunnel`: IP-in-IP (IPIP, ip6ip6, 4in6).
pub const TUNNEL_IPIP: u8 = 0;
/// `RealInfo::tunnel`: GRE without checksum, key or sequence number (RFC 2784), around
/// the client's IPv4 or IPv6 packet.
pub const TUNNEL_GRE: u8 = 1;

/// Direct routing: the frame's destination MAC becomes the real's.
pub const FWD_DR: u8 = 0;
/// IP-in-IP tunnel (IPIP for IPv4, ip6ip6 for IPv6) to the real.
pub const FWD_TUN: u8 = 1;
/// `Settings::features` bit: some service uses NAT or FullNAT, so packets for no service
/// may be replies to translate (without it their reply-map lookup is skipped).
pub const FEATURE_NAT: u32 = 1;
/// `Settings::features` bit: answer echo requests to VIPs in XDP (`lbd --answer-ping`).
pub const FEATURE_ANSWER_ECHO: u32 = 2;
/// `Settings::features` bit: `Settings::services` is written; without it (before userspace
/// wrote the settings) every packet may be for a service.
pub const FEATURE_SERVICE_FILTER: u32 = 4;
/// `Settings::features` bit: connection sync runs (`lvs_sync_daemon`), so new flows and
/// state changes are written to `LB_SYNC_EVENTS` for it.
pub const FEATURE_SYNC_EVENTS: u32 = 8;

/// Value of `LB_SETTINGS` (one entry): what the configuration uses and load-time limits.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct Settings {
    /// `FEATURE_*` bits.
    pub features: u32,
    /// FullNAT: the local ports handed out, `fnat_port_min..=fnat_port_max` (host order;
    /// both 0 before userspace wrote them, which means `FNAT_PORTS_DEFAULT`).
    pub fnat_port_min: u16,
    pub fnat_port_max: u16,
    /// Possible CPUs: FullNAT gives each CPU every `cpus`-th port of the range, so that
    /// two CPUs never draw the same one (0 before userspace wrote it: one share).
    pub cpus: u16,
    pub _pad: [u16; 3],
    /// The sources a NAT or FullNAT reply may come from: bit `hash::nat_source_bit` of
    /// every such real's address (configured or retired) is set. A packet for no service
    /// whose source's bit is clear is no reply, and skips the reply-table lookup.
    pub nat_sources: [u64; NAT_SOURCE_WORDS],
    /// The virtual services: bit `hash::service_bit` of every service's (address, port,
    /// protocol) is set, kept a superset while services come and go. A packet whose bit is
    /// clear is for no service and skips the flow and service lookups.
    pub services: [u64; SERVICE_FILTER_WORDS],
    /// The flow table's clock, `CLOCK_MONOTONIC` at jiffy resolution, from the kernel's
    /// jiffies (a plain load; the coarse-clock helper costs ~10 ns a packet): nanoseconds
    /// = jiffies × `clock_tick_ns` + `clock_offset_ns` (wrapping). `clock_tick_ns` is 0
    /// until userspace has calibrated it against the coarse clock; the program then reads
    /// the coarse clock itself.
    pub clock_tick_ns: u64,
    pub clock_offset_ns: u64,
    /// lblc/lblcr: how long an unused destination is remembered, and how long an lblcr
    /// set stays unchanged before it loses its most loaded member (IPVS's
    /// `lblc_expiration` and `lblcr_expiration`); 0 means IPVS's default,
    /// `sched::LOCALITY_EXPIRATION_NS`.
    pub locality_expiration_ns: u64,
}

/// 64-bit words of `Settings::nat_sources` (512 bits).
pub const NAT_SOURCE_WORDS: usize = 8;
/// 64-bit words of `Settings::services` (1024 bits).
pub const SERVICE_FILTER_WORDS: usize = 16;

/// FullNAT local ports when none are configured: above the well-known ports.
pub const FNAT_PORTS_DEFAULT: (u16, u16) = (1024, 65535);

/// Value of `LB_LOCAL_ADDRS` (an array indexed by local address id): a FullNAT local
/// address. `family == 0` marks a free entry.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct LocalAddr {
    /// Network order, IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 3],
}

/// What `lb_clock` writes over the start of its frame: the kernel's jiffies between two
/// readings of the coarse monotonic clock (nanoseconds), in host order. Equal readings
/// mean no tick came in between.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct ClockSample {
    pub coarse_before_ns: u64,
    pub jiffies: u64,
    pub coarse_after_ns: u64,
}

/// A record of `LB_SYNC_EVENTS` (a ring buffer): a flow was recorded, or moved to another
/// state, as its packets or its real's replies went by; the sync daemon sends it to the
/// backups.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct SyncEvent {
    pub key: FlowKey,
    /// The flow's real (`LB_REALS` id) and its state after the change (`conn::STATE_*`).
    pub real_id: u32,
    pub state: u8,
    pub _pad: [u8; 3],
}

/// Bytes of `LB_SYNC_EVENTS`: room for some 70,000 events (56 bytes each with the ring
/// buffer's header), a second of new flows at 70,000 a second while the reader is late.
pub const SYNC_EVENTS_BYTES: u32 = 4 << 20;

/// Value of `LB_BENCH_FRAME` (benchmarks only): the frame the bench programs put back
/// before each run, so that a repeated test run (which feeds a program its own output) or
/// a veth (which hands the same page to its other end) sees it anew every time.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct BenchFrame {
    /// Length of the frame; its first `BENCH_FRAME_LEN` bytes are `bytes`.
    pub len: u16,
    /// Non-zero: every run gets a new client, a counter written as 4 bytes at `client_at`
    /// and as a port at `sport_at` (offsets into the frame).
    pub client_at: u16,
    pub sport_at: u16,
    pub _pad: u16,
    pub bytes: [u8; BENCH_FRAME_LEN],
}

/// Bytes of a `BenchFrame` put back: every header the balancer rewrites.
pub const BENCH_FRAME_LEN: usize = 128;

/// NAT (masquerading): destination rewritten to the real's address and port; the real's
/// replies, routed back through the director, get the VIP's as source again.
pub const FWD_NAT: u8 = 2;
/// FullNAT: source rewritten to a local address and port of the director (from the
/// service's pool), destination to the real's; the real replies to the director, which
/// puts the VIP and the client back. Reals need no route to clients.
pub const FWD_FNAT: u8 = 3;

/// Value of `LB_NAT_REVERSE`, keyed by a reply's 5-tuple as it leaves the real (`FlowKey`
/// with the real as source; as destination the client for NAT, the local address and port
/// for FullNAT): what to put back, and which client flow it answers.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct NatOrigin {
    /// The VIP the client talked to (network order, IPv4 in the first 4 bytes): the
    /// reply's new source.
    pub vip: [u8; 16],
    /// The client's address: FullNAT makes it the reply's destination again.
    pub client: [u8; 16],
    /// The virtual service's port, network order.
    pub vport: [u8; 2],
    /// The client's port, network order.
    pub client_port: [u8; 2],
    /// 1 for FullNAT (destination translated back too), 0 for NAT.
    pub full_nat: u8,
    pub _pad: [u8; 3],
    /// FullNAT: when the local port was reserved, in milliseconds of `CLOCK_MONOTONIC`
    /// (wrapping): a young reservation is never taken over, even before its flow is in
    /// the flow table.
    pub reserved_ms: u32,
}

impl NatOrigin {
    /// The client flow (as it arrives at the director) this reply answers.
    #[inline(always)]
    pub const fn client_flow(&self, proto: u8, family: u8) -> FlowKey {
        FlowKey {
            src: self.client,
            dst: self.vip,
            sport: self.client_port,
            dport: self.vport,
            proto,
            family,
            _pad: [0; 2],
        }
    }
}

/// The real was removed from the configuration. Its entry stays so that established flows
/// keep reaching it (IPVS with `expire_nodest_conn=0` does the same), but a new connection
/// (TCP SYN) on such a flow is scheduled again; the id is reused last.
pub const REAL_FLAG_RETIRED: u8 = 1;

/// Key of `LB_FLOWS`: the 5-tuple of a client flow as it arrives at the director.
/// Aligned to 4 bytes (the size is a multiple, so no padding): the data plane zeroes and
/// fills it in 32-bit words rather than byte by byte.
#[repr(C, align(4))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Value of `LB_FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct FlowState {
    /// The real this flow was scheduled to (index into `LB_REALS`).
    pub real_id: u32,
    /// `conn::STATE_*`: IPVS's connection state, from the packets seen so far.
    pub state: u8,
    pub _pad: [u8; 3],
    /// `CLOCK_MONOTONIC` of the last packet, in nanoseconds, at tick resolution (the data
    /// plane's clock, `lb-ebpf/src/clock.rs`).
    pub last_seen_ns: u64,
    /// FullNAT: the flow's local address (`LB_LOCAL_ADDRS` id) and port (network order);
    /// 0 for other modes.
    pub local_addr: u32,
    pub local_port: [u8; 2],
    /// `RealInfo::generation` of its real when the flow was scheduled.
    pub real_generation: u16,
}

/// Value of `LB_REAL_CONNS` (an array indexed by real id, shared by all CPUs, memory-mapped
/// by userspace): the real's connections as IPVS counts them for `ipvsadm -L`.
///
/// Every writer adds and subtracts atomically: the data plane when it opens a flow, moves
/// it between active and inactive, or replaces a timed-out one; userspace when it removes
/// a flow from the table (see `lb-userspace`'s `dataplane::xdp::conns`). A race of a
/// decrement with a correction can take a counter below zero, which wraps; readers use
/// `active()`/`inactive()`, which read such a value as 0.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct ConnCounts {
    /// Connections in an active state (`conn::is_active`: ESTABLISHED, SYN_RECV, ...).
    pub active: u32,
    /// Connections in any other state (including UDP "connections").
    pub inactive: u32,
    /// How many times the data plane changed the two counts (wrapping): userspace reads it
    /// before and after reading the flow table to know how far its recount can be off.
    pub changes: u32,
    pub _reserved: u32,
}

impl ConnCounts {
    /// `active` and `inactive` connections, no changes recorded.
    pub const fn new(active: u32, inactive: u32) -> Self {
        Self {
            active,
            inactive,
            changes: 0,
            _reserved: 0,
        }
    }

    /// Active connections, with a wrapped (negative) counter read as 0.
    #[inline(always)]
    pub const fn active(&self) -> u32 {
        clamp_wrapped(self.active)
    }

    /// Inactive connections, with a wrapped (negative) counter read as 0.
    #[inline(always)]
    pub const fn inactive(&self) -> u32 {
        clamp_wrapped(self.inactive)
    }
}

#[inline(always)]
const fn clamp_wrapped(count: u32) -> u32 {
    if count > i32::MAX as u32 { 0 } else { count }
}

/// Per-CPU traffic counters of one service or one real (`LB_SERVICE_STATS`, `LB_REAL_STATS`).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct TrafficStats {
    pub packets: u64,
    pub bytes: u64,
    /// Flows scheduled (new entries in the flow table).
    pub new_flows: u64,
    /// NAT and FullNAT: the reals' replies translated back towards the clients (ipvsadm's
    /// OutPkts and OutBytes; 0 for DR and TUN, whose replies bypass the director).
    pub out_packets: u64,
    pub out_bytes: u64,
}

/// `addr` (16 bytes, IPv4 in the first 4) with only its first `prefix` bits kept: the
/// client part of a persistence key. Two 64-bit words, no branch per byte.
#[inline(always)]
pub const fn mask_prefix(addr: [u8; 16], prefix: u8) -> [u8; 16] {
    let prefix = if prefix > 128 { 128 } else { prefix as u32 };
    let high = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let low = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]);
    let high = (high & word_mask(prefix)).to_be_bytes();
    let low = (low & word_mask(prefix.saturating_sub(64))).to_be_bytes();
    [
        high[0], high[1], high[2], high[3], high[4], high[5], high[6], high[7], low[0], low[1],
        low[2], low[3], low[4], low[5], low[6], low[7],
    ]
}

/// The top `bits` (0..=64; more counts as 64) bits of a word set.
#[inline(always)]
const fn word_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else if bits == 0 {
        0
    } else {
        u64::MAX << (64 - bits)
    }
}

/// aya's `Pod` for types that are `bytemuck::Pod` (derived above: `repr(C)`, integers and
/// arrays only, no padding, checked by the compiler).
#[cfg(feature = "user")]
macro_rules! aya_pod {
    ($($ty:ty),* $(,)?) => {
        $(
            const _: fn() = || {
                fn is_pod<T: bytemuck::Pod>() {}
                is_pod::<$ty>();
            };
            // SAFETY: a bytemuck::Pod type (asserted above): any bit pattern is valid and
            // it has no padding.
            unsafe impl aya::Pod for $ty {}
        )*
    };
}

#[cfg(feature = "user")]
aya_pod!(
    ServiceKey,
    ServiceInfo,
    RealInfo,
    FlowKey,
    FlowState,
    TrafficStats,
    ConnCounts,
    PersistKey,
    PersistState,
    conn::Timeouts,
    VipKey,
    NatOrigin,
    Settings,
    LocalAddr,
    BenchFrame,
    sched::LocalityKey,
    sched::LocalityEntry,
);

#[cfg(test)]
mod tests {
    use super::mask_prefix;

    #[test]
    fn prefixes_mask_ipv4_and_ipv6_clients() {
        let mut v4 = [0; 16];
        v4[..4].copy_from_slice(&[192, 0, 2, 77]);
        let mut net = [0; 16];
        net[..4].copy_from_slice(&[192, 0, 2, 0]);
        assert_eq!(mask_prefix(v4, 24), net);
        assert_eq!(mask_prefix(v4, 32), v4);
        assert_eq!(mask_prefix(v4, 0), [0; 16]);
        let v6 = [0xff; 16];
        let mut half = [0; 16];
        half[..8].copy_from_slice(&[0xff; 8]);
        half[8] = 0xf0;
        assert_eq!(mask_prefix(v6, 68), half);
        assert_eq!(mask_prefix(v6, 128), v6);
        assert_eq!(mask_prefix(v6, 200), v6);
    }
}
