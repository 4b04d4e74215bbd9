//! Connection sync (`lvs_sync_daemon`) in lbd. `convert` turns the XDP data plane's flows
//! into IPVS's sync records and back; the backup writes what it receives with
//! `dataplane::xdp::sync_table`. The codec and the daemon's logic are in `lb-sync`.
//! (The thread that runs the daemon on its socket, following the VRRP instance, is to
//! come; until then lbd reports `lvs_sync_daemon` as not supported.)

pub mod convert;
