//! The core both front ends run on, built from the config in order:
//! the state directory, the TPM owner, the identity (agent id, NK), the
//! registrar client and registration, quote production, and the switch to
//! `run_as`. [`lifecycle`] is the one start-up and shutdown sequence each
//! front end ([`crate::pull`], [`crate::push`]) plugs its own part into.
//! Nothing here knows a transport.

mod error;
pub mod lifecycle;
mod setup;

pub use error::AgentError;
pub use lifecycle::{run, FrontEnd};
pub use setup::AgentCore;
