//! One VRRP instance's state machine, sans IO (RFC 5798 section 6; RFC 3768 section 6
//! for VRRPv2's timers): events and the time in, commands out, and the time of the next
//! timer for the caller to wait for. keepalived's additions: `nopreempt`,
//! `preempt_delay`, the FAULT state (tracked interfaces), and priority changes from
//! tracked scripts. lbd's: preemption held while the connection sync has not yet taken
//! the master's connections (`hold_preemption`).

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::packet::{Advertisement, Version};

/// The address owner's priority (RFC 5798 section 5.2.4).
pub const OWNER_PRIORITY: u8 = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Initialize,
    Backup,
    Master,
    /// keepalived's: a tracked interface or script is down; no adverts, no addresses.
    Fault,
}

/// The settings the machine works from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub version: Version,
    pub vrid: u8,
    /// The configured priority (1..=255).
    pub priority: u8,
    /// `advert_int`, in centiseconds.
    pub advert_interval_cs: u16,
    /// Preempt a lower-priority master (keepalived's `nopreempt` clears it).
    pub preempt: bool,
    /// keepalived's `preempt_delay`: no preemption this long after startup.
    pub preempt_delay: Duration,
    /// This router's primary address (the advert source), to break priority ties.
    pub primary: IpAddr,
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send an advertisement with this priority.
    Send { priority: u8 },
    /// Add the virtual addresses (and routes) to the interface.
    AddAddresses,
    /// Remove them.
    RemoveAddresses,
    /// Gratuitous ARP / unsolicited NA for the virtual addresses.
    Announce,
    /// The state changed (notify scripts, logs, metrics).
    Transition { from: State, to: State },
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Startup,
    Shutdown,
    /// An advertisement for this VRID, already decoded and checked, from `src`.
    Advertisement {
        src: IpAddr,
        advert: Advertisement,
    },
    /// The time given by `deadline` came.
    Timer,
    /// Something tracked failed (true) or recovered (false).
    Fault(bool),
    /// The effective priority changed (tracked scripts' weights).
    Priority(u8),
    /// Another member of this instance's `vrrp_sync_group` entered this state; the group
    /// moves together (keepalived's sync groups).
    Sync(State),
}

#[derive(Clone, Debug)]
pub struct Machine {
    settings: Settings,
    state: State,
    /// The priority in use: the configured one with tracking weights applied.
    priority: u8,
    /// The master's advertisement interval, learnt from its adverts (section 6.1).
    master_interval_cs: u16,
    deadline: Option<Instant>,
    started: Option<Instant>,
    /// Whether this instance's own tracking fails, and whether its sync group's does: it
    /// leaves FAULT only when neither does.
    own_fault: bool,
    group_fault: bool,
    /// Preemption held by the caller (a director not yet resynced).
    preemption_held: bool,
}

