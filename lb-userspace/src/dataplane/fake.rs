//! In-memory data plane for tests of the controller. It keeps its entries the way a map
//! backend does (one per service, one per real with its weight), writes only the entries
//! whose value differs and deletes those no longer wanted, and logs each write: what a
//! reload test compares with the updates it expects. It counts applies; counters are
//! whatever the test sets. It has no flows; its upkeep is a number of steps of a set
//! duration, which tests of the data-plane thread give it.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lb_common::conn::Timeouts;

use super::{
    ApplyReport, Counters, Dataplane, DataplaneError, DesiredState, ServiceSpec, diff::ServiceId,
};

/// The key of one entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKey {
    Service(ServiceId),
    Real(ServiceId, IpAddr, u16),
}

/// The value of one entry: a service's settings (without its reals), or a real's weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryValue {
    Service(Box<ServiceSpec>),
    Weight(u32),
}

/// One write to the entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put(EntryKey, EntryValue),
    Delete(EntryKey),
}

#[derive(Debug, Default)]
pub struct FakeDataplane {
    /// The services of the last apply, as given.
    pub services: Vec<ServiceSpec>,
    /// Timeouts of the last apply (`None` before the first).
    pub timeouts: Option<Timeouts>,
    pub entries: BTreeMap<EntryKey, EntryValue>,
    /// The writes of the last apply, deletions first.
    pub writes: Vec<Write>,
    pub applies: usize,
    /// Steps of upkeep still to do, each taking `upkeep_step` (spent sleeping).
    pub upkeep_steps: u32,
    pub upkeep_step: Duration,
    /// Steps of upkeep done.
    pub upkeeps: usize,
    /// What each apply reports (`retry_at` makes the caller refresh then).
    pub report: ApplyReport,
    /// What was done, in order: "apply", "upkeep", "zero", "stop" (shared, so that a test
    /// can read it while the data plane runs on another thread).
    pub journal: Arc<Mutex<Vec<&'static str>>>,
    pub counters: Counters,
    /// When set, the next `apply` fails with this error and changes nothing.
    pub fail_next_apply: Option<DataplaneError>,
}

/// The entries that carry `services`.
fn entries_of(services: &[ServiceSpec]) -> BTreeMap<EntryKey, EntryValue> {
    let mut entries = BTreeMap::new();
    for spec in services {
        let id = ServiceId::of_spec(spec);
        let settings = ServiceSpec {
            reals: Vec::new(),
            ..spec.clone()
        };
        entries.insert(
            EntryKey::Service(id),
            EntryValue::Service(Box::new(settings)),
        );
        for real in &spec.reals {
            entries.insert(
                EntryKey::Real(id, real.addr, real.port),
                EntryValue::Weight(real.weight),
            );
        }
    }
    entries
}

impl FakeDataplane {
    fn note(&self, what: &'static str) {
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }
}

impl Dataplane for FakeDataplane {
    fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        if let Some(error) = self.fail_next_apply.take() {
            return Err(error);
        }
        let wanted = entries_of(&desired.services);
        self.writes = self
            .entries
            .keys()
            .filter(|key| !wanted.contains_key(*key))
            .map(|key| Write::Delete(key.clone()))
            .collect();
        for (key, value) in &wanted {
            if self.entries.get(key) != Some(value) {
                self.writes.push(Write::Put(key.clone(), value.clone()));
            }
        }
        self.entries = wanted;
        self.services = desired.services.clone();
        self.timeouts = Some(desired.timeouts);
        self.applies += 1;
        self.note("apply");
        Ok(self.report.clone())
    }

    fn upkeep(&mut self, now: Instant) -> Result<Option<Instant>, DataplaneError> {
        if self.upkeep_steps == 0 {
            return Ok(None);
        }
        std::thread::sleep(self.upkeep_step);
        self.upkeep_steps -= 1;
        self.upkeeps += 1;
        self.note("upkeep");
        Ok((self.upkeep_steps > 0).then_some(now))
    }

    fn counters(&self) -> Result<Counters, DataplaneError> {
        Ok(self.counters.clone())
    }

    fn stop(&mut self) -> Result<(), DataplaneError> {
        self.note("stop");
        Ok(())
    }

    fn zero_counters(
        &mut self,
        service: Option<super::diff::ServiceId>,
    ) -> Result<(), DataplaneError> {
        self.note("zero");
        if service.is_none() {
            for (_, n) in &mut self.counters.outcomes {
                *n = 0;
            }
        }
        for s in &mut self.counters.services {
            if service.is_none_or(|id| id == s.id()) {
                s.traffic = Default::default();
                for real in &mut s.reals {
                    real.traffic = Default::default();
                }
            }
        }
        Ok(())
    }
}
