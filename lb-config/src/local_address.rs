//! The address groups: `local_address_group NAME { ... }`, the FullNAT local address pools
//! of keepalived's FullNAT fork, named by a virtual_server's `laddr_group_name`, and
//! `virtual_server_group NAME { ADDR PORT ... fwmark N ... }`, named by `virtual_server
//! group NAME`.
//! An address may be a range that varies the last part: `192.0.2.10-20` (last byte,
//! decimal) or `2001:db8::10-1f` (last 16-bit group, hexadecimal), as keepalived reads
//! `virtual_server_group`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{Diagnostic, Location, tree::Statement, virtual_server::Target};

/// Most addresses one range may expand to.
const MAX_RANGE: u32 = 256;

/// A group's addresses, in file order without repeats, and where it was defined.
#[derive(Clone, Debug)]
pub struct LocalAddressGroup {
    pub addresses: Vec<IpAddr>,
    pub location: Location,
}

/// Every `local_address_group` among the top-level statements, by name.
pub fn groups(
    statements: &[Statement],
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<String, LocalAddressGroup> {
    let mut groups = BTreeMap::new();
    for statement in statements
        .iter()
        .filter(|s| s.name() == "local_address_group")
    {
        let location = statement.location();
        let [name] = statement.args.as_slice() else {
            diagnostics.push(Diagnostic::error(
                location,
                "local_address_group needs a name: `local_address_group NAME {`",
            ));
            continue;
        };
        let mut addresses = Vec::new();
        for item in statement.block.as_deref().unwrap_or_default() {
            if !item.args.is_empty() || item.block.is_some() {
                diagnostics.push(Diagnostic::error(
                    item.location(),
                    "a local_address_group line is one address or range (such as 192.0.2.10-20)",
                ));
                continue;
            }
            match expand(item.name()) {
                Ok(expanded) => {
                    for addr in expanded {
                        if !addresses.contains(&addr) {
                            addresses.push(addr);
                        }
                    }
                }
                Err(message) => diagnostics.push(Diagnostic::error(item.location(), message)),
            }
        }
        if addresses.is_empty() {
            diagnostics.push(Diagnostic::error(
                location,
                format!("local_address_group {} has no address", name.text),
            ));
        }
        let group = LocalAddressGroup {
            addresses,
            location: location.clone(),
        };
        if let Some(earlier) = groups.insert(name.text.clone(), group) {
            diagnostics.push(Diagnostic::error(
                location,
                format!(
                    "duplicate local_address_group {} (first defined at line {})",
                    name.text, earlier.location.line
                ),
            ));
        }
    }
    groups
}

/// The most members one virtual_server_group may have (each becomes a service).
pub const MAX_GROUP_MEMBERS: usize = 65_536;

/// Every `virtual_server_group` among the top-level statements: its members, by name.
/// A member is `ADDRESS[-LAST] PORT` or `fwmark N`; each becomes a service of the
/// `virtual_server group NAME` block.
pub fn server_groups(
    statements: &[Statement],
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Vec<Target>> {
    let mut groups = BTreeMap::new();
    for statement in statements
        .iter()
        .filter(|s| s.name() == "virtual_server_group")
    {
        let location = statement.location();
        let [name] = statement.args.as_slice() else {
            diagnostics.push(Diagnostic::error(
                location,
                "virtual_server_group needs a name: `virtual_server_group NAME {`",
            ));
            continue;
        };
        let mut members = Vec::new();
        for item in statement.block.as_deref().unwrap_or_default() {
            let at = item.location();
            match (item.name(), item.args.as_slice()) {
                ("fwmark", [mark]) => match mark.text.parse::<u32>() {
                    // IPVS has no service for mark 0 (unmarked packets).
                    Ok(mark @ 1..) => members.push(Target::Fwmark(mark)),
                    _ => diagnostics.push(Diagnostic::error(
                        at,
                        format!(
                            "virtual_server_group {}: fwmark `{}` is not a firewall mark (1..={})",
                            name.text,
                            mark.text,
                            u32::MAX
                        ),
                    )),
                },
                (range, [port]) => {
                    let port = super::values::parse_port(&port.text, at, diagnostics);
                    match (expand(range), port) {
                        (Ok(addrs), Some(_)) if members.len() + addrs.len() > MAX_GROUP_MEMBERS => {
                            diagnostics.push(Diagnostic::error(
                                at,
                                format!("virtual_server_group {} has more than {MAX_GROUP_MEMBERS} members", name.text),
                            ));
                            break;
                        }
                        (Ok(addrs), Some(port)) => {
                            members.extend(addrs.into_iter().map(|a| Target::Address(a, port)))
                        }
                        (Err(message), _) => diagnostics.push(Diagnostic::error(at, message)),
                        _ => {}
                    }
                }
                _ => diagnostics.push(Diagnostic::error(
                    at,
                    "a virtual_server_group line is `ADDRESS[-LAST] PORT` (lbd needs the port)",
                )),
            }
        }
        if groups.insert(name.text.clone(), members).is_some() {
            diagnostics.push(Diagnostic::error(
                location,
                format!("duplicate virtual_server_group {}", name.text),
            ));
        }
    }
    groups
}

/// The addresses of one line: an address, or a range of its last part.
fn expand(text: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(vec![addr]);
    }
    let not_range =
        || format!("`{text}` is not an address or an address range (such as 192.0.2.10-20)");
    let (first, last) = text.rsplit_once('-').ok_or_else(not_range)?;
    match first.parse::<IpAddr>().map_err(|_| not_range())? {
        IpAddr::V4(first) => {
            let start = u32::from(first.octets()[3]);
            let end: u32 = last.parse().map_err(|_| not_range())?;
            check_range(text, start, end, 255)?;
            let base = u32::from(first) & !0xFF;
            Ok((start..=end)
                .map(|low| IpAddr::V4(Ipv4Addr::from(base | low)))
                .collect())
        }
        IpAddr::V6(first) => {
            let start = u32::from(first.segments()[7]);
            let end = u32::from_str_radix(last, 16).map_err(|_| not_range())?;
            check_range(text, start, end, 0xFFFF)?;
            Ok((start..=end)
                .map(|low| {
                    let mut segments = first.segments();
                    segments[7] = low as u16;
                    IpAddr::V6(Ipv6Addr::from(segments))
                })
                .collect())
        }
    }
}

fn check_range(text: &str, start: u32, end: u32, max: u32) -> Result<(), String> {
    if end > max || end < start {
        return Err(format!(
            "range `{text}` must end at or after its first address, at most {max}"
        ));
    }
    if end - start >= MAX_RANGE {
        return Err(format!(
            "range `{text}` has more than {MAX_RANGE} addresses"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{MAX_GROUP_MEMBERS, expand};

    /// A virtual_server_group of `lines` /24 ranges (256 members each) used by one
    /// virtual_server, then one more virtual_server.
    fn big_group(lines: usize) -> String {
        let mut text = String::from("virtual_server_group big {\n");
        for i in 0..lines {
            text += &format!("10.{}.{}.0-255 80\n", i / 256, i % 256);
        }
        text + "}\nvirtual_server group big {\n lb_kind DR\n real_server 10.255.0.1 80 {}\n}\nvirtual_server 192.0.2.1 80 {\n lb_kind DR\n real_server 10.255.0.1 80 {}\n}\n"
    }

    #[test]
    fn group_expansion_is_bounded() {
        let lines = MAX_GROUP_MEMBERS / 256;
        let errors = |text: &str| -> Vec<String> {
            match crate::parse(text, std::path::Path::new("k.conf")) {
                Err(crate::ConfigError::Invalid { errors, .. }) => {
                    errors.iter().map(|d| d.to_string()).collect()
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            errors(&big_group(lines + 1))[0],
            format!(
                "k.conf:{}: error: virtual_server_group big has more than 65536 members",
                lines + 2
            )
        );
        assert_eq!(
            errors(&big_group(lines)),
            [format!(
                "k.conf:{}: error: more than 65536 virtual services",
                lines + 7
            )]
        );
    }

    #[test]
    fn ranges_vary_the_last_part() {
        let v4 = expand("192.0.2.10-12").unwrap();
        let v4: Vec<String> = v4.iter().map(|a| a.to_string()).collect();
        assert_eq!(v4, ["192.0.2.10", "192.0.2.11", "192.0.2.12"]);
        let v6 = expand("2001:db8::fe-101").unwrap();
        let v6: Vec<String> = v6.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            v6,
            [
                "2001:db8::fe",
                "2001:db8::ff",
                "2001:db8::100",
                "2001:db8::101"
            ]
        );
        assert_eq!(expand("10.0.0.1").unwrap().len(), 1);
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in [
            "192.0.2.10-9",
            "192.0.2.10-256",
            "10.0.0.x",
            "2001:db8::1-zz",
            "a-b",
        ] {
            assert!(expand(bad).is_err(), "{bad}");
        }
    }
}
