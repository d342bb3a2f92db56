//! The push worker: one loop of attestation cycles (authenticate when
//! needed → capabilities → evidence → the verifier's pause), whose outcome
//! decides how long to sleep. It never ends by itself: the shutdown signal
//! stops it between or inside cycles (a TPM job in flight finishes on the
//! owner thread; its answer is dropped).
//!
//! Timing follows the verifier: `seconds_to_next_attestation` after
//! evidence, `Retry-After` on 429 and 503, and the shared [`RetryPolicy`]
//! (capped, jittered) while the verifier is unreachable or failing. Sessions
//! are opened only without a usable token, at most [`SESSIONS_PER_MINUTE`]
//! a minute, below the verifier's per-agent limit of 15.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::protocol::{self, Offer};
use super::verifier::{CallError, Token, VerifierClient};
use crate::attestation::{Attestation, AttestationError};
use crate::retry::{self, RetryPolicy};
use crate::tpm::{Tpm, TpmError};

/// Sessions the agent opens in any 60 s at most.
pub const SESSIONS_PER_MINUTE: usize = 10;
/// Attempts in a row that may restart a cycle at once (a 401, a stale
/// attestation) before the retry policy's pauses apply.
const IMMEDIATE_RESTARTS: u32 = 2;

/// What a cycle needs that does not change.
#[derive(Debug, Clone)]
pub struct WorkerSetup {
    /// The verifier client.
    pub client: VerifierClient,
    /// The evidence back end.
    pub attestation: Attestation,
    /// The TPM (for TPM2_Certify).
    pub tpm: Tpm,
    /// Pauses on failure.
    pub retry: RetryPolicy,
    /// The pause when the verifier names none (`attestation_interval_seconds`).
    pub interval: Duration,
    /// `certification_keys_server_identifier`.
    pub key_id: String,
    /// `uefi_logs_evidence_version`.
    pub uefi_version: String,
    /// Boot time, Unix seconds.
    pub boot_time: u64,
}

/// How a cycle ended, as far as timing is concerned.
#[derive(Debug)]
enum Failure {
    /// The token was refused (401): authenticate and go again.
    Unauthorized,
    /// The verifier asked to wait (429, 503 with `Retry-After`, seconds).
    Throttled(u64, CallError),
    /// The attestation went stale (403: expired challenge, newer
    /// attestation): start a new one.
    Stale(CallError),
    /// The verifier has no record of this agent (404): it was deleted, or
    /// not added yet. Asked again every attestation interval, not faster.
    NotEnrolled(CallError),
    /// Anything else: unreachable, 5xx, not enrolled, refused proof, an
    /// unusable answer, a TPM error. Retried with the policy's pauses.
    Failed(String),
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Status { status: 401, .. } => Self::Unauthorized,
            CallError::Status {
                status: 429 | 503,
                retry_after: Some(secs),
                ..
            } => Self::Throttled(secs, e),
            CallError::Status { status: 403, .. } => Self::Stale(e),
            CallError::Status { status: 404, .. } => Self::NotEnrolled(e),
            other => Self::Failed(other.to_string()),
        }
    }
}

impl From<AttestationError> for Failure {
    fn from(e: AttestationError) -> Self {
        Self::Failed(format!("collecting evidence: {e}"))
    }
}

impl From<TpmError> for Failure {
    fn from(e: TpmError) -> Self {
        Self::Failed(format!("proof of possession: {e}"))
    }
}

/// What the operator is told about, once per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Attesting,
    Failing,
}

/// The worker's state between cycles.
#[derive(Debug)]
pub struct Worker {
    setup: WorkerSetup,
    token: Option<Token>,
    sessions: VecDeque<Instant>,
    state: State,
    failures: u32,
    restarts: u32,
    cycles: u64,
}

impl Worker {
    /// A worker that has not talked to the verifier yet.
    pub fn new(setup: WorkerSetup) -> Self {
        Self {
            setup,
            token: None,
            sessions: VecDeque::new(),
            state: State::Starting,
            failures: 0,
            restarts: 0,
            cycles: 0,
        }
    }

