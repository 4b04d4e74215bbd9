//! Connection states and timeouts, as IPVS keeps them for a director that sees only the
//! client's packets (DR, TUN: `IP_VS_CONN_F_NOOUTPUT`, the "input only" TCP state table of
//! `ip_vs_proto_tcp.c`).
//!
//! The data plane moves a flow between states on every packet (`tcp_next_state`), counts
//! the real's connections as active or inactive the way `ipvsadm -L` shows them, and treats
//! a flow whose state timed out as gone. Userspace sweeps expired flows and reconciles the
//! counts with the same functions.

/// TCP states, with IPVS's numbers (`IP_VS_TCP_S_*`).
pub const STATE_NONE: u8 = 0;
pub const STATE_ESTABLISHED: u8 = 1;
pub const STATE_SYN_SENT: u8 = 2;
pub const STATE_SYN_RECV: u8 = 3;
pub const STATE_FIN_WAIT: u8 = 4;
pub const STATE_TIME_WAIT: u8 = 5;
pub const STATE_CLOSE: u8 = 6;
pub const STATE_CLOSE_WAIT: u8 = 7;
pub const STATE_LAST_ACK: u8 = 8;
pub const STATE_LISTEN: u8 = 9;
pub const STATE_SYNACK: u8 = 10;
/// A UDP flow (IPVS's only UDP state, `IP_VS_UDP_S_NORMAL`).
pub const STATE_UDP: u8 = 11;
/// Number of states (size of `Timeouts::secs`).
pub const STATE_COUNT: usize = 12;

/// TCP header flag bits.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Seconds a flow may stay idle in each state before it is gone (the value of
/// `LB_TIMEOUTS`, one entry).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(Debug))]
pub struct Timeouts {
    pub secs: [u32; STATE_COUNT],
}

impl Timeouts {
    /// IPVS's defaults (`tcp_timeouts`, `udp_timeouts`); `ipvsadm --set tcp tcpfin udp`
    /// shows ESTABLISHED, FIN_WAIT and UDP: 900 120 300.
    pub const IPVS: Timeouts = Timeouts {
        secs: [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120, 300],
    };

    /// IPVS's defaults with `ipvsadm --set tcp tcpfin udp` (keepalived's `lvs_timeouts`)
    /// applied: ESTABLISHED, FIN_WAIT and UDP; `None` (or 0, as in IPVS) keeps a default.
    pub const fn with_set(tcp: Option<u32>, tcpfin: Option<u32>, udp: Option<u32>) -> Self {
        let mut timeouts = Self::IPVS;
        if let Some(secs @ 1..) = tcp {
            timeouts.secs[STATE_ESTABLISHED as usize] = secs;
        }
        if let Some(secs @ 1..) = tcpfin {
            timeouts.secs[STATE_FIN_WAIT as usize] = secs;
        }
        if let Some(secs @ 1..) = udp {
            timeouts.secs[STATE_UDP as usize] = secs;
        }
        timeouts
    }

    /// Idle time after which a flow in `state` is gone, in nanoseconds. A state without a
    /// timeout (0: `LB_TIMEOUTS` before userspace wrote it) has IPVS's default.
    #[inline(always)]
    pub const fn timeout_ns(&self, state: u8) -> u64 {
        let index = if (state as usize) < STATE_COUNT {
            state as usize
        } else {
            STATE_NONE as usize
        };
        let secs = match self.secs[index] {
            0 => Self::IPVS.secs[index],
            secs => secs,
        };
        secs as u64 * 1_000_000_000
    }

    /// Whether a flow last seen at `last_seen_ns` in `state` has expired at `now_ns`.
    #[inline(always)]
    pub const fn expired(&self, state: u8, last_seen_ns: u64, now_ns: u64) -> bool {
        now_ns > last_seen_ns && now_ns - last_seen_ns > self.timeout_ns(state)
    }
}

/// Whether IPVS counts a connection in `state` as active (`tcp_state_active_table`:
/// ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK); every other state, and UDP, is inactive.
#[inline(always)]
pub const fn is_active(state: u8) -> bool {
    matches!(
        state,
        STATE_ESTABLISHED | STATE_SYN_SENT | STATE_SYN_RECV | STATE_SYNACK
    )
}

/// Next state of a TCP flow after a client packet with `flags`, by IPVS's input-only table.
/// The flag that decides is, in order: RST, SYN, FIN, ACK; a segment with none of them
/// closes the flow (as `tcp_state_idx` returning -1 does).
#[inline(always)]
pub const fn tcp_next_state(state: u8, flags: u8) -> u8 {
    if flags & TCP_RST != 0 {
        match state {
            STATE_SYN_RECV => STATE_SYN_RECV,
            STATE_LAST_ACK => STATE_LAST_ACK,
            STATE_LISTEN => STATE_LISTEN,
            _ => STATE_CLOSE,
        }
    } else if flags & TCP_SYN != 0 {
        match state {
            STATE_ESTABLISHED | STATE_SYN_SENT => STATE_ESTABLISHED,
            _ => STATE_SYN_RECV,
        }
    } else if flags & TCP_FIN != 0 {
        match state {
            STATE_NONE | STATE_CLOSE => STATE_CLOSE,
            STATE_ESTABLISHED | STATE_FIN_WAIT => STATE_FIN_WAIT,
            STATE_SYN_SENT => STATE_SYN_SENT,
            STATE_SYN_RECV | STATE_TIME_WAIT | STATE_SYNACK => STATE_TIME_WAIT,
            other => other,
        }
    } else if flags & TCP_ACK != 0 {
        match state {
            STATE_NONE | STATE_ESTABLISHED | STATE_SYN_RECV | STATE_SYNACK => STATE_ESTABLISHED,
            STATE_LAST_ACK => STATE_CLOSE,
            other => other,
        }
    } else {
        STATE_CLOSE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dr_connection_walks_ipvs_states() {
        let mut state = STATE_NONE;
        let mut seen = [0u8; 5];
        for (i, flags) in [TCP_SYN, TCP_ACK, TCP_ACK, TCP_FIN | TCP_ACK, TCP_ACK]
            .into_iter()
            .enumerate()
        {
            state = tcp_next_state(state, flags);
            seen[i] = state;
        }
        assert_eq!(
            seen,
            [
                STATE_SYN_RECV,
                STATE_ESTABLISHED,
                STATE_ESTABLISHED,
                STATE_FIN_WAIT,
                STATE_FIN_WAIT
            ]
        );
        assert_eq!(
            tcp_next_state(STATE_ESTABLISHED, TCP_RST | TCP_ACK),
            STATE_CLOSE
        );
        assert_eq!(tcp_next_state(STATE_ESTABLISHED, 0), STATE_CLOSE);
        // A flow picked up mid-stream (after a restart) is established at once.
        assert_eq!(tcp_next_state(STATE_NONE, TCP_ACK), STATE_ESTABLISHED);
    }

    #[test]
    fn active_states_and_timeouts_follow_ipvs() {
        assert!(is_active(STATE_SYN_RECV) && is_active(STATE_ESTABLISHED));
        assert!(!is_active(STATE_FIN_WAIT) && !is_active(STATE_UDP) && !is_active(STATE_CLOSE));
        let t = Timeouts::IPVS;
        assert_eq!(t.timeout_ns(STATE_ESTABLISHED), 900_000_000_000);
        assert!(!t.expired(STATE_CLOSE, 0, 10_000_000_000));
        assert!(t.expired(STATE_CLOSE, 0, 10_000_000_001));
        assert!(
            !t.expired(STATE_CLOSE, 5, 1),
            "a clock behind the entry never expires it"
        );
    }
}
