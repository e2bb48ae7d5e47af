//! What only evloop's tests and bench need, kept out of the server crate so that an embedder
//! compiles none of it:
//! - [`procfs`]: what a process costs, read from Linux's `/proc` (the fault tests and the
//!   bench measure servers with it);
//! - [`measure`]: the arithmetic the bench's figures come from, with no processes or clock;
//! - [`tokio_peer`]: the same protocol served with tokio, the bench's third server.

#![warn(missing_docs)]

pub mod measure;
pub mod procfs;
pub mod tokio_peer;
