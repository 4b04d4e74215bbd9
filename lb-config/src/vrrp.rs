//! The VRRP blocks: `vrrp_script`, `vrrp_sync_group` and `vrrp_instance` into the model,
//! with keepalived's defaults and its checks (VRID 1..=255, priority 1..=255, an
//! interface that exists, at least one VIP of one family, an authentication password of at
//! most 8 characters, tracked scripts and grouped instances that exist).

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use super::{
    Diagnostic, Location,
    addresses::{address_block, route_block},
    keywords::{Block, not_used},
    tree::Statement,
    values::{
        addr_arg, no_value, optional_bool, parse_addr, parse_in_range, parse_seconds,
        parse_seconds_or_zero, rest_of_line, single_arg, weight_args,
    },
};
use crate::model::vrrp::{
    AuthType, Authentication, InitialState, Notify, Track, VrrpInstance, VrrpScript, VrrpSyncGroup,
};

/// keepalived's defaults.
const DEFAULT_PRIORITY: u8 = 100;
const OWNER_PRIORITY: u8 = 255;
const DEFAULT_ADVERT_INT: Duration = Duration::from_secs(1);
const DEFAULT_GARP_DELAY: Duration = Duration::from_secs(5);
const DEFAULT_GARP_REPEAT: u32 = 5;
const MAX_AUTH_PASS: usize = 8;

/// What global_defs says about VRRP, and what the machine has.
pub struct VrrpContext<'a> {
    /// global `vrrp_version`.
    pub version: Option<u8>,
    /// global `vrrp_strict`.
    pub strict: bool,
    /// global `dynamic_interfaces`: a missing interface is expected (no warning).
    pub dynamic_interfaces: bool,
    /// Whether an interface exists here (`None`: not checked).
    pub interface_exists: &'a dyn Fn(&str) -> Option<bool>,
    /// Whether an address is assigned to an interface here (`None`: not checked).
    pub address_on: &'a dyn Fn(&str, IpAddr) -> Option<bool>,
}

