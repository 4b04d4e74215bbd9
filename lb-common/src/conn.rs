//! Connection states and timeouts, as IPVS keeps them (`ip_vs_proto_tcp.c`): a TCP flow
//! moves by the client's segments, and where the director sees the replies (NAT, FullNAT)
//! by the real's too; where it does not (DR, TUN: IPVS's `IP_VS_CONN_F_NOOUTPUT`) the
//! client's segments move it by IPVS's "input only" table.
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
#[derive(Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
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

/// Which of IPVS's three TCP state tables a segment moves its flow by.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(Debug))]
pub enum TcpDirection {
    /// From the client, on a flow whose replies pass the director (NAT, FullNAT).
    Input = 0,
    /// From the real: a NAT or FullNAT reply.
    Output = 1,
    /// From the client, on a flow whose replies bypass the director (DR, TUN).
    InputOnly = 2,
}

/// Next state of a TCP flow in `state` after a segment with `flags` going `direction`. The
/// flag that decides is, in order: RST, SYN, FIN, ACK; a segment with none of them closes
/// the flow (as `tcp_state_idx` returning -1 does in IPVS), as does a state out of range.
#[inline(always)]
pub fn tcp_next_state(state: u8, flags: u8, direction: TcpDirection) -> u8 {
    let segment = if flags & TCP_RST != 0 {
        SEGMENT_RST
    } else if flags & TCP_SYN != 0 {
        SEGMENT_SYN
    } else if flags & TCP_FIN != 0 {
        SEGMENT_FIN
    } else if flags & TCP_ACK != 0 {
        SEGMENT_ACK
    } else {
        return STATE_CLOSE;
    };
    // Rows of 16 columns, the state masked to 4 bits: the index is in range by its
    // arithmetic alone, which any verifier can follow (6.1's lost a separate bounds check
    // when the index was spilled to the stack and reloaded), and the table is read in
    // place (a row copied to the stack and indexed by the state would be a variable-offset
    // stack read, which 6.1 refuses). Columns past SYNACK hold CLOSE.
    let row = direction as usize * 4 + segment;
    TCP_STATES[row * TCP_COLUMNS + (state as usize & (TCP_COLUMNS - 1))]
}

/// Rows of a `TCP_STATES` table, by the segment's deciding flag.
const SEGMENT_SYN: usize = 0;
const SEGMENT_FIN: usize = 1;
const SEGMENT_ACK: usize = 2;
const SEGMENT_RST: usize = 3;

/// TCP states (`STATE_NONE` to `STATE_SYNACK`): the first columns of `TCP_STATES`.
const TCP_STATE_COUNT: usize = 11;
/// Columns of a `TCP_STATES` row (a power of two; past `TCP_STATE_COUNT`, CLOSE).
const TCP_COLUMNS: usize = 16;

// Short names for the states in the tables below (no transition leads to NONE or SYNACK).
const ES: u8 = STATE_ESTABLISHED;
const SS: u8 = STATE_SYN_SENT;
const SR: u8 = STATE_SYN_RECV;
const FW: u8 = STATE_FIN_WAIT;
const TW: u8 = STATE_TIME_WAIT;
const CL: u8 = STATE_CLOSE;
const CW: u8 = STATE_CLOSE_WAIT;
const LA: u8 = STATE_LAST_ACK;
const LI: u8 = STATE_LISTEN;

