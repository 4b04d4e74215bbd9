//! Connection sync end to end between two data planes: two balancers (the test's private
//! maps, run with BPF_PROG_TEST_RUN) with the same service, each with a sync daemon on
//! one end of a veth pair in a namespace of the test's own. The master's flows reach the
//! backup over IPVS's sync protocol: before, the backup sends a mid-stream segment of the
//! connection to the kernel (nothing to schedule it by); after, to the master's real,
//! counted. A backup with another sync id takes nothing. A returning backup holds
//! preemption until the master's resync brought it every connection, or until its wait
//! is over. Needs root (BPF, namespaces); see `lb_tests::privilege`.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use lb_sync::{
    daemon::{Role, Settings},
    handover::Outcome,
};
use lb_tests::{
    netns::{Netns, remove_leftovers},
    packet::{Frame, TCP_ACK, v4},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
    wait::wait_until,
};
use lb_userspace::{
    dataplane::xdp::XdpOptions,
    sync::{
        runner::{SyncParts, SyncRunner},
        socket::SyncSockets,
    },
    vrrp::PreemptionHold,
};

const VIP: [u8; 4] = [192, 0, 2, 94];
/// How long each wait of these tests may take.
const SOON: Duration = Duration::from_secs(5);
const CLIENT: [u8; 4] = [198, 18, 22, 1];
const GROUP: [u8; 4] = [224, 0, 0, 81];

fn balancer() -> TestBalancer {
    balancer_with(
        "virtual_server 192.0.2.94 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.9.4.1 80 { }\n real_server 10.9.4.2 80 { }\n}\n",
    )
}

/// A balancer with the two reals' next hops, programmed with `config`.
fn balancer_with(config: &str) -> TestBalancer {
    let mut table = HashMap::new();
    for last in 1..=2u8 {
        table.insert(
            IpAddr::from([10, 9, 4, last]),
            next_hop([0x02, 0xef, 0, 0, 4, last], None),
        );
    }
    let mut balancer = TestBalancer::load_with(
        StaticNextHops(table),
        XdpOptions {
            flow_table_size: 1 << 12,
            sync_events: true,
            ..XdpOptions::private()
        },
    )
    .expect("load");
    balancer.apply_config(config).expect("apply");
    balancer
}

/// The sync link (namespaces named from `prefix`): `sa` in one namespace, `sb` in another, the two ends of a veth pair
/// (in one namespace, a datagram from the other end's address would be a martian).
fn sync_link(prefix: &str) -> (Netns, Netns) {
    remove_leftovers(prefix).expect("leftovers");
    let a = Netns::create(&format!("{prefix}-a")).expect("netns");
    let b = Netns::create(&format!("{prefix}-b")).expect("netns");
    a.ip(&[
        "link",
        "add",
        "sa",
        "type",
        "veth",
        "peer",
        "name",
        "sb",
        "netns",
        b.name(),
    ])
    .expect("veth");
    for (ns, interface, addr) in [(&a, "sa", "192.168.77.1/24"), (&b, "sb", "192.168.77.2/24")] {
        ns.ip(&["addr", "add", addr, "dev", interface])
            .expect("addr");
        ns.ip(&["link", "set", interface, "up"]).expect("up");
    }
    (a, b)
}

/// A daemon for `balancer` on `interface` of `ns`, in `role`, with sync id `syncid`,
/// walking the table every 60 s (as lbd does).
fn runner(
    ns: &Netns,
    interface: &'static str,
    balancer: &mut TestBalancer,
    syncid: u8,
    role: Role,
) -> SyncRunner {
    let runner = spawn(
        ns,
        interface,
        balancer,
        syncid,
        Duration::from_secs(60),
        None,
    );
    runner.set_role(role);
    runner
}

/// As `runner`, walking the table every `refresh_interval`.
fn runner_walking(
    ns: &Netns,
    interface: &'static str,
    balancer: &mut TestBalancer,
    syncid: u8,
    role: Role,
    refresh_interval: Duration,
) -> SyncRunner {
    let runner = spawn(ns, interface, balancer, syncid, refresh_interval, None);
    runner.set_role(role);
    runner
}