/// `vrrp_script NAME { ... }`.
pub fn vrrp_script(statement: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Option<VrrpScript> {
    let name = block_name(statement, diagnostics)?;
    let mut script = None;
    let mut interval = Duration::from_secs(1);
    let mut timeout = None;
    let (mut weight, mut reverse) = (0, false);
    let (mut rise, mut fall) = (1, 1);
    let mut user = None;
    let mut init_fail = false;
    let mut ok = true;
    for item in statement.block.as_deref().unwrap_or_default() {
        let location = item.location();
        match item.name() {
            "script" => script = rest_of_line(item, diagnostics),
            "interval" => match single_arg(item, diagnostics)
                .and_then(|v| parse_seconds(v, location, diagnostics))
            {
                Some(d) => interval = d,
                None => ok = false,
            },
            "timeout" => match single_arg(item, diagnostics)
                .and_then(|v| parse_seconds(v, location, diagnostics))
            {
                Some(d) => timeout = Some(d),
                None => ok = false,
            },
            "weight" => match weight_args(item, diagnostics) {
                Some((w, r)) => (weight, reverse) = (w, r),
                None => ok = false,
            },
            "rise" => rise = parse_in_range(item, 1..=u32::MAX, diagnostics).unwrap_or(rise),
            "fall" => fall = parse_in_range(item, 1..=u32::MAX, diagnostics).unwrap_or(fall),
            "user" => user = item.args.first().map(|t| t.text.clone()),
            "init_fail" => init_fail = no_value(item, diagnostics),
            _ => not_used(item, Block::VrrpScript, diagnostics),
        }
    }
    let Some(script) = script else {
        // keepalived removes it, and the instances tracking it ignore it.
        diagnostics.push(Diagnostic::warning(
            statement.location(),
            format!("vrrp_script {name} has no `script`; removed, as keepalived does"),
        ));
        return None;
    };
    ok.then(|| VrrpScript {
        name,
        script,
        interval,
        timeout: timeout.unwrap_or(interval),
        weight,
        reverse,
        rise,
        fall,
        user,
        init_fail,
    })
}

/// `vrrp_sync_group NAME { group { ... } ... }`.
pub fn vrrp_sync_group(
    statement: &Statement,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<VrrpSyncGroup> {
    let name = block_name(statement, diagnostics)?;
    let mut group = VrrpSyncGroup {
        name,
        group: Vec::new(),
        track_interface: Vec::new(),
        track_script: Vec::new(),
        notify: Notify::default(),
        smtp_alert: None,
    };
    for item in statement.block.as_deref().unwrap_or_default() {
        match item.name() {
            "group" => group.group = lines(item).map(|line| line.name().to_owned()).collect(),
            "track_interface" => group.track_interface = tracks(item, diagnostics),
            "track_script" => group.track_script = tracks(item, diagnostics),
            "smtp_alert" => group.smtp_alert = optional_bool(item, diagnostics),
            keyword if notify(&mut group.notify, keyword, item, diagnostics) => {}
            _ => not_used(item, Block::VrrpSyncGroup, diagnostics),
        }
    }
    if group.group.is_empty() {
        // keepalived drops a group without members and runs its instances on their own.
        diagnostics.push(Diagnostic::warning(
            statement.location(),
            format!(
                "vrrp_sync_group {} has no `group {{ ... }}` of instances; ignored, as keepalived does",
                group.name
            ),
        ));
        return None;
    }
    Some(group)
}

/// `vrrp_instance NAME { ... }`.
pub fn vrrp_instance(
    statement: &Statement,
    context: &VrrpContext,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<VrrpInstance> {
    let location = statement.location();
    let name = block_name(statement, diagnostics)?;
    let mut instance = VrrpInstance {
        name,
        initial_state: InitialState::Backup,
        interface: String::new(),
        vrid: 0,
        priority: DEFAULT_PRIORITY,
        advert_int: DEFAULT_ADVERT_INT,
        version: 2,
        authentication: None,
        virtual_ipaddress: Vec::new(),
        virtual_ipaddress_excluded: Vec::new(),
        virtual_routes: Vec::new(),
        track_interface: Vec::new(),
        track_script: Vec::new(),
        unicast_src_ip: None,
        unicast_peer: Vec::new(),
        mcast_src_ip: None,
        preempt: true,
        preempt_delay: Duration::ZERO,
        garp_master_delay: DEFAULT_GARP_DELAY,
        garp_master_repeat: DEFAULT_GARP_REPEAT,
        garp_master_refresh: None,
        garp_master_refresh_repeat: 1,
        notify: Notify::default(),
        use_vmac: None,
        vmac_xmit_base: false,
        accept: !context.strict,
        dont_track_primary: false,
        smtp_alert: None,
        strict_mode: context.strict,
    };
    let (mut interface, mut vrid, mut priority, mut version) = (None, None, None, None);
    let mut accept = None;
    let mut ok = true;
    for item in statement.block.as_deref().unwrap_or_default() {
        let at = item.location();
        let seconds = |item: &Statement, diagnostics: &mut Vec<Diagnostic>| {
            single_arg(item, diagnostics).and_then(|v| parse_seconds_or_zero(v, at, diagnostics))
        };
        match item.name() {
            "state" => match single_arg(item, diagnostics) {
                Some("MASTER") => instance.initial_state = InitialState::Master,
                Some("BACKUP") => instance.initial_state = InitialState::Backup,
                Some(other) => {
                    diagnostics.push(Diagnostic::error(
                        at,
                        format!("state `{other}` is neither MASTER nor BACKUP"),
                    ));
                    ok = false;
                }
                None => ok = false,
            },
            "interface" => {
                interface = single_arg(item, diagnostics).map(|i| (i.to_owned(), at.clone()))
            }
            "virtual_router_id" => {
                vrid = parse_in_range(item, 1..=255u8, diagnostics).or_else(|| {
                    ok = false;
                    None
                })
            }
            "priority" => {
                priority = parse_in_range(item, 1..=255u8, diagnostics).or_else(|| {
                    ok = false;
                    None
                })
            }
            "advert_int" => match seconds(item, diagnostics) {
                Some(d) if !d.is_zero() => instance.advert_int = d,
                _ => ok = false,
            },
            "version" => {
                version = parse_in_range(item, 2..=3u8, diagnostics).or_else(|| {
                    ok = false;
                    None
                })
            }
            "authentication" => instance.authentication = authentication(item, diagnostics),
            "virtual_ipaddress" => instance.virtual_ipaddress = address_block(item, diagnostics),
            "virtual_ipaddress_excluded" => {
                instance.virtual_ipaddress_excluded = address_block(item, diagnostics)
            }
            "virtual_routes" => instance.virtual_routes = route_block(item, diagnostics),
            "track_interface" => instance.track_interface = tracks(item, diagnostics),
            "track_script" => instance.track_script = tracks(item, diagnostics),
            "unicast_src_ip" => instance.unicast_src_ip = addr_arg(item, diagnostics),
            "mcast_src_ip" => instance.mcast_src_ip = addr_arg(item, diagnostics),
            "unicast_peer" => {
                instance.unicast_peer = lines(item)
                    .filter_map(|line| parse_addr(line.name(), line.location(), diagnostics))
                    .collect()
            }
            "nopreempt" => instance.preempt = !no_value(item, diagnostics),
            "preempt" => instance.preempt = no_value(item, diagnostics),
            "preempt_delay" => {
                instance.preempt_delay = seconds(item, diagnostics).unwrap_or_default()
            }
            "garp_master_delay" => {
                instance.garp_master_delay =
                    seconds(item, diagnostics).unwrap_or(DEFAULT_GARP_DELAY)
            }
            "garp_master_repeat" => {
                instance.garp_master_repeat =
                    parse_in_range(item, 1..=u32::MAX, diagnostics).unwrap_or(DEFAULT_GARP_REPEAT)
            }
            "garp_master_refresh" => {
                instance.garp_master_refresh = seconds(item, diagnostics).filter(|d| !d.is_zero())
            }
            "garp_master_refresh_repeat" => {
                instance.garp_master_refresh_repeat =
                    parse_in_range(item, 1..=u32::MAX, diagnostics).unwrap_or(1)
            }
            "use_vmac" => {
                instance.use_vmac = Some(
                    item.args
                        .first()
                        .map(|t| t.text.clone())
                        .unwrap_or_default(),
                )
            }
            "vmac_xmit_base" => instance.vmac_xmit_base = no_value(item, diagnostics),
            "accept" => accept = Some(no_value(item, diagnostics)),
            "no_accept" => accept = Some(!no_value(item, diagnostics)),
            "dont_track_primary" => instance.dont_track_primary = no_value(item, diagnostics),
            "smtp_alert" => instance.smtp_alert = optional_bool(item, diagnostics),
            "strict_mode" => match item.args.first().map(|t| t.text.as_str()) {
                None | Some("on" | "true" | "yes") => instance.strict_mode = true,
                Some("off" | "false" | "no") => instance.strict_mode = false,
                Some(other) => diagnostics.push(Diagnostic::error(
                    at,
                    format!("strict_mode `{other}` is not on|off|true|false|yes|no"),
                )),
            },
            keyword if notify(&mut instance.notify, keyword, item, diagnostics) => {}
            // Read with the global sync settings (`sync_daemon::instance_interface`).
            "lvs_sync_daemon_interface" => {}
            _ => not_used(item, Block::VrrpInstance, diagnostics),
        }
    }

    let name = instance.name.clone();
    // Unicast-only instances may go without an interface (the route to the peers gives
    // it); everything else needs one.
    let (interface, interface_at) = match interface {
        Some(found) => found,
        None if instance.unicast_src_ip.is_some() => (String::new(), location.clone()),
        None => {
            diagnostics.push(Diagnostic::error(
                location,
                format!("vrrp_instance {name} needs `interface` (or unicast_src_ip)"),
            ));
            return None;
        }
    };
    instance.interface = interface;
    // Every check runs, so that one -t lists every problem of the instance.
    check_interfaces(&instance, &interface_at, context, diagnostics);
    check_addresses(&mut instance, location, diagnostics);
    match vrid {
        Some(vrid) => instance.vrid = vrid,
        None if ok => {
            diagnostics.push(Diagnostic::error(
                location,
                format!("vrrp_instance {name} needs `virtual_router_id` (1..=255)"),
            ));
            ok = false;
        }
        None => {}
    }
    instance.priority = match (priority, instance.initial_state) {
        (Some(p), _) => p,
        // keepalived: MASTER without a priority is the address owner.
        (None, InitialState::Master) => OWNER_PRIORITY,
        (None, InitialState::Backup) => DEFAULT_PRIORITY,
    };
    // keepalived: the address owner starts as MASTER whatever `state` says.
    if instance.priority == OWNER_PRIORITY {
        instance.initial_state = InitialState::Master;
    }
    // Priority 255 says "I own the addresses" (RFC 5798 section 5.2.4): it preempts at
    // once, whatever the other routers say. Written on a router that does not hold them,
    // it is a mistake.
    if priority == Some(OWNER_PRIORITY) {
        let missing: Vec<String> = instance
            .virtual_ipaddress
            .iter()
            .filter(|vip| (context.address_on)(&instance.interface, vip.addr) == Some(false))
            .map(|vip| vip.addr.to_string())
            .collect();
        if !missing.is_empty() {
            diagnostics.push(Diagnostic::warning(
                location,
                format!(
                    "vrrp_instance {name}: priority 255 is for the address owner, but {} is not on {} here",
                    missing.join(", "),
                    instance.interface
                ),
            ));
        }
    }
    let ipv6 = instance
        .virtual_ipaddress
        .first()
        .is_some_and(|a| a.addr.is_ipv6());
    // VRRP for IPv6 is version 3 whatever is asked.
    instance.version = if ipv6 {
        if version == Some(2) {
            diagnostics.push(Diagnostic::warning(
                location,
                format!("vrrp_instance {name}: VRRP for IPv6 is version 3; `version 2` ignored"),
            ));
        }
        3
    } else {
        version.or(context.version).unwrap_or(2)
    };
    let (advert_int, fitted) = crate::advert_int::fit(instance.version, instance.advert_int);
    if let Some(warning) = fitted {
        diagnostics.push(Diagnostic::warning(
            location,
            format!("vrrp_instance {name}: {warning}"),
        ));
    }
    instance.advert_int = advert_int;
    // keepalived: accept mode for the owner, else unless strict.
    instance.accept =
        accept.unwrap_or(instance.priority == OWNER_PRIORITY || !instance.strict_mode);
    drop_unusable_authentication(&mut instance, ipv6, location, diagnostics);
    // keepalived: AH needs an advert's sequence number before taking over, so a
    // non-owner starts as BACKUP.
    if instance
        .authentication
        .as_ref()
        .is_some_and(|a| a.auth_type == AuthType::Ah)
        && instance.initial_state == InitialState::Master
        && instance.priority != OWNER_PRIORITY
    {
        diagnostics.push(Diagnostic::warning(
            location,
            format!(
                "vrrp_instance {}: initial state MASTER does not go with AH authentication; it starts as BACKUP, as keepalived does",
                instance.name
            ),
        ));
        instance.initial_state = InitialState::Backup;
    }
    ok &= check_vips(&instance, location, diagnostics);
    // Adverts to unicast peers cannot leave through the macvlan; keepalived sends them
    // from the base interface, and says so.
    if instance.use_vmac.is_some() && !instance.unicast_peer.is_empty() && !instance.vmac_xmit_base
    {
        diagnostics.push(Diagnostic::warning(
            location,
            format!("vrrp_instance {name}: unicast with use_vmac needs vmac_xmit_base; set, as keepalived does"),
        ));
        instance.vmac_xmit_base = true;
    }
    ok.then_some(instance)
}

/// Authentication keepalived ignores: with VRRPv3 or strict mode (RFC 5798 has none),
/// without a password, or AH over IPv6.
fn drop_unusable_authentication(
    instance: &mut VrrpInstance,
    ipv6: bool,
    location: &Location,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let Some(auth) = &instance.authentication else {
        return;
    };
    let reason = if instance.version == 3 {
        "VRRPv3 has no authentication"
    } else if instance.strict_mode {
        "strict mode allows no authentication"
    } else if auth.auth_pass.is_empty() {
        "it has no auth_pass"
    } else if ipv6 && auth.auth_type == AuthType::Ah {
        "AH is for IPv4"
    } else {
        return;
    };
    instance.authentication = None;
    diagnostics.push(Diagnostic::warning(
        location,
        format!(
            "vrrp_instance {}: {reason}; `authentication` ignored",
            instance.name
        ),
    ));
}

/// An instance without VIPs: an error with VRRPv3 or strict mode, a warning otherwise, as
/// in keepalived.
fn check_vips(
    instance: &VrrpInstance,
    location: &Location,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    if !instance.virtual_ipaddress.is_empty() {
        return true;
    }
    let message = format!("vrrp_instance {} has no virtual_ipaddress", instance.name);
    if instance.version == 3 || instance.strict_mode {
        diagnostics.push(Diagnostic::error(
            location,
            format!("{message} (VRRPv3 and strict mode need one)"),
        ));
        false
    } else {
        diagnostics.push(Diagnostic::warning(location, message));
        true
    }
}

/// VIPs and unicast addresses of one family (the first VIP's); the others are ignored
/// with a warning, as keepalived does.
fn check_addresses(
    instance: &mut VrrpInstance,
    location: &Location,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let name = instance.name.clone();
    let Some(first) = instance.virtual_ipaddress.first() else {
        return;
    };
    let ipv4 = first.addr.is_ipv4();
    let family = |v4: bool| if v4 { "IPv4" } else { "IPv6" };
    instance.virtual_ipaddress.retain(|vip| {
        let kept = vip.addr.is_ipv4() == ipv4;
        if !kept {
            diagnostics.push(Diagnostic::warning(
                location,
                format!(
                    "vrrp_instance {name}: VIP {} is not {} like the first VIP; ignored, as keepalived does (put it in virtual_ipaddress_excluded or another instance)",
                    vip.addr,
                    family(ipv4)
                ),
            ));
        }
        kept
    });
    let mut ignore = |what: &str, addr: IpAddr| {
        diagnostics.push(Diagnostic::warning(
            location,
            format!(
                "vrrp_instance {name}: {what} {addr} is not {} like the VIPs; ignored, as keepalived does",
                family(ipv4)
            ),
        ));
    };
    instance.unicast_peer.retain(|peer| {
        let kept = peer.is_ipv4() == ipv4;
        if !kept {
            ignore("unicast_peer", *peer);
        }
        kept
    });
    if let Some(source) = instance.unicast_src_ip
        && source.is_ipv4() != ipv4
    {
        ignore("unicast_src_ip", source);
        instance.unicast_src_ip = None;
    }
}

/// The interface, the tracked interfaces and the VIPs' devices: a warning for each that
/// does not exist here (unless `dynamic_interfaces`, or when nobody can tell).
fn check_interfaces(
    instance: &VrrpInstance,
    at: &Location,
    context: &VrrpContext,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let names: BTreeSet<&str> = std::iter::once(instance.interface.as_str())
        .chain(instance.track_interface.iter().map(|t| t.name.as_str()))
        .chain(
            instance
                .virtual_ipaddress
                .iter()
                .chain(&instance.virtual_ipaddress_excluded)
                .filter_map(|a| a.dev.as_deref()),
        )
        .collect();
    for name in names {
        if (context.interface_exists)(name) == Some(false) {
            // keepalived starts anyway; the instance is in FAULT until the interface
            // comes. With dynamic_interfaces that is expected, and nothing is said.
            if context.dynamic_interfaces {
                continue;
            }
            diagnostics.push(Diagnostic::warning(
                at,
                format!(
                    "vrrp_instance {}: interface {name} does not exist on this machine; {}",
                    instance.name,
                    if name == instance.interface {
                        "the instance waits in FAULT until it appears"
                    } else {
                        "it counts as down until it appears"
                    }
                ),
            ));
        }
    }
}

/// Cross-block checks once everything is read: tracked scripts and grouped instances
/// that exist, instance names and (interface, VRID, family) used once.
pub fn check_references(
    instances: &[(VrrpInstance, Location)],
    scripts: &[VrrpScript],
    groups: &[(VrrpSyncGroup, Location)],
    diagnostics: &mut Vec<Diagnostic>,
) {
    let script_names: BTreeSet<&str> = scripts.iter().map(|s| s.name.as_str()).collect();
    let mut names = BTreeSet::new();
    let mut vrids = BTreeSet::new();
    for (instance, at) in instances {
        if !names.insert(instance.name.as_str()) {
            diagnostics.push(Diagnostic::error(
                at,
                format!("duplicate vrrp_instance {}", instance.name),
            ));
        }
        let ipv6 = instance
            .virtual_ipaddress
            .first()
            .is_some_and(|a| a.addr.is_ipv6());
        if !vrids.insert((instance.interface.as_str(), instance.vrid, ipv6)) {
            diagnostics.push(Diagnostic::error(
                at,
                format!(
                    "vrrp_instance {}: virtual_router_id {} is already used on {}",
                    instance.name, instance.vrid, instance.interface
                ),
            ));
        }
        for track in &instance.track_script {
            if !script_names.contains(track.name.as_str()) {
                diagnostics.push(Diagnostic::warning(
                    at,
                    format!(
                        "vrrp_instance {}: track_script {}: no vrrp_script of that name; ignored",
                        instance.name, track.name
                    ),
                ));
            }
        }
    }
    for (group, at) in groups {
        for member in &group.group {
            if !names.contains(member.as_str()) {
                diagnostics.push(Diagnostic::warning(
                    at,
                    format!(
                        "vrrp_sync_group {}: no vrrp_instance {member}; ignored",
                        group.name
                    ),
                ));
            }
        }
    }
}

/// The name of a `KEYWORD NAME { ... }` block.
fn block_name(statement: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Option<String> {
    match statement.args.as_slice() {
        [name] => Some(name.text.clone()),
        _ => {
            diagnostics.push(Diagnostic::error(
                statement.location(),
                format!(
                    "{} needs a name: `{} NAME {{`",
                    statement.name(),
                    statement.name()
                ),
            ));
            None
        }
    }
}

/// The lines of a block written one value per line.
fn lines(item: &Statement) -> impl Iterator<Item = &Statement> {
    item.block.as_deref().unwrap_or_default().iter()
}

/// `NAME [weight W [reverse]]` lines.
fn tracks(item: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Vec<Track> {
    lines(item)
        .filter_map(|line| {
            let weight = match line.args.first().map(|t| t.text.as_str()) {
                None => Some((None, false)),
                Some("weight") => weight_args(line, diagnostics).map(|(w, r)| (Some(w), r)),
                Some(other) => {
                    diagnostics.push(Diagnostic::error(
                        line.location(),
                        format!(
                            "`{other}`: expected `weight N [reverse]` after {}",
                            line.name()
                        ),
                    ));
                    None
                }
            };
            weight.map(|(weight, reverse)| Track {
                name: line.name().to_owned(),
                weight,
                reverse,
            })
        })
        .collect()
}

/// `authentication { auth_type PASS|AH auth_pass SECRET }`.
fn authentication(item: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Option<Authentication> {
    let mut auth_type = None;
    let mut auth_pass = None;
    for line in lines(item) {
        match line.name() {
            "auth_type" => match single_arg(line, diagnostics) {
                Some("PASS") => auth_type = Some(AuthType::Pass),
                Some("AH") => auth_type = Some(AuthType::Ah),
                Some(other) => diagnostics.push(Diagnostic::error(
                    line.location(),
                    format!("auth_type `{other}` is neither PASS nor AH"),
                )),
                None => {}
            },
            "auth_pass" => {
                if let Some(pass) = single_arg(line, diagnostics) {
                    let mut pass = pass.to_owned();
                    if pass.chars().count() > MAX_AUTH_PASS {
                        pass = pass.chars().take(MAX_AUTH_PASS).collect();
                        diagnostics.push(Diagnostic::warning(
                            line.location(),
                            format!("auth_pass is longer than {MAX_AUTH_PASS} characters; truncated to `{pass}`, as keepalived does"),
                        ));
                    }
                    auth_pass = Some(pass);
                }
            }
            _ => not_used(line, Block::Authentication, diagnostics),
        }
    }
    match (auth_type, auth_pass) {
        (Some(auth_type), Some(auth_pass)) => Some(Authentication {
            auth_type,
            auth_pass,
        }),
        // Without a password keepalived ignores it (`drop_unusable_authentication`).
        (Some(auth_type), None) => Some(Authentication {
            auth_type,
            auth_pass: String::new(),
        }),
        _ => {
            diagnostics.push(Diagnostic::error(
                item.location(),
                "authentication needs `auth_type PASS|AH`",
            ));
            None
        }
    }
}

/// A `notify*` keyword into `notify`; whether it was one.
fn notify(
    notify: &mut Notify,
    keyword: &str,
    item: &Statement,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    let slot = match keyword {
        "notify_master" => &mut notify.master,
        "notify_backup" => &mut notify.backup,
        "notify_fault" => &mut notify.fault,
        "notify_stop" => &mut notify.stop,
        "notify" => &mut notify.any,
        _ => return false,
    };
    *slot = rest_of_line(item, diagnostics);
    true
}
