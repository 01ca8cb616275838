//! Load jobs: preloading a tree into the page cache in the background.
//!
//! A job first walks the tree (so progress has totals), then loads several
//! files at once through [`Fs::load_at`], which fetches only the pages not
//! cached yet: a job over a tree that is already cached does no I/O, and a
//! job that was cancelled, or died with its daemon, is resumed by starting
//! it again. Job ids include the daemon's PID, so a replacement daemon
//! never mistakes an old id for one of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use weir_fs::Fs;

use crate::protocol::{ErrorReply, JobProgress, JobState};
use crate::tree;

/// Files loaded at once unless the request says otherwise.
pub(crate) const DEFAULT_PARALLEL: usize = 4;
/// Most files loaded at once.
const MAX_PARALLEL: usize = 64;
/// Failures kept per job; the count goes on.
const MAX_ERRORS: usize = 20;
/// Finished jobs are forgotten after this long.
const KEEP_FINISHED: Duration = Duration::from_secs(3600);

/// The jobs of this daemon.
#[derive(Debug)]
pub(crate) struct Jobs {
    next: AtomicU64,
    jobs: Mutex<HashMap<u64, Arc<Job>>>,
}

#[derive(Debug)]
pub(crate) struct Job {
    id: u64,
    path: String,
    started: Instant,
    state: Mutex<(JobState, Option<Instant>)>,
    files_total: AtomicU64,
    files_done: AtomicU64,
    files_skipped: AtomicU64,
    files_failed: AtomicU64,
    bytes_total: AtomicU64,
    bytes_already: AtomicU64,
    bytes_fetched: AtomicU64,
    errors: Mutex<Vec<String>>,
    cancel: watch::Sender<bool>,
}

impl Jobs {
    pub(crate) fn new() -> Self {
        Jobs {
            next: AtomicU64::new(1),
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// Starts loading `path` (which exists: the caller checked) on the
    /// current runtime.
    pub(crate) fn start(&self, fs: Fs, path: String, parallel: Option<usize>) -> Arc<Job> {
        self.prune();
        let id = (u64::from(std::process::id()) << 32) | self.next.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(Job {
            id,
            path,
            started: Instant::now(),
            state: Mutex::new((JobState::Scanning, None)),
            files_total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            files_skipped: AtomicU64::new(0),
            files_failed: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_already: AtomicU64::new(0),
            bytes_fetched: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            cancel: watch::Sender::new(false),
        });
        self.jobs.lock().insert(id, job.clone());
        let parallel = parallel.unwrap_or(DEFAULT_PARALLEL).clamp(1, MAX_PARALLEL);
        tokio::spawn(run(job.clone(), fs, parallel));
        tracing::info!(job = id, path = %job.path, parallel, "load job started");
        job
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<Job>> {
        self.jobs.lock().get(&id).cloned()
    }

    fn prune(&self) {
        self.jobs.lock().retain(|_, j| {
            j.state
                .lock()
                .1
                .is_none_or(|ended| ended.elapsed() < KEEP_FINISHED)
        });
    }
}

impl Job {
    /// Asks the job to stop; it ends as soon as the pages in flight land.
    pub(crate) fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    pub(crate) fn progress(&self) -> JobProgress {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        JobProgress {
            job: self.id,
            path: self.path.clone(),
            state: self.state.lock().0,
            files_total: n(&self.files_total),
            files_done: n(&self.files_done),
            files_skipped: n(&self.files_skipped),
            files_failed: n(&self.files_failed),
            bytes_total: n(&self.bytes_total),
            bytes_already: n(&self.bytes_already),
            bytes_fetched: n(&self.bytes_fetched),
            elapsed: self.started.elapsed().as_secs_f64(),
            errors: self.errors.lock().clone(),
        }
    }

    fn set_state(&self, state: JobState) {
        let ended = state.is_final().then(Instant::now);
        *self.state.lock() = (state, ended);
    }

    fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    fn fail(&self, error: String) {
        let mut errors = self.errors.lock();
        if errors.len() < MAX_ERRORS {
            errors.push(error);
        }
    }
}

async fn run(job: Arc<Job>, fs: Fs, parallel: usize) {
    // The totals grow while the tree is walked, so a long scan shows
    // progress; once it ends they are set to exactly what will be loaded.
    let found = |size: u64| {
        job.files_total.fetch_add(1, Ordering::Relaxed);
        job.bytes_total.fetch_add(size, Ordering::Relaxed);
    };
    let walk = tokio::select! {
        w = tree::walk_seeing(&fs, &job.path, true, found) => w,
        _ = until_cancelled(&job) => Err(weir_fs::FsError::new(libc::ECANCELED, "cancelled")),
    };
    let files: Vec<(String, u64)> = match walk {
        Ok(w) => {
            for e in &w.errors {
                job.fail(e.clone());
            }
            w.files().map(|(p, s)| (p.to_string(), s)).collect()
        }
        Err(e) => {
            if !job.cancelled() {
                job.fail(ErrorReply::from(e).message);
            }
            Vec::new()
        }
    };
    job.files_total.store(files.len() as u64, Ordering::Relaxed);
    job.bytes_total
        .store(files.iter().map(|(_, s)| s).sum(), Ordering::Relaxed);
    if !job.cancelled() {
        job.set_state(JobState::Running);
        futures::stream::iter(files)
            .for_each_concurrent(parallel, |(path, _)| load_one(&job, &fs, path))
            .await;
    }
    let end = if job.cancelled() {
        JobState::Cancelled
    } else {
        JobState::Done
    };
    job.set_state(end);
    let p = job.progress();
    tracing::info!(
        job = job.id,
        state = ?end,
        files = p.files_done,
        fetched = p.bytes_fetched,
        already = p.bytes_already,
        failed = p.files_failed,
        "load job ended"
    );
}

async fn load_one(job: &Job, fs: &Fs, path: String) {
    if job.cancelled() {
        return;
    }
    let fetched = |n: u64| {
        job.bytes_fetched.fetch_add(n, Ordering::Relaxed);
    };
    let result = tokio::select! {
        r = fs.load_at(&path, &fetched) => Some(r),
        _ = until_cancelled(job) => None,
    };
    match result {
        None => return,
        Some(Ok(loaded)) => {
            job.bytes_already
                .fetch_add(loaded.already, Ordering::Relaxed);
            if loaded.fetched == 0 {
                job.files_skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(Err(e)) => {
            job.files_failed.fetch_add(1, Ordering::Relaxed);
            job.fail(ErrorReply::from(e).message);
        }
    }
    job.files_done.fetch_add(1, Ordering::Relaxed);
}

async fn until_cancelled(job: &Job) {
    let mut rx = job.cancel.subscribe();
    let _ = rx.wait_for(|c| *c).await;
}
