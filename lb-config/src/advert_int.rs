//! A VRRP instance's `advert_int`, fitted to what its version's adverts carry, as
//! keepalived fits it (`vrrp_complete_instance` in `keepalived/vrrp/vrrp.c`): VRRPv2
//! counts whole seconds up to 255, VRRPv3 centiseconds up to 40.95 s. Anything else is
//! rounded to the nearest value the advert can carry, with a warning, so that the
//! interval lbd advertises is the one it keeps (and the one its peers expect).

use std::time::Duration;

/// The interval a version `version` advert carries for `advert_int`, and the warning when
/// it is not `advert_int` itself.
pub fn fit(version: u8, advert_int: Duration) -> (Duration, Option<String>) {
    let (unit, most, unit_name) = if version == 3 {
        (
            Duration::from_millis(10),
            Duration::from_millis(40_950),
            "10 ms",
        )
    } else {
        (
            Duration::from_secs(1),
            Duration::from_secs(255),
            "whole seconds",
        )
    };
    if advert_int > most {
        return (
            most,
            Some(format!(
                "VRRPv{version} advertisement interval {}s is out of range; {}s used",
                advert_int.as_secs_f64(),
                most.as_secs_f64()
            )),
        );
    }
    let units = (advert_int.as_nanos() + unit.as_nanos() / 2) / unit.as_nanos();
    let fitted = unit * (units.max(1) as u32);
    if fitted == advert_int {
        return (advert_int, None);
    }
    let hint = if version == 3 {
        ""
    } else {
        " (`version 3` advertises sub-second intervals)"
    };
    (
        fitted,
        Some(format!(
            "VRRPv{version} advertisement interval {}s must be in {unit_name}; rounded to {}s{hint}",
            advert_int.as_secs_f64(),
            fitted.as_secs_f64()
        )),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn instance(version: u8, advert_int: &str) -> (Duration, Vec<String>) {
        let text = format!(
            "vrrp_instance VI_1 {{\n    interface eth0\n    virtual_router_id 1\n    priority 100\n    version {version}\n    advert_int {advert_int}\n    virtual_ipaddress {{\n        10.0.0.100\n    }}\n}}\n"
        );
        let loaded = crate::parse(&text, Path::new("t.conf")).expect("valid");
        (
            loaded.config.vrrp_instances[0].advert_int,
            loaded.warnings.iter().map(|w| w.to_string()).collect(),
        )
    }

    #[test]
    fn vrrp_v2_advertises_whole_seconds_as_keepalived_does() {
        let (interval, warnings) = instance(2, "0.1");
        assert_eq!(interval, Duration::from_secs(1));
        assert!(
            warnings.iter().any(|w| w.contains(
                "VRRPv2 advertisement interval 0.1s must be in whole seconds; rounded to 1s"
            )),
            "{warnings:?}"
        );
        assert_eq!(instance(2, "2.5").0, Duration::from_secs(3));
        assert_eq!(instance(2, "300").0, Duration::from_secs(255));
        let (interval, warnings) = instance(2, "3");
        assert_eq!((interval, warnings.len()), (Duration::from_secs(3), 0));
    }

    #[test]
    fn vrrp_v3_advertises_centiseconds() {
        let (interval, warnings) = instance(3, "0.1");
        assert_eq!((interval, warnings.len()), (Duration::from_millis(100), 0));
        assert_eq!(instance(3, "0.015").0, Duration::from_millis(20));
        assert_eq!(instance(3, "0.001").0, Duration::from_millis(10));
        assert_eq!(instance(3, "41").0, Duration::from_millis(40_950));
    }
}
