//! A hold on VRRP preemption, shared by the connection sync (which sets it while this
//! director has not yet taken the master's connections) and every VRRP instance (which
//! reads it before each advert it handles). An atomic flag: the real-time VRRP thread
//! never waits for the sync thread to read it.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

#[derive(Clone, Debug, Default)]
pub struct PreemptionHold(Arc<AtomicBool>);

impl PreemptionHold {
    /// A hold, set to `held`.
    pub fn new(held: bool) -> Self {
        Self(Arc::new(AtomicBool::new(held)))
    }

    pub fn set(&self, held: bool) {
        self.0.store(held, Ordering::Release);
    }

    pub fn is_held(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
