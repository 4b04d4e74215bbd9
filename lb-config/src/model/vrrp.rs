//! The VRRP part of the model: `vrrp_instance`, `vrrp_script`, `vrrp_sync_group`, and the
//! addresses and routes they (and `static_ipaddress` / `static_routes`) carry, with
//! keepalived's defaults.

use std::{net::IpAddr, time::Duration};

use serde::Serialize;

/// keepalived's `vrrp_instance NAME { ... }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VrrpInstance {
    pub name: String,
    /// `state MASTER|BACKUP`: the state to start in (keepalived: MASTER only with
    /// priority 255; otherwise it starts as BACKUP and elects).
    pub initial_state: InitialState,
    pub interface: String,
    /// `virtual_router_id`, 1..=255.
    pub vrid: u8,
    /// `priority`, 1..=255 (255: the address owner). Default 100, or 255 with `state MASTER`
    /// and no priority.
    pub priority: u8,
    /// `advert_int` (default 1 s; VRRPv3 allows centiseconds).
    pub advert_int: Duration,
    /// `version` 2 or 3 (global `vrrp_version`; default 2, and 3 for IPv6).
    pub version: u8,
    pub authentication: Option<Authentication>,
    pub virtual_ipaddress: Vec<IpAddress>,
    pub virtual_ipaddress_excluded: Vec<IpAddress>,
    pub virtual_routes: Vec<Route>,
    pub track_interface: Vec<Track>,
    pub track_script: Vec<Track>,
    pub unicast_src_ip: Option<IpAddr>,
    pub unicast_peer: Vec<IpAddr>,
    pub mcast_src_ip: Option<IpAddr>,
    /// `nopreempt` clears it.
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// `garp_master_delay` (default 5 s), `garp_master_repeat` (default 5),
    /// `garp_master_refresh` (default none) and its repeat (default 1).
    pub garp_master_delay: Duration,
    pub garp_master_repeat: u32,
    pub garp_master_refresh: Option<Duration>,
    pub garp_master_refresh_repeat: u32,
    pub notify: Notify,
    /// `use_vmac [NAME]`: the macvlan's name (keepalived's default `vrrp.VRID`).
    pub use_vmac: Option<String>,
    pub vmac_xmit_base: bool,
    /// `accept` / `no_accept` (keepalived accepts by default outside strict mode).
    pub accept: bool,
    pub dont_track_primary: bool,
    /// `smtp_alert [BOOL]` (see `alert::SmtpAlerts::vrrp`).
    pub smtp_alert: Option<bool>,
    /// `strict_mode` (or global `vrrp_strict`).
    pub strict_mode: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum InitialState {
    Master,
    Backup,
}

/// `authentication { auth_type PASS|AH auth_pass SECRET }` (VRRPv2 only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Authentication {
    pub auth_type: AuthType,
    /// At most 8 characters (keepalived truncates longer ones, with a warning).
    pub auth_pass: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AuthType {
    Pass,
    Ah,
}

/// One line of `virtual_ipaddress`, `virtual_ipaddress_excluded` or `static_ipaddress`:
/// `IP[/PREFIX] [brd IP] [dev IF] [scope SCOPE] [label LABEL] [no_track] ...`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IpAddress {
    pub addr: IpAddr,
    /// keepalived's default: /32 for IPv4, /128 for IPv6.
    pub prefix_len: u8,
    pub broadcast: Option<IpAddr>,
    pub dev: Option<String>,
    pub scope: Option<String>,
    pub label: Option<String>,
    /// `no_track`: the address going away does not put the instance into FAULT.
    pub no_track: bool,
}

/// One line of `virtual_routes` or `static_routes`, in `ip route` syntax: the destination
/// (`default` as 0.0.0.0/0 or ::/0), and the common options typed; the line as written is
/// kept for the rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    pub src: Option<IpAddr>,
    pub table: Option<String>,
    pub metric: Option<u32>,
    pub words: Vec<String>,
}

/// An entry of `track_interface` or `track_script`: `NAME [weight W [reverse]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Track {
    pub name: String,
    /// `None`: the tracked item's own weight (scripts) or 0 (a failure means FAULT).
    pub weight: Option<i32>,
    pub reverse: bool,
}

/// `notify_master`, `notify_backup`, `notify_fault`, `notify_stop`, `notify`: command
/// lines keepalived runs on state changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
    pub stop: Option<String>,
    pub any: Option<String>,
}

/// keepalived's `vrrp_script NAME { ... }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VrrpScript {
    pub name: String,
    /// `script`: the command line.
    pub script: String,
    /// `interval` (default 1 s).
    pub interval: Duration,
    /// `timeout` (default: the interval).
    pub timeout: Duration,
    /// `weight` (-253..=253, default 0: a failure means FAULT) and `reverse`.
    pub weight: i32,
    pub reverse: bool,
    /// `rise` and `fall` (default 1 each).
    pub rise: u32,
    pub fall: u32,
    pub user: Option<String>,
    pub init_fail: bool,
}

/// keepalived's `vrrp_sync_group NAME { group { ... } ... }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VrrpSyncGroup {
    pub name: String,
    pub group: Vec<String>,
    pub track_interface: Vec<Track>,
    pub track_script: Vec<Track>,
    pub notify: Notify,
    /// `smtp_alert [BOOL]` (see `alert::SmtpAlerts::vrrp`).
    pub smtp_alert: Option<bool>,
}