/// A daemon in no role yet; holding preemption for up to `resync_wait` when given.
fn spawn(
    ns: &Netns,
    interface: &'static str,
    balancer: &mut TestBalancer,
    syncid: u8,
    refresh_interval: Duration,
    resync_wait: Option<Duration>,
) -> SyncRunner {
    let open = move |port| {
        ns.run(move || Ok(SyncSockets::open(interface, IpAddr::from(GROUP), port, 1)?))
            .expect("sockets")
    };
    SyncRunner::spawn(SyncParts {
        settings: Settings {
            syncid,
            maxlen: 1472,
            flush_after: Duration::from_millis(100),
        },
        sockets: open(8848),
        resync: open(8849),
        hold: PreemptionHold::new(resync_wait.is_some()),
        resync_wait: resync_wait.unwrap_or_default(),
        events: balancer.dataplane.take_sync_events().expect("events"),
        table: balancer.dataplane.sync_table().expect("maps"),
        timeouts: lb_common::conn::Timeouts::IPVS,
        refresh_interval,
    })
    .expect("spawn")
}

#[test]
fn the_masters_connections_reach_the_backup_on_the_same_real() {
    if !require_root("the_masters_connections_reach_the_backup_on_the_same_real") {
        return;
    }
    let (a, b) = sync_link("lbt-syr");
    let mut master = balancer();
    let mut backup = balancer();
    let master_sync = runner(&a, "sa", &mut master, 5, Role::Master);
    let backup_sync = runner(&b, "sb", &mut backup, 5, Role::Backup);
    let other_id = {
        let mut other = balancer();
        runner(&b, "sb", &mut other, 6, Role::Backup)
    };
    let flow = |port| Frame::tcp(v4(CLIENT, VIP), port, 80);
    let ack = |port| flow(port).with_tcp_flags(TCP_ACK).bytes();
    // Ten connections through the master, spread by rr over both reals.
    let mut reals = HashMap::new();
    for port in 10_000..10_010u16 {
        assert_eq!(
            backup.real_of(&ack(port)),
            None,
            "the backup knows nothing yet"
        );
        let real = master.real_of(&flow(port).bytes()).expect("scheduled");
        assert_eq!(master.real_of(&ack(port)), Some(real));
        reals.insert(port, real);
    }
    wait_until("the backup installs the ten connections", SOON, || {
        backup_sync.status().installed >= 10
    });
    for (&port, &real) in &reals {
        assert_eq!(backup.real_of(&ack(port)), Some(real), "port {port}");
    }
    // The master counts what it sent just after sending it.
    wait_until("the master counts the records it sent", SOON, || {
        master_sync.status().counters.conns_sent >= 10
    });
    assert_eq!(master_sync.status().role, Role::Master);
    let got = backup_sync.status();
    assert_eq!(got.install_errors, 0, "{got:?}");
    // Each connection is one ESTABLISHED connection on the backup's real.
    let mut active = 0;
    for id in backup.real_ids().expect("ids").into_values() {
        active += backup.conns(id).expect("counts").active;
    }
    assert_eq!(active, 10);
    // A daemon with another sync id took none, and counted them.
    wait_until(
        "the other daemon counts the messages of another id",
        SOON,
        || other_id.status().counters.other_syncid >= 1,
    );
    assert_eq!(other_id.status().installed, 0);
}

