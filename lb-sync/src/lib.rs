//! Connection sync between directors, as IPVS does it (`lvs_sync_daemon` in keepalived):
//! the master multicasts its connections, the backups create them, so that a failover
//! keeps them on their reals. `wire` reads and writes the kernel's sync messages
//! (version 1 of `net/netfilter/ipvs/ip_vs_sync.c`), so that lbd and the kernel's daemon
//! can be each other's peer. `resync` and `handover` are lbd's addition: a director that
//! comes back asks the master for its connections before it preempts.

pub mod daemon;
pub mod handover;
pub mod resync;
pub mod wire;

#[cfg(test)]
mod test_conns;