    /// Attests until cancelled.
    pub async fn run(&mut self) {
        loop {
            let pause = match self.cycle().await {
                Ok(pause) => self.succeeded(pause),
                Err(failure) => self.failed(failure),
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Completed cycles so far.
    pub fn cycles(&self) -> u64 {
        self.cycles
    }

    /// One cycle; the verifier's pause before the next one.
    async fn cycle(&mut self) -> Result<Duration, Failure> {
        self.ensure_token().await?;
        let token = self
            .token
            .as_ref()
            .ok_or_else(|| Failure::Failed("no token".into()))?;
        let setup = &self.setup;
        let offered = setup.attestation.offer().await?;
        let (hash, signing) = (offered.hash, offered.signing);
        let offer = Offer {
            evidence: &offered,
            key_id: &setup.key_id,
            uefi_version: &setup.uefi_version,
            boot_time: setup.boot_time,
        };
        let began = Instant::now();
        let capabilities = protocol::capabilities(&offer);
        let (url, answer) = setup.client.send_capabilities(token, &capabilities).await?;
        let chosen = protocol::chosen_parameters(&answer, hash, signing)
            .map_err(|e| Failure::Failed(e.to_string()))?;
        let negotiated = Instant::now();
        let evidence = setup.attestation.push_evidence(&chosen.request).await?;
        let collected = Instant::now();
        let body = protocol::evidence(&chosen.items, &evidence);
        let next = setup.client.send_evidence(token, &url, &body).await?;
        let ms = |from: Instant, to: Instant| to.duration_since(from).as_secs_f64() * 1000.0;
        let done = Instant::now();
        tracing::debug!(
            "cycle {}: evidence accepted in {:.2} ms (capabilities {:.2} ms, evidence collected {:.2} ms, sent {:.2} ms) at {url}; PCRs {:?}, IMA from {:?}",
            self.cycles + 1,
            ms(began, done),
            ms(began, negotiated),
            ms(negotiated, collected),
            ms(collected, done),
            chosen.request.pcrs,
            chosen.request.ima_offset
        );
        Ok(next.unwrap_or(setup.interval))
    }

    /// Makes sure a token good for one more cycle is held.
    async fn ensure_token(&mut self) -> Result<(), Failure> {
        let usable = self
            .token
            .as_ref()
            .is_some_and(|t| !t.needs_renewal(Instant::now()));
        if !usable {
            self.token = None;
            self.respect_session_limit().await;
            let client = &self.setup.client;
            let opened = client.open_session().await;
            // Only sessions the verifier saw count against its limit.
            if !matches!(opened, Err(CallError::Transport(_))) {
                self.sessions.push_back(Instant::now());
            }
            let (session, challenge) = opened?;
            let (attest, signature) = self.setup.tpm.certify_ak(challenge).await?;
            let token = client.prove(&session, &attest, &signature).await?;
            let validity = token.expires_in().map_or("until refused".to_string(), |d| {
                format!("for {} s", d.as_secs())
            });
            if self.state == State::Attesting {
                tracing::debug!("renewed the verifier token (valid {validity})");
            } else {
                tracing::info!(
                    "authenticated to the verifier {} with a TPM proof of possession (token valid {validity})",
                    client.base()
                );
            }
            self.token = Some(token);
        }
        Ok(())
    }

    /// Waits until opening one more session keeps within
    /// [`SESSIONS_PER_MINUTE`].
    async fn respect_session_limit(&mut self) {
        const WINDOW: Duration = Duration::from_secs(60);
        let now = Instant::now();
        while self
            .sessions
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.sessions.pop_front();
        }
        if self.sessions.len() >= SESSIONS_PER_MINUTE {
            if let Some(oldest) = self.sessions.pop_front() {
                let wait = WINDOW.saturating_sub(now.duration_since(oldest));
                tracing::warn!(
                    "{SESSIONS_PER_MINUTE} verifier sessions in the last minute; waiting {} s before the next",
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
            }
        }
    }

    fn succeeded(&mut self, pause: Duration) -> Duration {
        self.cycles += 1;
        match self.state {
            State::Attesting => {}
            State::Starting => tracing::info!(
                "attesting to the verifier {} (next evidence in {} s)",
                self.setup.client.base(),
                pause.as_secs()
            ),
            State::Failing => tracing::info!(
                "recovered: attesting to the verifier {} again after {} failed attempts",
                self.setup.client.base(),
                self.failures
            ),
        }
        self.state = State::Attesting;
        self.failures = 0;
        self.restarts = 0;
        let metrics = crate::metrics::get();
        crate::metrics::Metrics::count_outcome(&metrics.quotes, "push", "served");
        metrics.attested_now();
        crate::service::status(&format!(
            "attesting to the verifier {}: evidence accepted ({} cycles), next in {} s",
            self.setup.client.base(),
            self.cycles,
            pause.as_secs()
        ));
        pause
    }

    fn failed(&mut self, failure: Failure) -> Duration {
        let (reason, pause) = match failure {
            Failure::Unauthorized | Failure::Stale(_) if self.restarts < IMMEDIATE_RESTARTS => {
                self.restarts += 1;
                if let Failure::Stale(e) = &failure {
                    tracing::debug!("{e}; starting a new attestation");
                } else {
                    tracing::debug!("token refused (401); authenticating again");
                    self.token = None;
                }
                return Duration::ZERO;
            }
            Failure::Unauthorized => {
                self.token = None;
                (
                    "the verifier keeps refusing fresh tokens (401)".to_string(),
                    None,
                )
            }
            Failure::Stale(e) => (e.to_string(), None),
            Failure::NotEnrolled(e) => (
                format!(
                    "the verifier has no record of this agent ({e}); it was deleted or is not added yet: \
                     asking again every {} s until it is added",
                    self.setup.interval.as_secs()
                ),
                Some(self.setup.interval),
            ),
            // What the verifier asked for, within the policy: capped at
            // max_delay and never zero, as for the registrar.
            Failure::Throttled(secs, e) => {
                (e.to_string(), Some(self.setup.retry.server_requested(secs)))
            }
            Failure::Failed(reason) => (reason, None),
        };
        self.failures += 1;
        crate::metrics::Metrics::count_outcome(&crate::metrics::get().quotes, "push", "failed");
        let pause =
            pause.unwrap_or_else(|| self.setup.retry.delay(self.failures, retry::unit_random()));
        if self.state == State::Failing {
            tracing::debug!("{reason}; next attempt in {:.1} s", pause.as_secs_f64());
        } else {
            tracing::warn!(
                "verifier: {reason}; next attempt in {:.1} s (retrying with pauses up to {} s)",
                pause.as_secs_f64(),
                self.setup.retry.max_delay.as_secs()
            );
            self.state = State::Failing;
        }
        crate::service::status(&format!(
            "waiting for the verifier {} ({} failed attempts): {reason}",
            self.setup.client.base(),
            self.failures
        ));
        pause
    }
}