#[test]
fn a_backup_that_starts_late_learns_the_masters_flows_from_its_walks() {
    if !require_root("a_backup_that_starts_late_learns_the_masters_flows_from_its_walks") {
        return;
    }
    let (a, b) = sync_link("lbt-syw");
    let mut master = balancer();
    let mut backup = balancer();
    let master_sync = runner_walking(
        &a,
        "sa",
        &mut master,
        5,
        Role::Master,
        Duration::from_millis(300),
    );
    let flow = |port| Frame::tcp(v4(CLIENT, VIP), port, 80);
    let ack = |port| flow(port).with_tcp_flags(TCP_ACK).bytes();
    let mut reals = HashMap::new();
    for port in 11_000..11_005u16 {
        let real = master.real_of(&flow(port).bytes()).expect("scheduled");
        assert_eq!(master.real_of(&ack(port)), Some(real));
        reals.insert(port, real);
    }
    // The messages for these flows are sent and gone before the backup starts.
    wait_until("the master sends its events", SOON, || {
        master_sync.status().counters.conns_sent >= 10
    });
    let backup_sync = runner(&b, "sb", &mut backup, 5, Role::Backup);
    // The master's next walk resends the flows active since its last one.
    wait_until("the backup learns the five flows", SOON, || {
        backup_sync.status().installed >= 5
    });
    for (&port, &real) in &reals {
        assert_eq!(backup.real_of(&ack(port)), Some(real), "port {port}");
    }
    wait_until("the master counts the flows its walks resent", SOON, || {
        master_sync.status().refreshed >= 5
    });
    assert_eq!(master_sync.status().last_walk_error, None);
}

#[test]
fn a_returning_backup_holds_preemption_until_the_masters_resync() {
    if !require_root("a_returning_backup_holds_preemption_until_the_masters_resync") {
        return;
    }
    let (a, b) = sync_link("lbt-syh");
    let mut master = balancer();
    let mut backup = balancer();
    let master_sync = runner(&a, "sa", &mut master, 5, Role::Master);
    let flow = |port| Frame::tcp(v4(CLIENT, VIP), port, 80);
    let ack = |port| flow(port).with_tcp_flags(TCP_ACK).bytes();
    let mut reals = HashMap::new();
    for port in 12_000..12_005u16 {
        let real = master.real_of(&flow(port).bytes()).expect("scheduled");
        assert_eq!(master.real_of(&ack(port)), Some(real));
        reals.insert(port, real);
    }
    // Sent while the backup was away; the master's next walk is a minute off.
    wait_until("the master sends its events", SOON, || {
        master_sync.status().counters.conns_sent >= 10
    });
    let backup_sync = spawn(
        &b,
        "sb",
        &mut backup,
        5,
        Duration::from_secs(60),
        Some(Duration::from_secs(10)),
    );
    let hold = backup_sync.preemption_hold();
    assert!(hold.is_held(), "held from the start");
    backup_sync.set_role(Role::Backup);
    wait_until("the resync ends", SOON, || {
        backup_sync.status().last_resync.is_some()
    });
    assert!(!hold.is_held(), "free once the resync is complete");
    let got = backup_sync.status();
    // Complete, with the five flows (each flow is resent once by the walk).
    assert_eq!(
        got.last_resync.map(|last| last.outcome),
        Some(Outcome::Complete { conns: 5 }),
        "{got:?}"
    );
    assert!(got.installed >= 5, "{got:?}");
    for (&port, &real) in &reals {
        assert_eq!(backup.real_of(&ack(port)), Some(real), "port {port}");
    }
    let served = master_sync.status();
    assert_eq!(served.handover.requests_served, 1, "{served:?}");
    assert_eq!(served.resync_conns_served, 5);
    assert!(got.peers.contains_key(&IpAddr::from([192, 168, 77, 1])));
}

#[test]
fn a_resync_nobody_answers_ends_after_the_wait() {
    if !require_root("a_resync_nobody_answers_ends_after_the_wait") {
        return;
    }
    let (_a, b) = sync_link("lbt-syt");
    let mut backup = balancer();
    let wait = Duration::from_millis(600);
    let backup_sync = spawn(
        &b,
        "sb",
        &mut backup,
        5,
        Duration::from_secs(60),
        Some(wait),
    );
    let hold = backup_sync.preemption_hold();
    let asked = Instant::now();
    backup_sync.set_role(Role::Backup);
    wait_until("the wait ends", SOON, || {
        backup_sync.status().last_resync.is_some()
    });
    assert!(asked.elapsed() >= wait, "not before the wait is over");
    assert!(!hold.is_held());
    let got = backup_sync.status();
    assert_eq!(
        got.last_resync.map(|last| last.outcome),
        Some(Outcome::TimedOut)
    );
    assert_eq!(got.handover.requests_sent, 1);
    assert_eq!(got.handover.resyncs_timed_out, 1);
    // A sync thread that ends holds nothing: one still waiting for its role lets go.
    drop(backup_sync);
    let mut again = balancer();
    let waiting = spawn(
        &b,
        "sb",
        &mut again,
        5,
        Duration::from_secs(60),
        Some(wait * 100),
    );
    let hold = waiting.preemption_hold();
    assert!(hold.is_held());
    drop(waiting);
    assert!(!hold.is_held(), "the stopped thread released the hold");
}

