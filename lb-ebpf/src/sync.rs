//! Connection sync: while userspace's sync daemon runs (`FEATURE_SYNC_EVENTS`), every flow
//! recorded and every change of a flow's state goes into `LB_SYNC_EVENTS`, from which the
//! master sends it to the backups. Only these moments cost anything (the feature test,
//! then a reservation and a submission in the ring buffer); a packet that changes nothing
//! pays nothing. A full ring buffer loses the event; the flow's next change sends it.

use lb_common::{FEATURE_SYNC_EVENTS, FlowKey, SyncEvent};

use crate::maps::{SETTINGS, SYNC_EVENTS};

/// Flow `key`, on real `real_id`, is now in `state` (recorded or moved).
#[inline(always)]
pub fn flow_changed(key: &FlowKey, real_id: u32, state: u8) {
    if SETTINGS
        .get(0)
        .is_some_and(|s| s.features & FEATURE_SYNC_EVENTS != 0)
    {
        write_event(key, real_id, state);
    }
}

/// The event into the ring buffer. (Not inlined: the balancer's paths share one copy.)
#[inline(never)]
fn write_event(key: &FlowKey, real_id: u32, state: u8) {
    if let Some(mut entry) = SYNC_EVENTS.reserve::<SyncEvent>(0) {
        entry.write(SyncEvent {
            key: *key,
            real_id,
            state,
            _pad: [0; 3],
        });
        entry.submit(0);
    }
}
