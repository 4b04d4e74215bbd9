//! What an instance tracks and what it does to it, with keepalived's rules: its own
//! interface and every `track_interface` and `track_script`. An item without a weight
//! puts the instance into FAULT while it is down. With a weight, a positive one is added
//! to the priority while the item is up, a negative one while it is down; `reverse`
//! turns this around. The result is kept within 1..=254, and the address owner's 255
//! never moves. A script is up after `rise` passes in a row and down after `fall`
//! failures in a row. The `Tracker` itself is sans IO; `watch` runs the pollers and
//! scripts and reports their changes.

use std::time::Duration;

use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    check::script::{self, Policy},
    model::vrrp::{Track, VrrpInstance, VrrpScript},
};

/// How often interfaces are looked at.
const INTERFACE_POLL: Duration = Duration::from_millis(100);

/// One tracked item's change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// The instance's own interface (index `None`) or `track_interface` entry `index`.
    Interface {
        index: Option<usize>,
        up: bool,
    },
    Script {
        index: usize,
        up: bool,
    },
}

/// A tracked item with its effect.
#[derive(Clone, Debug)]
struct Item {
    /// `None`: FAULT while down.
    weight: Option<i32>,
    reverse: bool,
    up: bool,
}

impl Item {
    /// The item's addition to the priority now.
    fn delta(&self) -> i32 {
        match self.weight {
            Some(weight) if weight != 0 => {
                let counts_when_up = (weight > 0) != self.reverse;
                if self.up == counts_when_up { weight } else { 0 }
            }
            _ => 0,
        }
    }

    fn faulty(&self) -> bool {
        matches!(self.weight, None | Some(0)) && !self.up
    }
}

#[derive(Clone, Debug)]
pub struct Tracker {
    base: u8,
    own_interface_up: bool,
    interfaces: Vec<Item>,
    scripts: Vec<Item>,
}

impl Tracker {
    /// The tracking of `instance`, everything assumed up (scripts start up, as
    /// keepalived's do until their first result says otherwise).
    pub fn new(instance: &VrrpInstance, scripts: &[VrrpScript]) -> Self {
        let item = |track: &Track, default: Option<i32>, default_reverse: bool| Item {
            weight: track.weight.or(default),
            reverse: if track.weight.is_some() {
                track.reverse
            } else {
                default_reverse
            },
            up: true,
        };
        Self {
            base: instance.priority,
            own_interface_up: true,
            interfaces: instance
                .track_interface
                .iter()
                .map(|t| item(t, None, false))
                .collect(),
            scripts: instance
                .track_script
                .iter()
                .map(|t| {
                    let script = scripts.iter().find(|s| s.name == t.name);
                    item(
                        t,
                        script.map(|s| s.weight),
                        script.is_some_and(|s| s.reverse),
                    )
                })
                .collect(),
        }
    }

    pub fn update(&mut self, update: Update) {
        match update {
            Update::Interface { index: None, up } => self.own_interface_up = up,
            Update::Interface {
                index: Some(index),
                up,
            } => {
                if let Some(item) = self.interfaces.get_mut(index) {
                    item.up = up;
                }
            }
            Update::Script { index, up } => {
                if let Some(item) = self.scripts.get_mut(index) {
                    item.up = up;
                }
            }
        }
    }

    pub fn fault(&self) -> bool {
        !self.own_interface_up
            || self
                .interfaces
                .iter()
                .chain(&self.scripts)
                .any(Item::faulty)
    }

    pub fn priority(&self) -> u8 {
        if self.base == lb_vrrp::machine::OWNER_PRIORITY {
            return self.base;
        }
        let delta: i32 = self
            .interfaces
            .iter()
            .chain(&self.scripts)
            .map(Item::delta)
            .sum();
        (i32::from(self.base) + delta).clamp(1, 254) as u8
    }
}

/// Whether interface `name` is up and running.
fn interface_up(name: &str) -> bool {
    // SAFETY: an all-zero ifreq is valid; the name is copied in below.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *slot = byte as libc::c_char;
    }
    // SAFETY: a datagram socket for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: SIOCGIFFLAGS with a valid ifreq.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) };
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return false;
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = i32::from(unsafe { request.ifr_ifru.ifru_flags });
    flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0
}

