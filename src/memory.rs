//! Keeping an idle agent small, for fleets where every machine pays for it.
//! glibc's malloc gives each thread that allocates an arena of its own and
//! keeps freed pages in it; an agent whose threads each touch the heap once
//! at start (TLS set-up, TPM set-up, registration) keeps megabytes of free
//! memory for its lifetime. One arena (the threads rarely allocate at the
//! same moment) and returning free pages after the start's peak keep the
//! private memory to what is live.

/// Limits malloc to one arena. Call before any other thread starts.
#[allow(unsafe_code)]
pub fn one_arena() {
    // SAFETY: mallopt only changes malloc's parameters; with no other
    // thread running there is no concurrent allocation to disturb.
    let done = unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1) };
    if done != 1 {
        tracing::debug!("mallopt(M_ARENA_MAX, 1) was refused");
    }
}

/// How long after registration the first trim runs: the front end's own
/// start-up allocations have come and gone by then, and so have the async
/// runtime's idle blocking threads (they end after 10 s), whose memory goes
/// back to the heap as they do. Then every [`TRIM_EVERY`].
const FIRST_TRIM: std::time::Duration = std::time::Duration::from_secs(15);
/// See [`FIRST_TRIM`].
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Returns free heap pages to the system now, then keeps doing so every
/// minute: after the start's peak and after large answers (a full IMA log)
/// the pages they used go back instead of staying with the agent. A trim
/// of this heap takes microseconds. Never ends.
pub async fn keep_trimmed() -> std::convert::Infallible {
    tokio::time::sleep(FIRST_TRIM).await;
    let mut ticks = tokio::time::interval(TRIM_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        release_free();
    }
}

/// Returns free heap pages to the system.
#[allow(unsafe_code)]
fn release_free() {
    // SAFETY: malloc_trim is thread-safe (it takes each arena's lock) and
    // only gives back pages no allocation uses.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
