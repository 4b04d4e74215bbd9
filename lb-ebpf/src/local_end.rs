//! FullNAT's local end (an `LB_LOCAL_ADDRS` id and a port) and the scratch its
//! allocation draws in: the types the flow table and the maps hold, below both, so that
//! `maps` and `conntrack` need nothing of `fwd::fnat`, which uses them.

use lb_common::{FlowKey, NatOrigin};

/// `LB_FNAT_SCRATCH`'s value: a reservation's key and value while `allocate` draws.
pub struct FnatScratch {
    pub reply: FlowKey,
    pub origin: NatOrigin,
    /// The client flow of a reservation found taken (`ended`).
    pub client: FlowKey,
}

/// The local end of a FullNAT flow: `LB_LOCAL_ADDRS` id and port (network order).
#[derive(Clone, Copy)]
pub struct LocalEnd {
    pub addr_id: u32,
    pub port: [u8; 2],
}

impl LocalEnd {
    /// For modes other than FullNAT.
    pub const NONE: LocalEnd = LocalEnd {
        addr_id: 0,
        port: [0; 2],
    };

    /// `(address id << 16) | port` (host order), as `allocate` answers.
    #[inline(always)]
    pub fn packed(&self) -> u32 {
        (self.addr_id << 16) | u32::from(u16::from_be_bytes(self.port))
    }

    /// From `allocate`'s packed answer (not `NO_LOCAL_PORT`).
    #[inline(always)]
    pub fn unpack(packed: u64) -> LocalEnd {
        LocalEnd {
            addr_id: (packed >> 16) as u32,
            port: (packed as u16).to_be_bytes(),
        }
    }
}
