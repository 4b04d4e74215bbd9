//! keepalived's keywords per block (keepalived 2.2/2.3), so that a keyword lbd does not
//! implement yet gets a warning that says so, and a misspelt one a warning with the
//! nearest known keyword ("did you mean `lb_algo`?").

use super::{Diagnostic, tree::Statement};

/// The blocks whose keywords are told apart here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    Top,
    GlobalDefs,
    VirtualServer,
    RealServer,
    VrrpInstance,
    VrrpScript,
    VrrpSyncGroup,
    Authentication,
    Checker,
    Url,
}

impl Block {
    fn keywords(self) -> &'static [&'static str] {
        match self {
            Block::Top => TOP,
            Block::GlobalDefs => GLOBAL_DEFS,
            Block::VirtualServer => VIRTUAL_SERVER,
            Block::RealServer => REAL_SERVER,
            Block::VrrpInstance => VRRP_INSTANCE,
            Block::VrrpScript => VRRP_SCRIPT,
            Block::VrrpSyncGroup => VRRP_SYNC_GROUP,
            Block::Authentication => AUTHENTICATION,
            Block::Checker => CHECKER,
            Block::Url => URL,
        }
    }

    /// How messages name the block ("" at the top level).
    fn context(self) -> &'static str {
        match self {
            Block::Top => "",
            Block::GlobalDefs => "global_defs keyword ",
            Block::VirtualServer => "virtual_server keyword ",
            Block::RealServer => "real_server keyword ",
            Block::VrrpInstance => "vrrp_instance keyword ",
            Block::VrrpScript => "vrrp_script keyword ",
            Block::VrrpSyncGroup => "vrrp_sync_group keyword ",
            Block::Authentication => "authentication keyword ",
            Block::Checker => "checker keyword ",
            Block::Url => "url keyword ",
        }
    }
}

