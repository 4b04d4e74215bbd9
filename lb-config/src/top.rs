//! The top level of the file: which builder reads each block, in two passes (global_defs,
//! local_address_group and virtual_server_group first, since other blocks depend on them
//! wherever they are written), and the checks across blocks. A `virtual_server group`
//! becomes one service per member of its group, as IPVS has one per member.

use std::{collections::HashSet, net::IpAddr};

use super::{
    Diagnostic, Interfaces, Options,
    addresses::{address_block, route_block},
    checkers::track_file,
    global_defs::global_defs,
    keywords::{Block, not_used},
    local_address, sync_daemon,
    tree::Statement,
    virtual_server::{targets, virtual_server},
    vrrp::{VrrpContext, check_references, vrrp_instance, vrrp_script, vrrp_sync_group},
};
use crate::model::{Config, VirtualServer, check::CheckKind};

/// The most virtual services a configuration may define (group members counted one by
/// one); a data plane may hold fewer and says so when the configuration is applied.
pub const MAX_SERVICES: usize = 65_536;

pub fn build_config(
    statements: &[Statement],
    options: &Options,
    diagnostics: &mut Vec<Diagnostic>,
) -> Config {
    let mut config = Config::default();
    let mut globals = super::global_defs::Globals::default();
    for statement in statements.iter().filter(|s| s.name() == "global_defs") {
        global_defs(statement, &mut config, &mut globals, diagnostics);
    }
    let local_groups = local_address::groups(statements, diagnostics);
    let server_groups = local_address::server_groups(statements, diagnostics);
    config.track_files = statements
        .iter()
        .filter(|s| matches!(s.name(), "track_file" | "vrrp_track_file"))
        .filter_map(|s| track_file(s, diagnostics))
        .collect();
    let interface_exists = |name: &str| match &options.interfaces {
        Interfaces::Unchecked => None,
        Interfaces::Given(names) => Some(names.contains(name)),
        Interfaces::Kernel => Some(interface_exists_here(name)),
    };
    let address_on = |interface: &str, addr: IpAddr| match &options.interfaces {
        Interfaces::Kernel if !interface.is_empty() => Some(address_on_here(interface, addr)),
        _ => None,
    };
    let context = VrrpContext {
        version: globals.vrrp_version,
        strict: globals.vrrp_strict,
        dynamic_interfaces: globals.dynamic_interfaces,
        interface_exists: &interface_exists,
        address_on: &address_on,
    };
    let mut seen = HashSet::new();
    let mut instances = Vec::new();
    let mut groups = Vec::new();
    let mut too_many = false;
    for statement in statements {
        match statement.name() {
            "global_defs"
            | "local_address_group"
            | "virtual_server_group"
            | "track_file"
            | "vrrp_track_file" => {}
            "static_ipaddress" => config
                .static_ipaddress
                .extend(address_block(statement, diagnostics)),
            "static_routes" => config
                .static_routes
                .extend(route_block(statement, diagnostics)),
            "vrrp_script" => config
                .vrrp_scripts
                .extend(vrrp_script(statement, diagnostics)),
            "vrrp_sync_group" => {
                if let Some(group) = vrrp_sync_group(statement, diagnostics) {
                    groups.push((group, statement.location().clone()));
                }
            }
            "vrrp_instance" => {
                let name = statement.args.first().map_or("", |t| t.text.as_str());
                for item in statement.block.as_deref().unwrap_or_default() {
                    if item.name() == "lvs_sync_daemon_interface" {
                        sync_daemon::instance_interface(
                            item,
                            name,
                            &mut globals.sync_daemon,
                            diagnostics,
                        );
                    }
                }
                if let Some(instance) = vrrp_instance(statement, &context, diagnostics) {
                    instances.push((instance, statement.location().clone()));
                }
            }
            "virtual_server" => {
                for target in targets(statement, &server_groups, diagnostics) {
                    if config.virtual_servers.len() >= MAX_SERVICES {
                        if !too_many {
                            diagnostics.push(Diagnostic::error(
                                statement.location(),
                                format!("more than {MAX_SERVICES} virtual services"),
                            ));
                        }
                        too_many = true;
                        break;
                    }
                    let Some(vs) = virtual_server(statement, target, &local_groups, diagnostics)
                    else {
                        continue;
                    };
                    let known = |name: &str| config.track_files.iter().any(|t| t.name == name);
                    if let Some(name) = unknown_track_file(&vs, known) {
                        diagnostics.push(Diagnostic::error(
                            statement.location(),
                            format!(
                                "FILE_CHECK track_file `{name}`: no track_file block of that name"
                            ),
                        ));
                        continue;
                    }
                    if seen.insert((vs.addr, vs.port, vs.protocol, vs.fwmark)) {
                        config.virtual_servers.push(vs);
                    } else {
                        let what = match vs.fwmark {
                            Some(mark) if vs.addr.is_ipv6() => format!("fwmark {mark} (IPv6)"),
                            Some(mark) => format!("fwmark {mark}"),
                            None => format!("{} {} {}", vs.addr, vs.port, vs.protocol.name()),
                        };
                        diagnostics.push(Diagnostic::error(
                            statement.location(),
                            format!("duplicate virtual_server {what}"),
                        ));
                    }
                }
            }
            _ => not_used(statement, Block::Top, diagnostics),
        }
    }
    check_references(&instances, &config.vrrp_scripts, &groups, diagnostics);
    config.vrrp_instances = instances.into_iter().map(|(i, _)| i).collect();
    config.lvs_sync_daemon =
        sync_daemon::resolve(globals.sync_daemon, &config.vrrp_instances, diagnostics);
    config.vrrp_sync_groups = groups.into_iter().map(|(g, _)| g).collect();
    config
}

