//! The checkers' cost for `cargo xtask bench`: lbd's checker runner (the same tasks lbd
//! runs) doing TCP_CHECKs against loopback listeners at a target rate, in a network
//! namespace of its own, with the CPU time of the runner's thread over the run. The
//! listener is another process (`bench --listen PORT`), so its work is not counted.

use std::{
    path::Path,
    process::{Child, Stdio},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lb_userspace::check::{
    health::Health,
    runner::{PROBES, Runner},
};
use serde::Serialize;

use crate::netns::Netns;

/// The port the listener answers on.
const PORT: u16 = 19_000;

#[derive(Debug, Serialize)]
pub struct ChecksRow {
    pub checkers: usize,
    /// The rate asked for (checkers / delay_loop).
    pub target_per_sec: f64,
    /// Probes done per second over the measured window.
    pub done_per_sec: f64,
    /// CPU time of the runner's thread over the window, in percent of one core.
    pub cpu_percent: f64,
    /// Of which in the process (tokio, the checker code) and in the kernel (sockets, and
    /// the loopback's TCP handshakes, which run on the sending thread).
    pub user_percent: f64,
    pub system_percent: f64,
    /// The same scaled to 10,000 checks per second (from the CPU time per check).
    pub cpu_percent_at_10k: f64,
}

/// Accept and close connections on `port` until killed (`bench --listen`).
pub fn listen(port: u16) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let listener = std::net::TcpListener::bind(("0.0.0.0", port)).context("bind")?;
    // A longer accept queue than std's 128, so that bursts are not dropped (a dropped
    // SYN costs the check a retransmission).
    // SAFETY: listen(2) on a bound socket this function owns.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    println!("ready");
    let listener = std::sync::Arc::new(listener);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let listener = listener.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    drop(stream);
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

/// CPU time used by the calling thread: user, system.
fn thread_cpu() -> (Duration, Duration) {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (time(usage.ru_utime), time(usage.ru_stime))
}

/// `checkers` TCP_CHECKs every `delay_loop` for `window` (after a warmup of one
/// delay_loop), run by the bench binary at `bench` as listener.
pub fn measure(
    bench: &Path,
    checkers: usize,
    delay_loop: Duration,
    window: Duration,
) -> anyhow::Result<ChecksRow> {
    let ns = Netns::create("lbt-bchk")?;
    let mut listener: Child = ns
        .command(bench)?
        .args(["--listen", &PORT.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("start the listener")?;
    // Wait for "ready".
    {
        use std::io::BufRead as _;
        let stdout = listener.stdout.take().context("listener stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
    }
    let mut config =
        String::from("virtual_server 10.255.0.1 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n");
    for i in 0..checkers {
        config += &format!(
            " real_server 127.{}.{}.{} 80 {{\n  TCP_CHECK {{\n   connect_port {PORT}\n   connect_timeout 1\n   delay_loop {}\n   warmup {}\n  }}\n }}\n",
            1 + i / 62_500,
            (i / 250) % 250,
            1 + i % 250,
            delay_loop.as_secs_f64(),
            delay_loop.as_secs_f64(),
        );
    }
    config += "}\n";
    let config = lb_userspace::config::parse(&config, Path::new("bench-checks.conf"))?.config;
    let result = ns.run(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let (sender, mut reports) = tokio::sync::mpsc::unbounded_channel();
            let health = Health::new(&config, None);
            let mut runner = Runner::new(sender);
            runner.update(&config, &health);
            // Verdict changes are drained as lbd would take them.
            tokio::spawn(async move { while reports.recv().await.is_some() {} });
            tokio::time::sleep(delay_loop * 2).await;
            let (probes, cpu, started) =
                (PROBES.load(Ordering::Relaxed), thread_cpu(), Instant::now());
            tokio::time::sleep(window).await;
            let elapsed = started.elapsed().as_secs_f64();
            let done = PROBES.load(Ordering::Relaxed) - probes;
            let (user, system) = thread_cpu();
            let user = (user - cpu.0).as_secs_f64();
            let system = (system - cpu.1).as_secs_f64();
            let cpu = user + system;
            drop(runner);
            Ok(ChecksRow {
                checkers,
                target_per_sec: checkers as f64 / delay_loop.as_secs_f64(),
                done_per_sec: done as f64 / elapsed,
                cpu_percent: 100.0 * cpu / elapsed,
                user_percent: 100.0 * user / elapsed,
                system_percent: 100.0 * system / elapsed,
                cpu_percent_at_10k: 100.0 * cpu / done as f64 * 10_000.0,
            })
        })
    });
    let _ = listener.kill();
    let _ = listener.wait();
    result
}
