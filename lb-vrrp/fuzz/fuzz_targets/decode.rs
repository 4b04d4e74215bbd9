//! Any bytes as a VRRP packet, from an IPv4 and from an IPv6 sender: the decoder answers
//! with an advertisement or a reason, never a panic; what it accepts encodes back to a
//! packet that decodes the same.
#![no_main]

use std::net::IpAddr;

use lb_vrrp::packet::Advertisement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pairs: [(IpAddr, IpAddr); 2] = [
        ([192, 0, 2, 1].into(), [224, 0, 0, 18].into()),
        (
            "fe80::1".parse().expect("address"),
            "ff02::12".parse().expect("address"),
        ),
    ];
    for (src, dst) in pairs {
        if let Ok(advert) = Advertisement::decode(data, src, dst) {
            let again = Advertisement::decode(&advert.encode(src, dst), src, dst);
            assert_eq!(again.as_ref(), Ok(&advert));
        }
    }
});
