//! The daemon's control plane.
//!
//! - `protocol`: the admin protocol, JSON lines on a unix socket.
//! - `server`: the endpoint in the daemon (`<cache dir>/admin.sock`).
//! - `client` and `registry`: how `weir fs` finds a daemon and asks it.
//! - `jobs`: preloading trees into the page cache in the background.
//! - `table`: changing the mount table (the daemon's own, or etcd's).
//! - `follow`: cluster mode in a daemon: the table from etcd swapped in,
//!   changes published, other nodes' changes invalidated.
//! - `stats` and `promtext`: the numbers the endpoint reports, read back
//!   from the metrics this process records.
//! - `doctor`: where the time goes, and which knob to turn.
//! - `tree`: walking the namespace below a path.

mod client;
pub mod doctor;
mod error;
pub mod follow;
mod jobs;
mod promtext;
pub mod protocol;
pub mod registry;
mod server;
mod stats;
mod table;
mod tree;

pub use client::{Client, SOCKET_NAME, find_daemon};
pub use error::AdminError;
pub use protocol::{ErrorKind, ErrorReply, Request, Response};
pub use server::{Context, Render, Server, dispatch, unix_now};
pub use table::{Standalone, TableControl};