/// keepalived 2.2's keywords, block by block (by the name the block has in a file; the
/// checkers' keywords are those of every checker kind together), for the inventory of
/// what lbd implements.
pub fn inventory() -> [(&'static str, &'static [&'static str]); 10] {
    [
        ("top level", TOP),
        ("global_defs", GLOBAL_DEFS),
        ("virtual_server", VIRTUAL_SERVER),
        ("real_server", REAL_SERVER),
        ("vrrp_instance", VRRP_INSTANCE),
        ("vrrp_script", VRRP_SCRIPT),
        ("vrrp_sync_group", VRRP_SYNC_GROUP),
        ("authentication", AUTHENTICATION),
        ("checkers", CHECKER),
        ("url", URL),
    ]
}

/// A keyword lbd does not use in `block`: a warning that it is not supported yet if
/// keepalived knows it, else that it is unknown, with the nearest known keyword.
pub fn not_used(item: &Statement, block: Block, diagnostics: &mut Vec<Diagnostic>) {
    let keyword = item.name();
    let context = block.context();
    let message = if block.keywords().contains(&keyword) {
        format!("{context}`{keyword}` is not supported yet; ignored")
    } else {
        match nearest(block.keywords(), keyword) {
            Some(known) => {
                format!("unknown {context}`{keyword}`; ignored (did you mean `{known}`?)")
            }
            None => format!("unknown {context}`{keyword}`; ignored"),
        }
    };
    diagnostics.push(Diagnostic::warning(item.location(), message));
}

/// The known keyword closest to `word`, if close enough to be a slip: at most a third of
/// its length in edits (at least one), case aside.
fn nearest(known: &[&'static str], word: &str) -> Option<&'static str> {
    let word = word.to_ascii_lowercase();
    let length = word.chars().count();
    let limit = (length / 3).max(1);
    known
        .iter()
        // Lengths further apart than the limit cannot be within it.
        .filter(|k| k.len().abs_diff(length) <= limit)
        .map(|k| (edit_distance(&word, &k.to_ascii_lowercase()), *k))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Edits (insertions, deletions, substitutions, swaps of neighbours) from `a` to `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

const TOP: &[&str] = &[
    "global_defs",
    "net_namespace",
    "net_namespace_ipvs",
    "namespace_with_ipsets",
    "use_pid_dir",
    "instance",
    "child_wait_time",
    "linkbeat_use_polling",
    "linkbeat_interfaces",
    "interface_up_down_delays",
    "track_group",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "track_file",
    "vrrp_track_file",
    "vrrp_script",
    "vrrp_track_process",
    "vrrp_sync_group",
    "garp_group",
    "vrrp_instance",
    "bfd_instance",
    "SSL",
    "virtual_server_group",
    "virtual_server",
    "local_address_group",
];

const GLOBAL_DEFS: &[&str] = &[
    "process_names",
    "process_name",
    "vrrp_process_name",
    "checker_process_name",
    "lvs_process_name",
    "bfd_process_name",
    "use_symlink_paths",
    "set_supplementary_groups",
    "router_id",
    "notification_email",
    "notification_email_from",
    "smtp_server",
    "smtp_helo_name",
    "smtp_connect_timeout",
    "smtp_alert",
    "smtp_alert_vrrp",
    "smtp_alert_checker",
    "checker_log_all_failures",
    "no_email_faults",
    "startup_script",
    "startup_script_timeout",
    "shutdown_script",
    "shutdown_script_timeout",
    "max_auto_priority",
    "min_auto_priority_delay",
    "dynamic_interfaces",
    "default_interface",
    "disable_local_igmp",
    "v3_checksum_as_v2",
    "lvs_timeouts",
    "vrrp_rlimit_rtime",
    "checker_rlimit_rtime",
    "bfd_rlimit_rtime",
    "vrrp_netlink_cmd_rcv_bufs_force",
    "vrrp_netlink_monitor_rcv_bufs_force",
    "lvs_netlink_cmd_rcv_bufs_force",
    "lvs_netlink_monitor_rcv_bufs_force",
    "process_monitor_rcv_bufs_force",
    "lvs_flush",
    "lvs_flush_on_stop",
    "lvs_flush_onstop",
    "lvs_sync_daemon",
    "lvs_tun_source",
    "vrrp_mcast_group4",
    "vrrp_mcast_group6",
    "vrrp_garp_master_delay",
    "vrrp_garp_master_repeat",
    "vrrp_garp_master_refresh",
    "vrrp_garp_master_refresh_repeat",
    "vrrp_garp_lower_prio_delay",
    "vrrp_garp_lower_prio_repeat",
    "vrrp_down_timer_adverts",
    "vrrp_garp_interval",
    "vrrp_gna_interval",
    "vrrp_min_garp",
    "vrrp_garp_extra_if",
    "vrrp_vmac_garp_intvl",
    "vrrp_lower_prio_no_advert",
    "vrrp_higher_prio_send_advert",
    "vrrp_version",
    "vrrp_iptables",
    "vrrp_ipsets",
    "nftables",
    "nftables_priority",
    "nftables_ifindex",
    "nftables_counters",
    "nftables_ipvs",
    "nftables_ipvs_priority",
    "nftables_ipvs_start_fwmark",
    "vrrp_check_unicast_src",
    "vrrp_skip_check_adv_addr",
    "vrrp_strict",
    "vrrp_priority",
    "checker_priority",
    "bfd_priority",
    "vrrp_no_swap",
    "checker_no_swap",
    "bfd_no_swap",
    "vrrp_rt_priority",
    "checker_rt_priority",
    "bfd_rt_priority",
    "vrrp_cpu_affinity",
    "checker_cpu_affinity",
    "bfd_cpu_affinity",
    "vrrp_rlimit_rttime",
    "checker_rlimit_rttime",
    "bfd_rlimit_rttime",
    "notify_fifo",
    "notify_fifo_script",
    "vrrp_notify_fifo",
    "vrrp_notify_fifo_script",
    "lvs_notify_fifo",
    "lvs_notify_fifo_script",
    "vrrp_notify_priority_changes",
    "fifo_write_vrrp_states_on_reload",
    "snmp_socket",
    "enable_traps",
    "enable_snmp_vrrp",
    "enable_snmp_rfc",
    "enable_snmp_rfcv2",
    "enable_snmp_rfcv3",
    "enable_snmp_checker",
    "enable_snmp_keepalived",
    "snmp_vs_stats_update_interval",
    "snmp_rs_stats_update_interval",
    "enable_dbus",
    "dbus_service_name",
    "dbus_no_interface_name",
    "script_user",
    "enable_script_security",
    "vrrp_netlink_cmd_rcv_bufs",
    "vrrp_netlink_monitor_rcv_bufs",
    "lvs_netlink_cmd_rcv_bufs",
    "lvs_netlink_monitor_rcv_bufs",
    "process_monitor_rcv_bufs",
    "rs_init_notifies",
    "no_checker_emails",
    "vrrp_rx_bufs_policy",
    "vrrp_rx_bufs_multiplier",
    "vrrp_startup_delay",
    "vrrp_delay_after_boot",
    "log_unknown_vrids",
    "vrrp_owner_ignore_adverts",
    "vmac_prefix",
    "vmac_addr_prefix",
    "umask",
    "random_seed",
    "reload_check_config",
    "reload_time_file",
    "reload_repeat",
    "reload_file",
    "include_check",
    "config_save_dir",
    "tmp_config_directory",
    "data_use_instance",
    "json_version",
    "iproute_usr_dir",
    "iproute_etc_dir",
    "state_dump_file",
    "stats_dump_file",
    "json_dump_file",
];

const VIRTUAL_SERVER: &[&str] = &[
    "ip_family",
    "lvs_sched",
    "lb_algo",
    "hashed",
    "ops",
    "flag-1",
    "flag-2",
    "flag-3",
    "sh-port",
    "sh-fallback",
    "mh-port",
    "mh-fallback",
    "lvs_method",
    "lb_kind",
    "persistence_engine",
    "persistence_timeout",
    "persistence_granularity",
    "protocol",
    "ha_suspend",
    "smtp_alert",
    "virtualhost",
    "snmp_name",
    "alpha",
    "omega",
    "quorum",
    "quorum_up",
    "quorum_down",
    "hysteresis",
    "weight",
    "retry",
    "delay_before_retry",
    "warmup",
    "connect_timeout",
    "delay_loop",
    "inhibit_on_failure",
    "sorry_server",
    "sorry_server_inhibit",
    "sorry_server_lvs_method",
    "real_server",
    "laddr_group_name",
    "tun_type",
    "tun_source",
];

const REAL_SERVER: &[&str] = &[
    "weight",
    "lvs_method",
    "uthreshold",
    "lthreshold",
    "inhibit_on_failure",
    "notify_up",
    "notify_down",
    "alpha",
    "retry",
    "delay_before_retry",
    "warmup",
    "connect_timeout",
    "delay_loop",
    "smtp_alert",
    "virtualhost",
    "snmp_name",
    "TCP_CHECK",
    "HTTP_GET",
    "SSL_GET",
    "MISC_CHECK",
    "SMTP_CHECK",
    "DNS_CHECK",
    "UDP_CHECK",
    "PING_CHECK",
    "FILE_CHECK",
    "BFD_CHECK",
];

const VRRP_INSTANCE: &[&str] = &[
    "state",
    "interface",
    "vrf",
    "use_vmac",
    "use_vmac_addr",
    "vmac_xmit_base",
    "use_ipvlan",
    "native_ipv6",
    "dont_track_primary",
    "track_interface",
    "track_script",
    "track_file",
    "track_process",
    "track_bfd",
    "mcast_src_ip",
    "unicast_src_ip",
    "mcast_dst_ip",
    "track_src_ip",
    "unicast_peer",
    "unicast_fault_no_peer",
    "unicast_ttl",
    "check_unicast_src",
    "old_unicast_checksum",
    "virtual_router_id",
    "version",
    "priority",
    "advert_int",
    "authentication",
    "auth_hmac",
    "virtual_ipaddress",
    "virtual_ipaddress_excluded",
    "no_virtual_ipaddress",
    "virtual_routes",
    "virtual_rules",
    "promote_secondaries",
    "accept",
    "no_accept",
    "preempt",
    "nopreempt",
    "preempt_delay",
    "skip_check_adv_addr",
    "strict_mode",
    "debug",
    "notify_master",
    "notify_backup",
    "notify_fault",
    "notify_stop",
    "notify_deleted",
    "notify_master_rx_lower_pri",
    "notify",
    "smtp_alert",
    "notify_priority_changes",
    "garp_master_delay",
    "garp_master_repeat",
    "garp_master_refresh",
    "garp_master_refresh_repeat",
    "garp_lower_prio_delay",
    "garp_lower_prio_repeat",
    "garp_extra_if",
    "vmac_garp_intvl",
    "down_timer_adverts",
    "timer_expired_backup",
    "thread_timer_expired",
    "lower_prio_no_advert",
    "higher_prio_send_advert",
    "owner_ignore_adverts",
    "kernel_rx_buf_size",
    "v3_checksum_as_v2",
    "linkbeat_use_polling",
    "lvs_sync_daemon_interface",
];

const VRRP_SCRIPT: &[&str] = &[
    "script",
    "interval",
    "timeout",
    "weight",
    "rise",
    "fall",
    "user",
    "init_fail",
];

const VRRP_SYNC_GROUP: &[&str] = &[
    "group",
    "track_interface",
    "track_script",
    "track_file",
    "track_process",
    "track_bfd",
    "notify_master",
    "notify_backup",
    "notify_fault",
    "notify_stop",
    "notify",
    "smtp_alert",
    "global_tracking",
    "sync_group_tracking_weight",
    "notify_priority_changes",
];

const AUTHENTICATION: &[&str] = &["auth_type", "auth_pass"];

/// Every checker's keywords (common and of each kind).
const CHECKER: &[&str] = &[
    "connect_ip",
    "connect_port",
    "bindto",
    "bind_port",
    "bind_if",
    "connect_timeout",
    "fwmark",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "warmup",
    "delay_loop",
    "alpha",
    "log_all_failures",
    "virtualhost",
    "http_protocol",
    "enable_sni",
    "sni_name",
    "fast_recovery",
    "tls_compliant",
    "url",
    "helo_name",
    "host",
    "type",
    "name",
    "payload",
    "require_reply",
    "min_reply_length",
    "max_reply_length",
    "misc_path",
    "misc_timeout",
    "misc_dynamic",
    "user",
    "track_file",
    "weight",
];

const URL: &[&str] = &[
    "path",
    "digest",
    "status_code",
    "virtualhost",
    "regex",
    "regex_no_match",
    "regex_options",
    "regex_min_offset",
    "regex_max_offset",
    "regex_stack",
    "tls_compliant",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slips_find_the_keyword_and_strangers_do_not() {
        assert_eq!(nearest(VIRTUAL_SERVER, "lb_algoo"), Some("lb_algo"));
        assert_eq!(
            nearest(VIRTUAL_SERVER, "persistance_timeout"),
            Some("persistence_timeout")
        );
        assert_eq!(nearest(VIRTUAL_SERVER, "delay_lopo"), Some("delay_loop"));
        assert_eq!(nearest(TOP, "vrrp_instnace"), Some("vrrp_instance"));
        assert_eq!(nearest(REAL_SERVER, "tcp_check"), Some("TCP_CHECK"));
        assert_eq!(nearest(VIRTUAL_SERVER, "frobnicate"), None);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
