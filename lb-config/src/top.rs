//! The top level of the file: which builder reads each block, in two passes (global_defs,
//! local_address_group and virtual_server_group first, since other blocks depend on them
//! wherever they are written), and the checks across blocks. A `virtual_server group`
//! becomes one service per member of its group, as IPVS has one per member.

use std::collections::HashSet;

use super::{
    Diagnostic, Interfaces, Options,
    addresses::{address_block, route_block},
    global_defs::global_defs,
    keywords::{Block, not_used},
    local_address,
    tree::Statement,
    virtual_server::{targets, virtual_server},
    vrrp::{VrrpContext, check_references, vrrp_instance, vrrp_script, vrrp_sync_group},
};
use crate::model::Config;

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
    let interface_exists = |name: &str| match &options.interfaces {
        Interfaces::Unchecked => None,
        Interfaces::Given(names) => Some(names.contains(name)),
        Interfaces::Kernel => Some(interface_exists_here(name)),
    };
    let context = VrrpContext {
        version: globals.vrrp_version,
        strict: globals.vrrp_strict,
        dynamic_interfaces: globals.dynamic_interfaces,
        interface_exists: &interface_exists,
    };
    let mut seen = HashSet::new();
    let mut instances = Vec::new();
    let mut groups = Vec::new();
    let mut too_many = false;
    for statement in statements {
        match statement.name() {
            "global_defs" | "local_address_group" | "virtual_server_group" => {}
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
                    if seen.insert((vs.addr, vs.port, vs.protocol)) {
                        config.virtual_servers.push(vs);
                    } else {
                        diagnostics.push(Diagnostic::error(
                            statement.location(),
                            format!(
                                "duplicate virtual_server {} {} {}",
                                vs.addr,
                                vs.port,
                                vs.protocol.name()
                            ),
                        ));
                    }
                }
            }
            _ => not_used(statement, Block::Top, diagnostics),
        }
    }
    check_references(&instances, &config.vrrp_scripts, &groups, diagnostics);
    config.vrrp_instances = instances.into_iter().map(|(i, _)| i).collect();
    config.vrrp_sync_groups = groups.into_iter().map(|(g, _)| g).collect();
    config
}

/// Whether this machine has an interface named `name`.
fn interface_exists_here(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}
