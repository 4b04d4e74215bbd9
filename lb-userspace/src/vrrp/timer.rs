//! A timer precise to tens of microseconds for the VRRP instances: a `timerfd` on the
//! instance's runtime. tokio's own timers round every deadline up to the next millisecond,
//! which is 10% of a 10 ms advert interval (VRRPv3 allows 10 ms). Falls back to tokio's
//! timer if the kernel gives no timerfd.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Instant,
};

use tokio::io::unix::AsyncFd;

pub struct Timer {
    fd: Option<AsyncFd<OwnedFd>>,
}

impl Default for Timer {
    fn default() -> Self {
        Self::new()
    }
}

impl Timer {
    /// A timer (inside a tokio runtime).
    pub fn new() -> Self {
        // SAFETY: plain syscall; a valid descriptor is owned below.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        let fd = (raw >= 0)
            // SAFETY: a descriptor we just created and nobody else owns.
            .then(|| unsafe { OwnedFd::from_raw_fd(raw) })
            // SAFETY: an open descriptor, owned by the AsyncFd for its whole life, whose
            // `as_raw_fd` never changes.
            .and_then(|fd| unsafe { AsyncFd::register(fd) }.ok());
        if fd.is_none() {
            tracing::debug!("no timerfd; VRRP timers have tokio's millisecond resolution");
        }
        Self { fd }
    }

    /// Wait until `at` (or never, for `None`).
    pub async fn sleep_until(&mut self, at: Option<Instant>) {
        let Some(at) = at else {
            return std::future::pending().await;
        };
        let Some(fd) = &self.fd else {
            return tokio::time::sleep_until(at.into()).await;
        };
        let now = Instant::now();
        if at <= now {
            return;
        }
        if arm(fd.get_ref(), at - now).is_err() {
            return tokio::time::sleep_until(at.into()).await;
        }
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return tokio::time::sleep_until(at.into()).await;
            };
            let mut expirations = 0u64;
            // SAFETY: reads 8 bytes into a u64 we own.
            let n = unsafe {
                libc::read(
                    fd.get_ref().as_raw_fd(),
                    (&raw mut expirations).cast(),
                    size_of::<u64>(),
                )
            };
            if n == size_of::<u64>() as isize {
                return;
            }
            ready.clear_ready();
            if Instant::now() >= at {
                return;
            }
        }
    }
}

/// Arm `fd` to expire once, `after` from now (replacing any earlier arming and its
/// pending expirations).
fn arm(fd: &OwnedFd, after: std::time::Duration) -> io::Result<()> {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: after.as_secs() as libc::time_t,
            // A zero value would disarm the timer.
            tv_nsec: libc::c_long::from(after.subsec_nanos().max(1)),
        },
    };
    // SAFETY: valid descriptor and itimerspec.
    let rc = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn wakes_at_the_deadline_and_can_be_rearmed() {
        let mut timer = Timer::new();
        for _ in 0..3 {
            let at = Instant::now() + Duration::from_millis(5);
            timer.sleep_until(Some(at)).await;
            assert!(Instant::now() >= at);
        }
        // A sleep given up (as when another branch of a select wins) leaves nothing
        // behind for the next one.
        let far = Instant::now() + Duration::from_secs(60);
        let given_up = tokio::time::timeout(Duration::from_millis(2), timer.sleep_until(Some(far)));
        assert!(given_up.await.is_err());
        let at = Instant::now() + Duration::from_millis(3);
        timer.sleep_until(Some(at)).await;
        assert!(Instant::now() >= at);
        // The past is now.
        timer.sleep_until(Some(Instant::now())).await;
    }
}