/// The first FILE_CHECK track_file name of `vs` that `known` does not know.
fn unknown_track_file(vs: &VirtualServer, known: impl Fn(&str) -> bool) -> Option<String> {
    vs.reals
        .iter()
        .flat_map(|real| &real.checkers)
        .find_map(|checker| match &checker.kind {
            CheckKind::File { track_file, .. } if !known(track_file) => Some(track_file.clone()),
            _ => None,
        })
}

/// Whether this machine has an interface named `name`.
fn interface_exists_here(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// Whether `addr` is assigned to the interface `name` of this machine.
fn address_on_here(name: &str, addr: IpAddr) -> bool {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head to `list` on success; freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return false;
    }
    let mut found = false;
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, not yet freed.
        let node = unsafe { &*entry };
        entry = node.ifa_next;
        if node.ifa_addr.is_null() || node.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name owned by the list.
        let interface = unsafe { std::ffi::CStr::from_ptr(node.ifa_name) };
        if interface.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says its full type.
        let here = unsafe {
            match i32::from((*node.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(node.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::from(
                        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                    ))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(node.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            }
        };
        found |= here == Some(addr);
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{Interfaces, Options, parse_with};

    /// Warnings of `text` read against this machine's interfaces.
    fn warnings_here(text: &str) -> Vec<String> {
        let options = Options {
            config_id: "t".into(),
            strict: false,
            interfaces: Interfaces::Kernel,
            follow_includes: false,
        };
        let loaded = parse_with(text, Path::new("k.conf"), &options).expect("valid");
        loaded.warnings.iter().map(|w| w.message.clone()).collect()
    }

    #[test]
    fn file_checks_name_a_track_file_block() {
        let vs = "virtual_server 192.0.2.1 80 {\n lb_kind DR\n protocol TCP\n real_server 10.0.0.1 80 {\n  FILE_CHECK {\n   track_file w\n  }\n }\n}\n";
        let errors = match crate::parse(vs, Path::new("k.conf")) {
            Err(crate::ConfigError::Invalid { errors, .. }) => errors,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            errors[0].to_string(),
            "k.conf:1: error: FILE_CHECK track_file `w`: no track_file block of that name"
        );
        let text = format!("vrrp_track_file w {{\n file /run/w\n weight -3 reverse\n}}\n{vs}");
        let loaded = crate::parse(&text, Path::new("k.conf")).expect("valid");
        let track = &loaded.config.track_files[0];
        assert_eq!(
            (
                track.name.as_str(),
                track.file.as_str(),
                track.weight,
                track.reverse
            ),
            ("w", "/run/w", -3, true)
        );
        assert!(
            loaded.warnings[0]
                .message
                .contains("`vrrp_track_file` is deprecated")
        );
    }

    #[test]
    fn script_user_and_security_are_read() {
        let read = |text: &str| crate::parse(text, Path::new("k.conf")).map(|l| l.config);
        let config =
            read("global_defs {\n script_user nobody nogroup\n enable_script_security\n}\n")
                .unwrap();
        assert_eq!(
            config.script_user,
            Some(("nobody".into(), Some("nogroup".into())))
        );
        assert!(config.script_security);
        assert!(read("global_defs {\n script_user\n}\n").is_err());
    }

    #[test]
    fn priority_255_is_checked_against_the_addresses_here() {
        let instance = |vip: &str| {
            format!(
                "vrrp_instance VI_1 {{\n interface lo\n virtual_router_id 9\n priority 255\n virtual_ipaddress {{\n  {vip}\n }}\n}}\n"
            )
        };
        // Every machine has 127.0.0.1 on lo: the owner.
        assert!(warnings_here(&instance("127.0.0.1")).is_empty());
        assert_eq!(
            warnings_here(&instance("192.0.2.77")),
            [
                "vrrp_instance VI_1: priority 255 is for the address owner, but 192.0.2.77 is not on lo here"
            ]
        );
    }
}
