//! Test fixtures: a fresh swtpm per test on free ports (killed on drop),
//! the real Keylime peers started by `swtpm-ci/peers`, and the agent binary
//! run as a child process with its own config. A missing prerequisite
//! skips with a printed reason, and fails the test under `CI=true` or
//! `AGENT_TESTS_STRICT=1` (as `swtpm-ci/test` runs them).
//!
//! One file per subject: `process` (paths, ports, `/proc`, skipping,
//! polling), `swtpm`, `peers` (the Keylime releases), `agent` (config, state
//! directory, the running agent), `evidence` (boot and IMA logs), `pki`
//! (test CAs, AK signatures), `http` (curl and raw mTLS), `systemd` (the
//! real service manager in its own namespaces), `fake` (FAKE peers for
//! faults the real ones cannot produce).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tss_esapi::constants::CapabilityType;
use tss_esapi::structures::CapabilityData;

mod agent;
mod evidence;
pub mod fake;
mod http;
mod peers;
mod pki;
mod process;
mod swtpm;
pub mod systemd;

pub use agent::*;
pub use evidence::*;
pub use http::*;
pub use peers::*;
pub use pki::*;
pub use process::*;
pub use swtpm::*;