/// IPVS's TCP state tables (the default ones, not `secure_tcp`'s), by `TcpDirection`,
/// then segment (`SEGMENT_*`), then the state before the segment; flattened into
/// `TCP_STATES`. A segment that opens nothing (no SYN) on a flow in `NONE` leads to CLOSE
/// in every table: a flow picked up mid-stream lives for CLOSE's short timeout until a
/// SYN.
#[rustfmt::skip]
const IPVS_TCP_STATES: [[[u8; TCP_STATE_COUNT]; 4]; 3] = [
    // Input.      NO  ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
    [
        /* syn */ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /* fin */ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
        /* ack */ [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    ],
    // Output.     NO  ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
    [
        /* syn */ [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        /* fin */ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /* rst */ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // InputOnly.  NO  ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
    [
        /* syn */ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /* fin */ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        /* ack */ [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// `IPVS_TCP_STATES` as the data plane reads it: 12 rows of `TCP_COLUMNS`.
static TCP_STATES: [u8; 3 * 4 * TCP_COLUMNS] = {
    let mut flat = [CL; 3 * 4 * TCP_COLUMNS];
    let mut row = 0;
    while row < 12 {
        let mut state = 0;
        while state < TCP_STATE_COUNT {
            flat[row * TCP_COLUMNS + state] = IPVS_TCP_STATES[row / 4][row % 4][state];
            state += 1;
        }
        row += 1;
    }
    flat
};

/// Whether a SYN on a flow in `state` opens a new connection, to be scheduled anew rather
/// than sent where the old one went: IPVS's `conn_reuse_mode` 1 (its default) does so for
/// a connection in TIME_WAIT or CLOSE.
#[inline(always)]
pub const fn reopens(state: u8) -> bool {
    matches!(state, STATE_TIME_WAIT | STATE_CLOSE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use TcpDirection::{Input, InputOnly, Output};

    /// The states a flow goes through from `NONE` by `segments` (flags, direction).
    fn walk<const N: usize>(segments: [(u8, TcpDirection); N]) -> [u8; N] {
        let mut state = STATE_NONE;
        segments.map(|(flags, direction)| {
            state = tcp_next_state(state, flags, direction);
            state
        })
    }

    #[test]
    fn a_dr_connection_walks_ipvs_input_only_states() {
        let steps = [TCP_SYN, TCP_ACK, TCP_ACK, TCP_FIN | TCP_ACK, TCP_ACK].map(|f| (f, InputOnly));
        assert_eq!(
            walk(steps),
            [
                STATE_SYN_RECV,
                STATE_ESTABLISHED,
                STATE_ESTABLISHED,
                STATE_FIN_WAIT,
                STATE_FIN_WAIT
            ]
        );
        assert_eq!(
            tcp_next_state(STATE_ESTABLISHED, TCP_RST | TCP_ACK, InputOnly),
            STATE_CLOSE
        );
        assert_eq!(tcp_next_state(STATE_ESTABLISHED, 0, InputOnly), STATE_CLOSE);
        assert_eq!(
            tcp_next_state(STATE_SYNACK, TCP_RST, InputOnly),
            STATE_CLOSE
        );
        assert_eq!(tcp_next_state(STATE_SYNACK, TCP_RST, Input), STATE_SYN_RECV);
    }

    #[test]
    fn a_nat_connection_follows_both_directions() {
        // The server closes first.
        let server_closes = [
            (TCP_SYN, Input),
            (TCP_SYN | TCP_ACK, Output),
            (TCP_ACK, Input),
            (TCP_FIN | TCP_ACK, Output),
            (TCP_FIN | TCP_ACK, Input),
            (TCP_ACK, Output),
        ];
        assert_eq!(
            walk(server_closes),
            [
                STATE_SYN_RECV,
                STATE_SYN_RECV,
                STATE_ESTABLISHED,
                STATE_FIN_WAIT,
                STATE_TIME_WAIT,
                STATE_TIME_WAIT
            ]
        );
        // The client closes first: CLOSE_WAIT until the server's FIN.
        let client_closes = [
            (TCP_SYN, Input),
            (TCP_SYN | TCP_ACK, Output),
            (TCP_ACK, Input),
            (TCP_FIN | TCP_ACK, Input),
            (TCP_ACK, Output),
            (TCP_FIN | TCP_ACK, Output),
        ];
        assert_eq!(
            walk(client_closes)[3..],
            [STATE_CLOSE_WAIT, STATE_CLOSE_WAIT, STATE_TIME_WAIT]
        );
        // The server resets.
        assert_eq!(
            tcp_next_state(STATE_ESTABLISHED, TCP_RST, Output),
            STATE_CLOSE
        );
    }

    #[test]
    fn segments_of_no_known_connection_close_and_syns_reopen_closed_ones() {
        for direction in [Input, InputOnly] {
            for flags in [TCP_ACK, TCP_FIN | TCP_ACK, TCP_RST, 0] {
                assert_eq!(tcp_next_state(STATE_NONE, flags, direction), STATE_CLOSE);
            }
        }
        assert_eq!(tcp_next_state(STATE_CLOSE, TCP_ACK, InputOnly), STATE_CLOSE);
        assert!(reopens(STATE_TIME_WAIT) && reopens(STATE_CLOSE));
        assert!(!reopens(STATE_ESTABLISHED) && !reopens(STATE_FIN_WAIT));
        assert_eq!(tcp_next_state(STATE_UDP, TCP_ACK, Input), STATE_CLOSE);
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
