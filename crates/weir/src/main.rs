//! The `weir` binary: a thin command line over the weir crates.
//!
//! `weir mount` without `--foreground` starts the daemon in the background
//! and returns only once the mount answers, or fails with one line naming
//! the cause. `weir umount` unmounts. `weir mount --foreground` is the
//! supervisor (`supervise`): it holds the FUSE connection and runs the
//! serving daemon (`daemon`) as its child, replacing it after a crash.
//! `weir csi` (`csi`) runs the CSI driver of the `weir-csi` crate.
//! `weir fs` (`fscmd`, with `load` and `output`) talks to a running daemon
//! over its admin endpoint (`control` wires that endpoint into the daemon).

mod cli;
mod config;
mod control;
mod csi;
mod daemon;
mod fscmd;
mod load;
mod output;
mod supervise;

use clap::Parser;

/// FUSE request buffers mapped before their first request: a daemon killed
/// while the kernel copies a write into it would otherwise fail that write
/// with EIO (see `weir_fuse::prefault`).
#[global_allocator]
static ALLOCATOR: weir_fuse::prefault::Prefault = weir_fuse::prefault::Prefault;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(e) = cli::run(cli) {
        eprintln!("weir: error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line: scripts and users read one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out.replace('\n', " ")
}
