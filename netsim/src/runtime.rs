//! Running a scenario in simulated time.
//!
//! [`run`] builds a current-thread tokio runtime with the clock paused and drives a
//! scenario to completion. While every task waits, tokio jumps the clock to the
//! next timer, so a minute of simulated play takes only the CPU time its packets
//! cost. (`tokio::time::pause` needs a current-thread runtime; timers have 1 ms
//! granularity.)

use std::future::Future;

/// Runs `scenario` on a fresh current-thread runtime with paused time and returns its
/// output.
///
/// # Panics
/// If the runtime cannot be built (it can only fail for lack of OS resources).
pub fn run<F, Fut, T>(scenario: F) -> T
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("cannot build a tokio runtime");
    rt.block_on(scenario())
}