/// Watch what `instance` tracks; each change goes to `updates`. The tasks end when the
/// receiver is gone.
pub fn watch(
    instance: &VrrpInstance,
    scripts: &[VrrpScript],
    policy: &Policy,
    updates: mpsc::UnboundedSender<Update>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let interfaces: Vec<(Option<usize>, String)> =
        std::iter::once((None, instance.interface.clone()))
            .chain(
                instance
                    .track_interface
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (Some(i), t.name.clone())),
            )
            .collect();
    let sender = updates.clone();
    tasks.push(tokio::spawn(async move {
        let mut last: Vec<bool> = vec![true; interfaces.len()];
        loop {
            for (slot, (index, name)) in interfaces.iter().enumerate() {
                let up = interface_up(name);
                if up != last[slot] {
                    last[slot] = up;
                    if sender
                        .send(Update::Interface { index: *index, up })
                        .is_err()
                    {
                        return;
                    }
                }
            }
            tokio::time::sleep(INTERFACE_POLL).await;
        }
    }));
    for (index, track) in instance.track_script.iter().enumerate() {
        let Some(script) = scripts.iter().find(|s| s.name == track.name).cloned() else {
            continue;
        };
        let (sender, policy) = (updates.clone(), policy.clone());
        tasks.push(tokio::spawn(async move {
            let (mut up, mut streak) = (true, 0u32);
            loop {
                let passed = matches!(
                    script::run_with(&script.script, script.timeout, &policy, None).await,
                    Ok(0)
                );
                // Count results against the current state: `rise` passes bring it up,
                // `fall` failures take it down.
                if passed == up {
                    streak = 0;
                } else {
                    streak += 1;
                    let needed = if passed { script.rise } else { script.fall }.max(1);
                    if streak >= needed {
                        up = passed;
                        streak = 0;
                        if sender.send(Update::Script { index, up }).is_err() {
                            return;
                        }
                    }
                }
                tokio::time::sleep(script.interval).await;
            }
        }));
    }
    tasks
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn instance(extra: &str) -> (VrrpInstance, Vec<VrrpScript>) {
        let text = format!(
            "vrrp_script up {{\n script /bin/true\n weight 20\n}}\nvrrp_script down {{\n script /bin/false\n weight -30\n}}\nvrrp_script hard {{\n script /bin/false\n}}\nvrrp_instance VI_1 {{\n interface lo\n virtual_router_id 1\n priority 100\n{extra} virtual_ipaddress {{\n  10.0.0.1\n }}\n}}\n"
        );
        let config = crate::config::parse(&text, Path::new("t.conf"))
            .unwrap()
            .config;
        (config.vrrp_instances[0].clone(), config.vrrp_scripts)
    }

    #[test]
    fn weights_move_the_priority_and_unweighted_items_fault() {
        let (vi, scripts) = instance(
            " track_interface {\n  eth1 weight -10\n  eth2\n }\n track_script {\n  up\n  down\n  hard\n }\n",
        );
        let mut tracker = Tracker::new(&vi, &scripts);
        // All up: the positive script weight counts.
        assert_eq!((tracker.priority(), tracker.fault()), (120, false));
        // A negative weight counts while down.
        tracker.update(Update::Script {
            index: 1,
            up: false,
        });
        assert_eq!(tracker.priority(), 90);
        tracker.update(Update::Interface {
            index: Some(0),
            up: false,
        });
        assert_eq!(tracker.priority(), 80);
        // The positive one stops counting when down.
        tracker.update(Update::Script {
            index: 0,
            up: false,
        });
        assert_eq!(tracker.priority(), 60);
        // Unweighted: FAULT while down.
        tracker.update(Update::Interface {
            index: Some(1),
            up: false,
        });
        assert!(tracker.fault());
        tracker.update(Update::Interface {
            index: Some(1),
            up: true,
        });
        assert!(!tracker.fault());
        tracker.update(Update::Script {
            index: 2,
            up: false,
        });
        assert!(tracker.fault());
        tracker.update(Update::Script { index: 2, up: true });
        tracker.update(Update::Interface {
            index: None,
            up: false,
        });
        assert!(tracker.fault());
    }

    #[test]
    fn reverse_and_track_weights_override_the_script() {
        let (vi, scripts) = instance(" track_script {\n  up weight 10 reverse\n }\n");
        let mut tracker = Tracker::new(&vi, &scripts);
        assert_eq!(tracker.priority(), 100);
        tracker.update(Update::Script {
            index: 0,
            up: false,
        });
        assert_eq!(tracker.priority(), 110);
    }

    #[test]
    fn the_priority_stays_within_1_and_254() {
        let (vi, scripts) = instance(" track_script {\n  down weight -200\n }\n");
        let mut tracker = Tracker::new(&vi, &scripts);
        tracker.update(Update::Script {
            index: 0,
            up: false,
        });
        assert_eq!(tracker.priority(), 1);
    }
}
