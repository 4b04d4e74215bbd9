//! Connection sync (`lvs_sync_daemon`) in lbd. `convert` turns the XDP data plane's flows
//! into IPVS's sync records and back; `socket` opens the multicast sockets as the
//! kernel's daemon does; `runner` is the daemon's thread: as master it sends the data
//! plane's events, as backup it writes what it receives with
//! `dataplane::xdp::sync_table`. The codec and the daemon's logic are in `lb-sync`.

pub mod convert;
pub mod runner;
pub mod socket;
