//! `weir fs load`: starts a load job in the daemon, follows it with a
//! progress bar on stderr (files, bytes, rate, ETA; plain lines when
//! stderr is not a terminal), and prints a summary. Ctrl-C cancels the
//! job; what it fetched stays cached, so running the same command again
//! resumes where it stopped (wholly cached files are skipped).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use weir_admin::protocol::{JobProgress, JobState};
use weir_admin::{Client, ErrorKind, Request, Response};

use crate::fscmd::unexpected;
use crate::output;

/// How often the job is asked how far it got.
const POLL: Duration = Duration::from_millis(200);
/// How often a plain progress line is printed without a terminal.
const LINE_EVERY: Duration = Duration::from_secs(1);
/// Exit status after Ctrl-C, as shells report SIGINT.
const EXIT_INTERRUPTED: i32 = 130;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_interrupts() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            tracing::warn!(signal = ?sig, error = %e, "cannot catch the signal");
        }
    }
}

fn call_job(client: &Client, req: &Request) -> anyhow::Result<JobProgress> {
    match client.call(req) {
        Ok(Response::Job(p)) => Ok(p),
        Ok(r) => unexpected(r),
        Err(e) if e.kind() == Some(ErrorKind::NoSuchJob) => bail!(
            "{e}; the daemon was probably replaced: run the same weir fs load again to resume"
        ),
        Err(e) => Err(e.into()),
    }
}

/// Shows progress: a bar on a terminal, lines otherwise.
enum Progress {
    Bar(ProgressBar),
    Lines(Instant),
}

impl Progress {
    fn new() -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines(Instant::now() - LINE_EVERY);
        }
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress::Bar(bar)
    }

    fn show(&mut self, p: &JobProgress) {
        match self {
            Progress::Bar(bar) => {
                bar.set_length(p.bytes_total);
                bar.set_position(output::load_done_bytes(p));
                bar.set_message(match p.state {
                    JobState::Scanning => format!("scanning: {} files found", p.files_total),
                    _ if p.files_failed > 0 => format!(
                        "{}/{} files, {} failed",
                        p.files_done, p.files_total, p.files_failed
                    ),
                    _ => format!("{}/{} files", p.files_done, p.files_total),
                });
            }
            Progress::Lines(last) => {
                if last.elapsed() >= LINE_EVERY || p.state.is_final() {
                    *last = Instant::now();
                    eprintln!("{}", output::load_line(p));
                }
            }
        }
    }

    fn finish(self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Runs `weir fs load PATH`.
pub fn run(client: &Client, path: &str, parallel: usize, json: bool) -> anyhow::Result<()> {
    catch_interrupts();
    let mut p = call_job(
        client,
        &Request::LoadStart {
            path: path.to_string(),
            parallel: Some(parallel),
        },
    )?;
    let job = p.job;
    let mut progress = Progress::new();
    let mut cancelled_by_us = false;
    while !p.state.is_final() {
        progress.show(&p);
        std::thread::sleep(POLL);
        if INTERRUPTED.load(Ordering::SeqCst) && !cancelled_by_us {
            cancelled_by_us = true;
            p = call_job(client, &Request::LoadCancel { job })?;
            continue;
        }
        p = call_job(client, &Request::LoadProgress { job })?;
    }
    progress.show(&p);
    progress.finish();
    for e in &p.errors {
        eprintln!("weir: {e}");
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Response::Job(p.clone()))?
        );
    } else {
        println!("{}", output::load_summary(&p));
    }
    if p.state == JobState::Cancelled {
        eprintln!(
            "weir: load cancelled; what was fetched stays cached: run the same command again to resume"
        );
        std::process::exit(if cancelled_by_us { EXIT_INTERRUPTED } else { 1 });
    }
    if p.files_failed > 0 {
        bail!(
            "{} of {} files failed to load (first errors above)",
            p.files_failed,
            p.files_total
        );
    }
    Ok(())
}
