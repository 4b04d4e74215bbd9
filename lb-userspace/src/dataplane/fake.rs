//! In-memory data plane for tests of the controller: remembers the last desired state and
//! the updates the last apply made (`diff`), counts applies and sweeps; counters are
//! whatever the test sets. It has no flows, so a sweep finds none.

use lb_common::conn::Timeouts;

use super::{
    ApplyReport, Counters, Dataplane, DataplaneError, DesiredState, ServiceSpec, SweepReport,
    diff::{Change, changes},
};

#[derive(Debug, Default)]
pub struct FakeDataplane {
    pub services: Vec<ServiceSpec>,
    /// Timeouts of the last apply (`None` before the first).
    pub timeouts: Option<Timeouts>,
    pub applies: usize,
    /// The updates of the last apply.
    pub changes: Vec<Change>,
    pub sweeps: usize,
    pub counters: Counters,
    /// When set, the next `apply` fails with this error and changes nothing.
    pub fail_next_apply: Option<DataplaneError>,
}

impl Dataplane for FakeDataplane {
    fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        if let Some(error) = self.fail_next_apply.take() {
            return Err(error);
        }
        let before = DesiredState {
            services: std::mem::take(&mut self.services),
            timeouts: self.timeouts.unwrap_or(desired.timeouts),
        };
        self.changes = changes(&before, desired);
        self.services = desired.services.clone();
        self.timeouts = Some(desired.timeouts);
        self.applies += 1;
        Ok(ApplyReport::default())
    }

    fn sweep(&mut self) -> Result<SweepReport, DataplaneError> {
        self.sweeps += 1;
        Ok(SweepReport::default())
    }

    fn counters(&self) -> Result<Counters, DataplaneError> {
        Ok(self.counters.clone())
    }
}
