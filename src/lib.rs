//! keylime-agent: a Keylime-compatible TPM 2.0 remote-attestation agent.
//!
//! Architecture, top down. [`config`] turns `agent.conf` and
//! `KEYLIME_AGENT_*` variables into one typed [`config::Config`].
//! [`agent`] is the composition root: it starts the [`tpm`] owner thread
//! (the only code that touches tss-esapi; EK, EK certificate and AK live
//! there), resolves the [`identity`] (agent id, mTLS certificate, NK), and
//! registers with the Keylime registrar through [`registrar`] (over
//! [`http_client`], plain HTTP or HTTPS with the registrar's certificate
//! verified), whose retries follow [`retry`]. It serves the [`api`] over mTLS ([`tls`]):
//! handlers parse requests into typed values and call [`attestation`],
//! which combines one TPM quote transaction with the [`evidence`] logs.
//! Key halves and payloads go to [`payload`], notifications to
//! [`revocation`]; [`privileges`] drops root once everything is set up.
//! [`peer_compat`] says at start what the Keylime release behind the
//! registrar cannot verify of the configured algorithms.
//!
//! The pull front end is [`api`]; the push front end is [`push`]
//! (`keylime_push_model_agent`: no server, evidence sent to the verifier's
//! API v3.0). Both ask [`attestation`] for evidence; [`cli`] is what the two
//! binaries share around the agent (logging, config, shutdown signal, the
//! `check` subcommand, which is [`check`]: a read-only preflight over
//! [`tpm::probe`]; and `info`, which is [`info`]). [`service`] tells
//! systemd when the agent is ready and keeps its watchdog alive from the
//! TPM owner's queue. [`metrics`] counts what happens (served on
//! `metrics_address`) and [`audit`] records the security-relevant events;
//! [`observing`] starts both for either front end.
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
pub mod api;
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
pub mod metrics;
pub mod observing;
pub mod payload;
pub mod peer_compat;
pub mod privileges;
pub mod push;
pub mod registrar;
pub mod retry;
pub mod revocation;
pub mod secure_fs;
pub mod service;
pub mod tls;
pub mod tpm;
pub mod untrusted;
