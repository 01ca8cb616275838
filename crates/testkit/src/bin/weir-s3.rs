//! `weir-s3`: runs weir's loopback S3 test server in the foreground.
//!
//! Used by benchmarks that compare weir against rclone/s3fs over the same
//! local S3 endpoint. Prints `listening on http://127.0.0.1:PORT` once the port
//! accepts connections and exits cleanly on SIGTERM or SIGINT. Clients must
//! sign requests (SigV4, region `us-east-1`) with access key `weirtest` and
//! secret `weirtestsecret`, using path-style addressing.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use weir_testkit::S3Server;

/// Serve a local directory over the S3 protocol on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "weir-s3")]
struct Args {
    /// Backing directory; each subdirectory is a bucket.
    #[arg(long)]
    root: PathBuf,
    /// Bucket to create (as ROOT/BUCKET) and serve.
    #[arg(long)]
    bucket: String,
    /// Port to listen on; 0 lets the OS choose.
    #[arg(long, default_value_t = 0)]
    port: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // s3s logs every failed operation (even a routine 404) at ERROR level, which
    // would flood benchmark output; keep it quiet unless RUST_LOG asks for it.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,s3s=off,s3s_fs=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir-s3: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> std::io::Result<()> {
    // The signal runtime is separate from the server's own runtime; register
    // the handlers before announcing the port so an early signal is not lost.
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut term, mut int) = {
        let _guard = signals.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };

    let mut server = S3Server::start_on(&args.root, &args.bucket, args.port)?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", server.endpoint())?;
    stdout.flush()?;
    drop(stdout);

    let which = signals.block_on(async {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    });
    tracing::info!("received {which}, shutting down");
    server.stop();
    Ok(())
}