impl Machine {
    pub fn new(settings: Settings) -> Self {
        Self {
            priority: settings.priority,
            master_interval_cs: settings.advert_interval_cs,
            settings,
            state: State::Initialize,
            deadline: None,
            started: None,
            own_fault: false,
            group_fault: false,
            preemption_held: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// When the caller must hand in `Event::Timer` (none: no timer runs).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Skew_Time (section 6.1): VRRPv3 `((256 - Priority) * Master_Adver_Interval) / 256`
    /// centiseconds; VRRPv2 `(256 - Priority) / 256` seconds.
    pub fn skew_time(&self) -> Duration {
        let weight = u64::from(256 - u16::from(self.priority));
        match self.settings.version {
            Version::V3 => {
                Duration::from_micros(weight * u64::from(self.master_interval_cs) * 10_000 / 256)
            }
            Version::V2 => Duration::from_micros(weight * 1_000_000 / 256),
        }
    }

    /// Master_Down_Interval (section 6.1): `3 * Master_Adver_Interval + Skew_Time`.
    pub fn master_down_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.master_interval_cs) * 10 * 3) + self.skew_time()
    }

    fn advert_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.settings.advert_interval_cs) * 10)
    }

    fn to(&mut self, to: State, commands: &mut Vec<Command>) {
        let from = self.state;
        self.state = to;
        commands.push(Command::Transition { from, to });
    }

    /// Become master (section 6.4.1 and 6.4.2): advertise, take the addresses, announce
    /// them, and advertise every interval.
    fn become_master(&mut self, now: Instant, commands: &mut Vec<Command>) {
        commands.push(Command::Send {
            priority: self.priority,
        });
        commands.push(Command::AddAddresses);
        commands.push(Command::Announce);
        self.deadline = Some(now + self.advert_interval());
        self.to(State::Master, commands);
    }

    /// When the advert after the one due now goes out: one interval after this one was
    /// due, so that a timer that fires late does not delay every advert after it; one
    /// interval from `now` if this one is more than an interval late.
    fn next_advert(&self, now: Instant) -> Instant {
        let interval = self.advert_interval();
        match self.deadline {
            Some(due) if due + interval > now => due + interval,
            _ => now + interval,
        }
    }

    /// Become backup, waiting Master_Down_Interval for the master.
    fn become_backup(&mut self, now: Instant, commands: &mut Vec<Command>) {
        self.master_interval_cs = self.settings.advert_interval_cs;
        self.deadline = Some(now + self.master_down_interval());
        self.to(State::Backup, commands);
    }

    /// Hold preemption (a lower-priority master is accepted as with `nopreempt`) while
    /// `held`. Released, the next advert of a lower-priority master is discarded and the
    /// Master_Down_Timer runs out as usual.
    pub fn hold_preemption(&mut self, held: bool) {
        self.preemption_held = held;
    }

    /// Whether this router may preempt now (preempt, past `preempt_delay`, not held).
    fn may_preempt(&self, now: Instant) -> bool {
        self.settings.preempt
            && !self.preemption_held
            && self
                .started
                .is_none_or(|started| now >= started + self.settings.preempt_delay)
    }

    /// Leave FAULT as at startup (the owner becomes master at once).
    fn recover(&mut self, now: Instant, commands: &mut Vec<Command>) {
        if self.priority == OWNER_PRIORITY {
            self.become_master(now, commands);
        } else {
            self.become_backup(now, commands);
        }
    }

    /// Enter FAULT: a master hands over at once, as on shutdown.
    fn fail(&mut self, commands: &mut Vec<Command>) {
        if self.state == State::Master {
            commands.push(Command::Send { priority: 0 });
            commands.push(Command::RemoveAddresses);
        }
        self.deadline = None;
        self.to(State::Fault, commands);
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Command> {
        let mut commands = Vec::new();
        match &event {
            Event::Fault(fault) => self.own_fault = *fault,
            Event::Sync(state) => self.group_fault = *state == State::Fault,
            _ => {}
        }
        match (self.state, event) {
            // Section 6.4.1: the owner becomes master at once, others backup.
            (State::Initialize, Event::Startup) => {
                self.started = Some(now);
                if self.priority == OWNER_PRIORITY {
                    self.become_master(now, &mut commands);
                } else {
                    self.become_backup(now, &mut commands);
                }
            }
            (State::Initialize, _) => {}
            // keepalived: FAULT until recovered, then as at startup (without the owner's
            // shortcut being lost).
            (State::Fault, Event::Fault(false)) if !self.group_fault => {
                self.recover(now, &mut commands)
            }
            // The group left FAULT: follow, unless this instance's own tracking fails.
            (State::Fault, Event::Sync(State::Backup | State::Master)) if !self.own_fault => {
                self.recover(now, &mut commands)
            }
            (State::Fault, Event::Shutdown) => {
                self.deadline = None;
                self.to(State::Initialize, &mut commands);
            }
            (State::Fault, Event::Priority(priority)) => self.priority = priority,
            (State::Fault, _) => {}
            (State::Backup | State::Master, Event::Fault(true) | Event::Sync(State::Fault)) => {
                self.fail(&mut commands)
            }
            (_, Event::Fault(false)) => {}
            // The group goes master or backup together.
            (State::Backup, Event::Sync(State::Master)) => self.become_master(now, &mut commands),
            (State::Master, Event::Sync(State::Backup)) => {
                commands.push(Command::RemoveAddresses);
                self.master_interval_cs = self.settings.advert_interval_cs;
                self.deadline = Some(now + self.master_down_interval());
                self.to(State::Backup, &mut commands);
            }
            (_, Event::Sync(_)) => {}
            // Section 6.4.2, Backup.
            (State::Backup, Event::Shutdown) => {
                self.deadline = None;
                self.to(State::Initialize, &mut commands);
            }
            (State::Backup, Event::Timer) => self.become_master(now, &mut commands),
            (State::Backup, Event::Advertisement { advert, .. }) => {
                if advert.priority == 0 {
                    // The master leaves: take over after Skew_Time only.
                    self.deadline = Some(now + self.skew_time());
                } else if !self.may_preempt(now) || advert.priority >= self.priority {
                    self.master_interval_cs = advert.interval_cs;
                    self.deadline = Some(now + self.master_down_interval());
                }
                // Else: a lower priority master we preempt; its advert is discarded and
                // the Master_Down_Timer runs out.
            }
            (State::Backup, Event::Priority(priority)) => self.priority = priority,
            (State::Backup, Event::Startup) => {}
            // Section 6.4.3, Master.
            (State::Master, Event::Timer) => {
                commands.push(Command::Send {
                    priority: self.priority,
                });
                self.deadline = Some(self.next_advert(now));
            }
            (State::Master, Event::Shutdown) => {
                commands.push(Command::Send { priority: 0 });
                commands.push(Command::RemoveAddresses);
                self.deadline = None;
                self.to(State::Initialize, &mut commands);
            }
            (State::Master, Event::Advertisement { src, advert }) => {
                if advert.priority == 0 {
                    // Another master left: assert ourselves at once.
                    commands.push(Command::Send {
                        priority: self.priority,
                    });
                    self.deadline = Some(now + self.advert_interval());
                } else if advert.priority > self.priority
                    || (advert.priority == self.priority && src > self.settings.primary)
                {
                    commands.push(Command::RemoveAddresses);
                    self.master_interval_cs = advert.interval_cs;
                    self.deadline = Some(now + self.master_down_interval());
                    self.to(State::Backup, &mut commands);
                }
            }
            (State::Master, Event::Priority(priority)) => {
                self.priority = priority;
                // Tell the others now rather than at the next interval.
                commands.push(Command::Send { priority });
            }
            (State::Master, Event::Startup) => {}
        }
        commands
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Auth;

    fn settings(priority: u8) -> Settings {
        Settings {
            version: Version::V3,
            vrid: 51,
            priority,
            advert_interval_cs: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary: "10.0.0.2".parse().unwrap(),
        }
    }

    fn advert(priority: u8) -> Event {
        Event::Advertisement {
            src: "10.0.0.9".parse().unwrap(),
            advert: Advertisement {
                version: Version::V3,
                vrid: 51,
                priority,
                interval_cs: 100,
                addresses: vec!["10.0.0.100".parse().unwrap()],
                auth: Auth::None,
            },
        }
    }

    fn transitions(commands: &[Command]) -> Vec<(State, State)> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Transition { from, to } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn timers_follow_section_6_1() {
        let machine = Machine::new(settings(100));
        // Skew_Time = (256 - 100) * 100 / 256 cs = 60.94 cs; Master_Down = 300 cs + skew.
        assert_eq!(machine.skew_time(), Duration::from_micros(609_375));
        assert_eq!(
            machine.master_down_interval(),
            Duration::from_micros(3_609_375)
        );
        let v2 = Machine::new(Settings {
            version: Version::V2,
            ..settings(100)
        });
        assert_eq!(v2.skew_time(), Duration::from_micros(609_375));
        // Centisecond intervals (v3): advert_int 0.01.
        let fast = Machine::new(Settings {
            advert_interval_cs: 1,
            ..settings(200)
        });
        assert_eq!(
            fast.master_down_interval(),
            Duration::from_micros(30_000 + 2_187)
        );
    }

    #[test]
    fn section_6_4_1_the_owner_starts_master_others_backup() {
        let now = Instant::now();
        let mut owner = Machine::new(settings(OWNER_PRIORITY));
        let commands = owner.handle(Event::Startup, now);
        assert_eq!(
            commands,
            [
                Command::Send { priority: 255 },
                Command::AddAddresses,
                Command::Announce,
                Command::Transition {
                    from: State::Initialize,
                    to: State::Master
                }
            ]
        );
        assert_eq!(owner.deadline(), Some(now + Duration::from_secs(1)));
        let mut backup = Machine::new(settings(100));
        assert_eq!(
            transitions(&backup.handle(Event::Startup, now)),
            [(State::Initialize, State::Backup)]
        );
        assert_eq!(
            backup.deadline(),
            Some(now + Duration::from_micros(3_609_375))
        );
    }

    #[test]
    fn section_6_4_2_backup_takes_over_when_the_master_is_silent() {
        let now = Instant::now();
        let mut machine = Machine::new(settings(100));
        machine.handle(Event::Startup, now);
        // Adverts from a higher-priority master keep pushing the timer back.
        let later = now + Duration::from_secs(2);
        assert!(machine.handle(advert(150), later).is_empty());
        assert_eq!(
            machine.deadline(),
            Some(later + Duration::from_micros(3_609_375))
        );
        // Silence: the timer fires, the backup becomes master.
        let fired = later + Duration::from_micros(3_609_375);
        let commands = machine.handle(Event::Timer, fired);
        assert_eq!(transitions(&commands), [(State::Backup, State::Master)]);
        assert!(commands.contains(&Command::AddAddresses));
    }

    #[test]
    fn section_6_4_2_priority_zero_means_take_over_after_skew_time() {
        let now = Instant::now();
        let mut machine = Machine::new(settings(100));
        machine.handle(Event::Startup, now);
        machine.handle(advert(0), now);
        assert_eq!(
            machine.deadline(),
            Some(now + Duration::from_micros(609_375))
        );
    }

    #[test]
    fn section_6_4_2_preemption_and_nopreempt() {
        let now = Instant::now();
        // Preempt: a lower-priority master's adverts are discarded, the timer runs out.
        let mut preempting = Machine::new(settings(100));
        preempting.handle(Event::Startup, now);
        let deadline = preempting.deadline();
        preempting.handle(advert(50), now + Duration::from_secs(1));
        assert_eq!(preempting.deadline(), deadline);
        // nopreempt: the lower-priority master is accepted.
        let mut patient = Machine::new(Settings {
            preempt: false,
            ..settings(100)
        });
        patient.handle(Event::Startup, now);
        let at = now + Duration::from_secs(1);
        patient.handle(advert(50), at);
        assert_eq!(
            patient.deadline(),
            Some(at + Duration::from_micros(3_609_375))
        );
        // preempt_delay: like nopreempt until the delay after startup has passed.
        let mut delayed = Machine::new(Settings {
            preempt_delay: Duration::from_secs(30),
            ..settings(100)
        });
        delayed.handle(Event::Startup, now);
        delayed.handle(advert(50), at);
        assert_eq!(
            delayed.deadline(),
            Some(at + Duration::from_micros(3_609_375))
        );
        let past = now + Duration::from_secs(31);
        let before = delayed.deadline();
        delayed.handle(advert(50), past);
        assert_eq!(delayed.deadline(), before);
    }

    #[test]
    fn held_preemption_accepts_the_lower_master_until_released() {
        let now = Instant::now();
        let mut returning = Machine::new(settings(100));
        returning.hold_preemption(true);
        returning.handle(Event::Startup, now);
        // Held: the lower-priority master's adverts restart the Master_Down_Timer.
        let mut at = now;
        for _ in 0..10 {
            at += Duration::from_secs(1);
            assert!(returning.handle(advert(50), at).is_empty());
            assert_eq!(
                returning.deadline(),
                Some(at + Duration::from_micros(3_609_375))
            );
        }
        assert_eq!(returning.state(), State::Backup);
        // Released: the next advert is discarded and the timer runs out.
        returning.hold_preemption(false);
        let due = returning.deadline();
        returning.handle(advert(50), at + Duration::from_secs(1));
        assert_eq!(returning.deadline(), due);
        returning.handle(Event::Timer, due.unwrap());
        assert_eq!(returning.state(), State::Master);
        // A hold does not keep a backup from taking over from a master that is gone.
        let mut alone = Machine::new(settings(100));
        alone.hold_preemption(true);
        alone.handle(Event::Startup, now);
        alone.handle(Event::Timer, alone.deadline().unwrap());
        assert_eq!(alone.state(), State::Master);
    }

    #[test]
    fn section_6_4_3_master_advertises_and_yields_to_higher_priority() {
        let now = Instant::now();
        let mut machine = Machine::new(settings(OWNER_PRIORITY - 1));
        machine.handle(Event::Startup, now);
        machine.handle(Event::Timer, now + Duration::from_secs(4));
        assert_eq!(machine.state(), State::Master);
        // The advertisement timer, which keeps its cadence when it fires late, and starts
        // anew when it fired more than an interval late.
        let tick = machine.deadline().unwrap();
        let late = tick + Duration::from_millis(300);
        assert_eq!(
            machine.handle(Event::Timer, late),
            [Command::Send { priority: 254 }]
        );
        assert_eq!(machine.deadline(), Some(tick + Duration::from_secs(1)));
        let very_late = tick + Duration::from_secs(3);
        machine.handle(Event::Timer, very_late);
        assert_eq!(machine.deadline(), Some(very_late + Duration::from_secs(1)));
        let tick = machine.deadline().unwrap();
        // A lower priority: discarded; priority 0: answered at once.
        assert!(machine.handle(advert(100), tick).is_empty());
        assert_eq!(
            machine.handle(advert(0), tick),
            [Command::Send { priority: 254 }]
        );
        // Higher: back to backup, addresses removed.
        let commands = machine.handle(advert(255), tick);
        assert_eq!(commands[0], Command::RemoveAddresses);
        assert_eq!(transitions(&commands), [(State::Master, State::Backup)]);
    }

    #[test]
    fn section_6_4_3_equal_priority_goes_to_the_higher_address() {
        let now = Instant::now();
        let mut machine = Machine::new(settings(100));
        machine.handle(Event::Startup, now);
        machine.handle(Event::Timer, now + Duration::from_secs(4));
        let higher = Event::Advertisement {
            src: "10.0.0.9".parse().unwrap(),
            advert: Advertisement {
                version: Version::V3,
                vrid: 51,
                priority: 100,
                interval_cs: 100,
                addresses: vec![],
                auth: Auth::None,
            },
        };
        let lower = Event::Advertisement {
            src: "10.0.0.1".parse().unwrap(),
            advert: Advertisement {
                version: Version::V3,
                vrid: 51,
                priority: 100,
                interval_cs: 100,
                addresses: vec![],
                auth: Auth::None,
            },
        };
        assert!(machine.handle(lower, now).is_empty());
        assert_eq!(machine.state(), State::Master);
        machine.handle(higher, now);
        assert_eq!(machine.state(), State::Backup);
    }

    #[test]
    fn shutdown_hands_over_with_priority_zero() {
        let now = Instant::now();
        let mut machine = Machine::new(settings(OWNER_PRIORITY));
        machine.handle(Event::Startup, now);
        let commands = machine.handle(Event::Shutdown, now);
        assert_eq!(commands[0], Command::Send { priority: 0 });
        assert_eq!(commands[1], Command::RemoveAddresses);
        assert_eq!(machine.state(), State::Initialize);
        assert_eq!(machine.deadline(), None);
    }

    #[test]
    fn fault_stops_everything_until_recovery() {
        let now = Instant::now();
        let mut machine = Machine::new(settings(OWNER_PRIORITY));
        machine.handle(Event::Startup, now);
        let commands = machine.handle(Event::Fault(true), now);
        assert_eq!(
            commands,
            [
                Command::Send { priority: 0 },
                Command::RemoveAddresses,
                Command::Transition {
                    from: State::Master,
                    to: State::Fault
                }
            ]
        );
        assert_eq!(machine.deadline(), None);
        assert!(machine.handle(advert(100), now).is_empty());
        assert!(machine.handle(Event::Timer, now).is_empty());
        let commands = machine.handle(Event::Fault(false), now);
        assert_eq!(transitions(&commands), [(State::Fault, State::Master)]);
    }

    #[test]
    fn sync_groups_move_together_and_fault_until_all_recover() {
        let now = Instant::now();
        let mut machine = Machine::new(settings(100));
        machine.handle(Event::Startup, now);
        // Another member became master: this one follows at once.
        let commands = machine.handle(Event::Sync(State::Master), now);
        assert_eq!(transitions(&commands), [(State::Backup, State::Master)]);
        assert!(commands.contains(&Command::AddAddresses));
        // Back to backup with the group.
        let commands = machine.handle(Event::Sync(State::Backup), now);
        assert_eq!(commands[0], Command::RemoveAddresses);
        assert_eq!(machine.state(), State::Backup);
        // A member's fault puts the group into FAULT.
        machine.handle(Event::Sync(State::Fault), now);
        assert_eq!(machine.state(), State::Fault);
        // Its own fault too; the group recovering is not enough.
        machine.handle(Event::Fault(true), now);
        assert!(machine.handle(Event::Sync(State::Backup), now).is_empty());
        assert_eq!(machine.state(), State::Fault);
        let commands = machine.handle(Event::Fault(false), now);
        assert_eq!(transitions(&commands), [(State::Fault, State::Backup)]);
        // Its own recovery while the group is faulty is not enough either.
        machine.handle(Event::Sync(State::Fault), now);
        machine.handle(Event::Fault(true), now);
        assert!(machine.handle(Event::Fault(false), now).is_empty());
        let commands = machine.handle(Event::Sync(State::Backup), now);
        assert_eq!(transitions(&commands), [(State::Fault, State::Backup)]);
    }

    #[test]
    fn priority_changes_take_effect_in_the_next_comparison() {
        let now = Instant::now();
        let mut machine = Machine::new(settings(100));
        machine.handle(Event::Startup, now);
        machine.handle(Event::Priority(60), now);
        // A master at 80 now outranks this router: its adverts are accepted.
        let at = now + Duration::from_secs(1);
        machine.handle(advert(80), at);
        assert_eq!(
            machine.deadline(),
            Some(at + machine.master_down_interval())
        );
        assert_eq!(machine.priority(), 60);
    }
}
