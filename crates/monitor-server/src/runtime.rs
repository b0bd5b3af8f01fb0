//! The tokio runtime the server runs on: how many worker threads, and under which CPU
//! scheduling policy (see [`SchedPolicy`] for why it matters to a fan-out server).

use crate::config::{SchedPolicy, Settings};

/// Builds the multi-threaded runtime that `settings` ask for: `workers` worker threads (or
/// one per CPU), each put under `sched_policy` as it starts.
///
/// # Errors
/// The runtime's own, e.g. when a thread cannot be spawned. A policy that cannot be
/// applied is not an error: it is logged once, and the threads keep the policy they had.
pub fn build(settings: &Settings) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = settings.worker_threads() {
        builder.worker_threads(workers);
    }
    if settings.sched_policy == SchedPolicy::Batch {
        builder.on_thread_start(batch::apply_to_this_thread);
    }
    builder.enable_all().build()
}

#[cfg(target_os = "linux")]
mod batch {
    use std::sync::atomic::{AtomicBool, Ordering};

    use preempt_rt::sched::{
        get_scheduler, set_scheduler, Pid, PreemptRtError, Scheduler, SchedulerParams,
    };
    use tracing::warn;

    /// Puts the calling thread under `SCHED_BATCH` if it runs under the default policy.
    /// A real-time or idle policy chosen when the server was started is the operator's,
    /// and is kept.
    pub(super) fn apply_to_this_thread() {
        static WARNED: AtomicBool = AtomicBool::new(false);
        let this = Pid::current_thread();
        let result = get_scheduler(this).and_then(|current| match current {
            Scheduler::SCHED_NORMAL => set_scheduler(
                this,
                Scheduler::SCHED_BATCH,
                SchedulerParams { priority: 0 },
            ),
            _ => Ok(()),
        });
        if let Err(e) = result {
            if !WARNED.swap(true, Ordering::Relaxed) {
                let error = match e {
                    PreemptRtError::Errno(n) => std::io::Error::from_raw_os_error(n).to_string(),
                    other => other.to_string(),
                };
                warn!(
                    %error,
                    "server.sched_policy = batch: cannot put the worker threads under \
                     SCHED_BATCH; they keep the policy the server was started with"
                );
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod batch {
    /// `SCHED_BATCH` exists only on Linux.
    pub(super) fn apply_to_this_thread() {}
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use preempt_rt::sched::{get_scheduler, set_scheduler, Pid, Scheduler, SchedulerParams};

    /// The policy `apply_to_this_thread` leaves a fresh thread in, when the thread starts
    /// under `start`.
    fn after_apply(start: Scheduler) -> Scheduler {
        std::thread::spawn(move || {
            let this = Pid::current_thread();
            set_scheduler(this, start, SchedulerParams { priority: 0 }).unwrap();
            super::batch::apply_to_this_thread();
            get_scheduler(this).unwrap()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn the_default_policy_becomes_batch_and_a_chosen_one_is_kept() {
        assert_eq!(after_apply(Scheduler::SCHED_NORMAL), Scheduler::SCHED_BATCH);
        assert_eq!(after_apply(Scheduler::SCHED_IDLE), Scheduler::SCHED_IDLE);
        assert_eq!(after_apply(Scheduler::SCHED_BATCH), Scheduler::SCHED_BATCH);
    }
}
