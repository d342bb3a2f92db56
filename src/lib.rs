//! keylime-agent: a Keylime-compatible TPM 2.0 remote-attestation agent.
//!
//! Architecture, top down: two front ends over one core.
//!
//! - [`pull`] (`keylime_agent`): the mTLS API the verifier polls and the
//!   tenant delivers to: [`pull::api`] (routes, typed parameters, the one
//!   error mapping, the HTTP server and its connection gate),
//!   [`pull::payload`] (key halves, K, payload delivery, scripts),
//!   [`pull::revocation`], [`pull::tls`].
//! - [`push`] (`keylime_push_model_agent`): sessions and evidence sent to
//!   the verifier's API v3.0, no inbound port.
//! - [`agent`]: the core both run on, and [`agent::lifecycle`], the one
//!   start-up and shutdown order each front end plugs its part into. The
//!   core holds the [`tpm`] owner (the only code that touches tss-esapi;
//!   EK, EK certificate and AK live there), the [`identity`] (agent id,
//!   NK), the [`registrar`] client (over [`http_client`], retries per
//!   [`retry`]) and [`attestation`], which combines one TPM quote
//!   transaction with the [`evidence`] logs into transport-free answers;
//!   [`privileges`] switches to `run_as`; [`secure_fs`] is how root opens
//!   anything in the state directory; [`secret`] holds passwords
//!   (zeroized, never shown); [`untrusted`] escapes what peers and scripts
//!   say before it is logged; [`peer_compat`] says what the registrar's
//!   Keylime release cannot verify.
//! - [`config`] turns `agent.conf` and `KEYLIME_AGENT_*` into one typed
//!   [`config::Config`].
//! - What an operator runs or watches: [`cli`] (what both binaries share:
//!   logging, config, shutdown signal), [`check`] (a read-only preflight
//!   over [`tpm::probe`]), [`info`], [`service`] (systemd notify and
//!   watchdog), [`metrics`], [`audit`], and [`observing`], which starts the
//!   last two for either front end.
//!
//! Data flow of a registration: config → TPM owner creates/loads EK and
//! AK → identity → `POST /agents/{id}` → the registrar's MakeCredential blob
//! → TPM2_ActivateCredential on the owner thread → HMAC `auth_tag` →
//! `PUT /agents/{id}`.
//!
//! Data flow of an integrity quote: `api` parses nonce, mask, partial and
//! offset → `attestation` → one job on the TPM owner thread (reset and
//! extend PCR 16 with H(NK), read PCRs, quote, retry if they moved) → IMA
//! slice from the line index, UEFI log if PCR 0 → JSON envelope, the IMA
//! list streamed from the file when large.

pub mod agent;
pub mod algorithms;
pub mod api_version;
pub mod attestation;
pub mod audit;
pub mod check;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod evidence;
pub mod http_client;
pub mod identity;
pub mod info;
pub mod memory;
pub mod metrics;
pub mod observing;
pub mod peer_compat;
pub mod privileges;
pub mod pull;
pub mod push;
pub mod registrar;
pub mod retry;
pub mod secret;
pub mod secure_fs;
pub mod service;
pub mod tpm;
pub mod untrusted;
