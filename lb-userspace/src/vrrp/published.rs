//! An instance's entry of the status table (what lbctl and the metrics show of it), kept
//! by the instance and copied into the shared table without ever waiting for it.

use std::sync::{
    Mutex, TryLockError,
    atomic::{AtomicBool, Ordering},
};

use crate::status::{VrrpStatus, VrrpTable};

/// The instance's entry of the status table, kept here and copied into the table without
/// ever waiting for it: the table's lock is shared with lbd's main thread, which runs at
/// normal priority, and a VRRP thread blocked behind it would send its adverts late. A copy
/// that finds the table locked is made again at the instance's next event.
pub struct Published {
    name: String,
    /// Only this instance's task locks it.
    own: Mutex<VrrpStatus>,
    stale: AtomicBool,
    table: VrrpTable,
}

impl Published {
    pub fn new(table: VrrpTable, status: VrrpStatus) -> Self {
        let published = Self {
            name: status.name.clone(),
            own: Mutex::new(status),
            stale: AtomicBool::new(true),
            table,
        };
        published.flush();
        published
    }

    pub fn update(&self, update: impl FnOnce(&mut VrrpStatus)) {
        update(&mut self.own.lock().unwrap_or_else(|e| e.into_inner()));
        self.stale.store(true, Ordering::Relaxed);
        self.flush();
    }

    /// Copy the entry into the table if it has changed and the table is free.
    pub fn flush(&self) {
        if !self.stale.load(Ordering::Relaxed) {
            return;
        }
        let mut table = match self.table.try_lock() {
            Ok(table) => table,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let own = self.own.lock().unwrap_or_else(|e| e.into_inner()).clone();
        table.insert(self.name.clone(), own);
        self.stale.store(false, Ordering::Relaxed);
    }
}
