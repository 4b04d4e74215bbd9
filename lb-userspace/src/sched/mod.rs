//! Scheduling tables, computed in userspace for the data plane (`lb-ebpf/src/sched/`),
//! which only reads them. A table is a list of positions into the service's reals; the
//! XDP backend turns positions into real ids and writes the table into the `LB_TABLES`
//! arena.
//!
//! | `lb_algo` | table | the data plane |
//! |---|---|---|
//! | rr, wrr | one cycle of the sequence (`sequence`) | walks it with a per-CPU cursor |
//! | fo | the one real of highest weight (`sequence::fo`) | as rr, over that one |
//! | sh, dh | 256 buckets (`buckets`) | hashes source / destination address |
//! | mh | Maglev lookup table of 65537 entries (`maglev`) | hashes source address |
//! | lc, wlc, sed, nq, ovf | the reals, in order | compares connection counts |
//! | twos | wrr's cycle: each real as often as its weight (`sequence::wrr`) | draws two slots at random, takes the less loaded |
//! | lblc, lblcr | the reals, in order | remembers each destination's real(s) in `LB_LOCALITY`, else as wlc |

mod buckets;
mod maglev;
mod sequence;

use lb_common::sched::{
    FLAG_FALLBACK, FLAG_HASH_PORT, KIND_DEST_HASH, KIND_LBLC, KIND_LBLCR, KIND_LC, KIND_MAGLEV,
    KIND_NQ, KIND_OVF, KIND_SED, KIND_SEQUENCE, KIND_SOURCE_HASH, KIND_TWOS, KIND_WLC,
    MAX_SEQUENCE_LEN,
};

pub use maglev::permutation_key;

use crate::model::{SchedFlags, Scheduler};

/// What a table is built from: one entry per real of the service, in configuration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableReal {
    /// Effective weight; 0 takes no new flows.
    pub weight: u32,
    /// The last weight above 0 this real had (its weight if above 0). Maglev keeps a real
    /// whose weight dropped to 0 in the table, as IPVS's mh does, so that its flows fall
    /// back (or are refused) without moving anybody else's.
    pub last_weight: u32,
    /// The real's identity for Maglev's permutation (`permutation_key`).
    pub key: [u8; 19],
}

/// Positions into the reals, in table order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub entries: Vec<usize>,
    /// The weights had to be scaled down to fit (wrr cycles longer than `MAX_SEQUENCE_LEN`).
    pub scaled: bool,
}

/// The data plane's `sched::KIND_*` of a scheduler.
pub const fn kind(scheduler: Scheduler) -> u8 {
    match scheduler {
        Scheduler::Rr | Scheduler::Wrr | Scheduler::Fo => KIND_SEQUENCE,
        Scheduler::Sh => KIND_SOURCE_HASH,
        Scheduler::Dh => KIND_DEST_HASH,
        Scheduler::Mh => KIND_MAGLEV,
        Scheduler::Lc => KIND_LC,
        Scheduler::Wlc => KIND_WLC,
        Scheduler::Sed => KIND_SED,
        Scheduler::Nq => KIND_NQ,
        Scheduler::Ovf => KIND_OVF,
        Scheduler::Twos => KIND_TWOS,
        Scheduler::Lblc => KIND_LBLC,
        Scheduler::Lblcr => KIND_LBLCR,
    }
}

/// `ServiceInfo::scheduler`: the index of the scheduler's name in `lb_common::sched::NAMES`.
pub fn name_index(scheduler: Scheduler) -> u8 {
    lb_common::sched::NAMES
        .iter()
        .position(|name| *name == scheduler.name())
        .unwrap_or(0) as u8
}

/// The data plane's `sched::FLAG_*` bits.
pub const fn flag_bits(flags: SchedFlags) -> u8 {
    let mut bits = 0;
    if flags.fallback {
        bits |= FLAG_FALLBACK;
    }
    if flags.port {
        bits |= FLAG_HASH_PORT;
    }
    bits
}

/// The table of `scheduler` over `reals`.
pub fn build(scheduler: Scheduler, reals: &[TableReal]) -> Table {
    let weights: Vec<u32> = reals.iter().map(|real| real.weight).collect();
    let plain = |entries| Table {
        entries,
        scaled: false,
    };
    match scheduler {
        Scheduler::Rr => sequence::rr(&weights),
        // twos draws slots at random: wrr's cycle holds each real in proportion to its
        // weight.
        Scheduler::Wrr | Scheduler::Twos => sequence::wrr(&weights, MAX_SEQUENCE_LEN as usize),
        Scheduler::Fo => sequence::fo(&weights),
        Scheduler::Sh => plain(buckets::source_hash(&weights)),
        Scheduler::Dh => plain(buckets::dest_hash(reals.len())),
        Scheduler::Mh => plain(maglev::table(reals)),
        // The XDP backend refuses more than `LEAST_CONN_MAX_REALS` (the data plane's loop).
        Scheduler::Lc
        | Scheduler::Wlc
        | Scheduler::Sed
        | Scheduler::Nq
        | Scheduler::Ovf
        | Scheduler::Lblc
        | Scheduler::Lblcr => plain((0..reals.len()).collect()),
    }
}
