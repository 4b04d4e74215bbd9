//! Health checking of real servers with keepalived's semantics. `runner` probes (`probe`,
//! `script`) on each checker's schedule (`schedule`, sans IO) and reports verdict changes;
//! `health` (sans IO) turns them into what the services carry (dead reals out or at
//! weight 0, quorum and sorry server) and the notify scripts to run; the controller
//! applies the result to the data plane.

pub mod health;
pub mod probe;
pub mod runner;
pub mod schedule;
pub mod script;
pub mod supervisor;