#[test]
fn without_an_instance_each_director_sends_its_own_and_takes_the_others() {
    if !require_root("without_an_instance_each_director_sends_its_own_and_takes_the_others") {
        return;
    }
    let (a, b) = sync_link("lbt-syb");
    let mut one = balancer();
    let mut other = balancer();
    let one_sync = runner(&a, "sa", &mut one, 5, Role::MasterBackup);
    let other_sync = runner(&b, "sb", &mut other, 5, Role::MasterBackup);
    let flow = |port| Frame::tcp(v4(CLIENT, VIP), port, 80);
    let ack = |port| flow(port).with_tcp_flags(TCP_ACK).bytes();
    // Each director schedules its own connections.
    let mut reals = HashMap::new();
    for port in 13_000..13_004u16 {
        let (here, there) = if port % 2 == 0 {
            (&mut one, &mut other)
        } else {
            (&mut other, &mut one)
        };
        assert_eq!(there.real_of(&ack(port)), None);
        let real = here.real_of(&flow(port).bytes()).expect("scheduled");
        assert_eq!(here.real_of(&ack(port)), Some(real));
        reals.insert(port, real);
    }
    wait_until("each takes the other's two connections", SOON, || {
        one_sync.status().installed >= 2 && other_sync.status().installed >= 2
    });
    for (&port, &real) in &reals {
        assert_eq!(one.real_of(&ack(port)), Some(real), "port {port}");
        assert_eq!(other.real_of(&ack(port)), Some(real), "port {port}");
    }
}

#[test]
fn a_persistent_clients_pin_reaches_the_backup() {
    if !require_root("a_persistent_clients_pin_reaches_the_backup") {
        return;
    }
    let persistent = |second_weight: u32| {
        format!(
            "virtual_server 192.0.2.94 80 {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n persistence_timeout 300\n real_server 10.9.4.1 80 {{ }}\n real_server 10.9.4.2 80 {{\n weight {second_weight}\n }}\n}}\n"
        )
    };
    let (a, b) = sync_link("lbt-syp");
    let mut master = balancer_with(&persistent(1));
    // On the backup the second real takes no new clients: only a pin can send one there.
    let mut backup = balancer_with(&persistent(0));
    let master_sync = runner(&a, "sa", &mut master, 5, Role::Master);
    let backup_sync = runner(&b, "sb", &mut backup, 5, Role::Backup);
    let from = |client: [u8; 4], port| Frame::tcp(v4(client, VIP), port, 80);
    // Two clients, one on each real.
    let clients = [[198, 18, 22, 1], [198, 18, 22, 2]];
    let mut reals = Vec::new();
    for client in clients {
        let real = master
            .real_of(&from(client, 14_000).bytes())
            .expect("scheduled");
        assert_eq!(
            master.real_of(&from(client, 14_000).with_tcp_flags(TCP_ACK).bytes()),
            Some(real)
        );
        reals.push(real);
    }
    assert_ne!(reals[0], reals[1], "rr put them on both reals");
    // Four flow records (SYN, then ESTABLISHED) and each client's template once.
    wait_until("the backup takes the flows and their pins", SOON, || {
        backup_sync.status().installed >= 6
    });
    let got = backup_sync.status();
    assert_eq!(got.install_errors, 0, "{got:?}");
    // A new connection of each client on the backup goes where the master pinned it.
    for (client, real) in clients.into_iter().zip(reals) {
        assert_eq!(
            backup.real_of(&from(client, 14_001).bytes()),
            Some(real),
            "client {client:?}"
        );
    }
    assert!(master_sync.status().counters.conns_sent >= 4);
}
