//! A VRRP instance whose interface does not exist (yet), as keepalived runs it: the
//! instance is in FAULT, and its sync group with it, until the interface appears.

use std::time::Duration;

use lb_vrrp::machine::State;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{
    instance::{StateChange, state_name},
    link,
    published::Published,
};
use crate::status::now_unix_ms;

/// How often a missing interface is looked for.
const INTERFACE_WAIT: Duration = Duration::from_millis(250);

/// Wait while `interface` does not exist, in FAULT; whether it appeared (false: the
/// instance was stopped first). Unicast instances without an interface do not wait.
pub async fn wait_for_interface(
    interface: &str,
    name: &str,
    status: &Published,
    changes: &mpsc::UnboundedSender<StateChange>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    // Unicast instances without an interface take the route's.
    if interface.is_empty() || link::index(interface).is_ok() {
        return true;
    }
    warn!("({name}) interface {interface} does not exist: FAULT until it appears");
    status.update(|s| {
        s.state = state_name(State::Fault).to_owned();
        s.since_unix_ms = now_unix_ms();
    });
    let change = |state, own_fault| StateChange {
        instance: name.to_owned(),
        state,
        synced: false,
        own_fault,
    };
    let _ = changes.send(change(State::Fault, None));
    let _ = changes.send(change(State::Fault, Some(true)));
    loop {
        tokio::select! {
            _ = stop.changed() => return false,
            _ = tokio::time::sleep(INTERFACE_WAIT) => {
                if link::index(interface).is_ok() {
                    break;
                }
            }
        }
    }
    info!("({name}) interface {interface} appeared");
    let _ = changes.send(change(State::Fault, Some(false)));
    true
}
