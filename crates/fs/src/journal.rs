//! The session journal: every node id and file handle the kernel holds, so
//! that a daemon taking over a live FUSE connection after a crash answers
//! for the ids its predecessor gave out.
//!
//! The kernel keeps node ids, lookup counts and file handles across a
//! daemon's death, and sends requests for them to the next daemon. Each
//! change is appended as one JSON line with one `write(2)` before the reply
//! reaches the kernel. A process crash does not lose what `write(2)` put in
//! the page cache, so no fsync is needed; a node crash ends the connection
//! anyway. The journal keeps a mirror of the live records and rewrites
//! itself from that mirror when it has grown well past it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// File name of the journal inside the session directory.
pub const JOURNAL_FILE: &str = "journal";

/// Rewrite the journal once it holds this many times more records than are live.
const COMPACT_FACTOR: u64 = 4;
/// ... and at least this many.
const COMPACT_MIN: u64 = 4096;

/// A node the kernel holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub ino: u64,
    /// Namespace path.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// Lookups the kernel holds.
    pub lookups: u64,
    /// Whether `path` still names this node (false once unlinked).
    pub linked: bool,
}

/// The object version a read handle pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Namespace path at open.
    pub path: String,
    /// Size of that version.
    pub size: u64,
    /// Its etag, if the storage has one.
    pub etag: Option<String>,
    /// Its version string (part of the cache key).
    pub version: String,
}

/// The write state of a file handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterRecord {
    /// Namespace path the handle will upload to.
    pub path: String,
    /// Staging file name in the staging directory, once there is one.
    pub staging: Option<String>,
    /// Whether the staged content differs from what the UFS holds.
    pub dirty: bool,
    /// The file was unlinked while open: never upload.
    pub unlinked: bool,
    /// Content to start from before a random write, if not yet staged.
    pub base: Option<SourceRecord>,
}

/// An open handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum HandleRecord {
    /// An open file.
    File {
        /// The handle.
        fh: u64,
        /// What it reads, if the file existed at open.
        read: Option<SourceRecord>,
        /// What it writes, if opened for writing.
        write: Option<Box<WriterRecord>>,
        /// The process that opened it (0: unknown).
        opener: u32,
        /// The id of the request that opened it.
        #[serde(default)]
        unique: u64,
        /// The node it is open on.
        #[serde(default)]
        ino: u64,
        /// Its I/O mode: `cached` or `passthrough`.
        #[serde(default)]
        io: String,
    },
    /// An open directory.
    Dir {
        /// The handle.
        fh: u64,
        /// Namespace path.
        path: String,
        /// The id of the request that opened it.
        #[serde(default)]
        unique: u64,
    },
}

impl HandleRecord {
    /// The handle number.
    pub fn fh(&self) -> u64 {
        match self {
            HandleRecord::File { fh, .. } | HandleRecord::Dir { fh, .. } => *fh,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Line {
    Node(NodeRecord),
    Gone {
        ino: u64,
    },
    Handle(HandleRecord),
    /// The write state of file handle `fh` changed.
    Writer {
        fh: u64,
        write: WriterRecord,
    },
    /// File handle `fh` now belongs to process `pid`.
    Opener {
        fh: u64,
        pid: u32,
    },
    /// The backing id the kernel gave for node `ino`'s passthrough opens
    /// (`None`: closed).
    Backing {
        ino: u64,
        id: Option<u32>,
    },
    Closed {
        fh: u64,
    },
    /// The highest ids given out, kept across compactions so that ids the
    /// kernel has forgotten are never handed out again.
    Mark {
        ino: u64,
        fh: u64,
    },
}

/// What a journal held when it was opened for a takeover.
#[derive(Debug, Default, Clone)]
pub struct Restored {
    /// Live nodes (the root may be among them).
    pub nodes: Vec<NodeRecord>,
    /// Open handles.
    pub handles: Vec<HandleRecord>,
    /// The highest node id ever given out.
    pub max_ino: u64,
    /// The highest handle number ever given out.
    pub max_fh: u64,
    /// Backing ids registered for passthrough, by node.
    pub backings: HashMap<u64, u32>,
}

#[derive(Debug, Default)]
struct Live {
    nodes: HashMap<u64, NodeRecord>,
    handles: HashMap<u64, HandleRecord>,
    backings: HashMap<u64, u32>,
    max_ino: u64,
    max_fh: u64,
}

impl Live {
    fn apply(&mut self, l: Line) {
        match l {
            Line::Node(n) => {
                self.max_ino = self.max_ino.max(n.ino);
                self.nodes.insert(n.ino, n);
            }
            Line::Gone { ino } => {
                self.nodes.remove(&ino);
            }
            Line::Handle(h) => {
                self.max_fh = self.max_fh.max(h.fh());
                self.handles.insert(h.fh(), h);
            }
            Line::Writer { fh, write: w } => {
                if let Some(HandleRecord::File { write, .. }) = self.handles.get_mut(&fh) {
                    *write = Some(Box::new(w));
                }
            }
            Line::Opener { fh, pid } => {
                if let Some(HandleRecord::File { opener, .. }) = self.handles.get_mut(&fh) {
                    *opener = pid;
                }
            }
            Line::Backing { ino, id } => match id {
                Some(id) => {
                    self.backings.insert(ino, id);
                }
                None => {
                    self.backings.remove(&ino);
                }
            },
            Line::Closed { fh } => {
                self.handles.remove(&fh);
            }
            Line::Mark { ino, fh } => {
                self.max_ino = self.max_ino.max(ino);
                self.max_fh = self.max_fh.max(fh);
            }
        }
    }

    fn restored(&self) -> Restored {
        Restored {
            nodes: self.nodes.values().cloned().collect(),
            handles: self.handles.values().cloned().collect(),
            max_ino: self.max_ino,
            max_fh: self.max_fh,
            backings: self.backings.clone(),
        }
    }

    fn len(&self) -> u64 {
        (self.nodes.len() + self.handles.len()) as u64
    }
}

#[derive(Debug)]
struct State {
    file: Option<File>,
    live: Live,
    written: u64,
}

/// The append-only journal of one FUSE session.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    state: Mutex<State>,
}

impl Journal {
    /// Starts an empty journal in `dir` (a fresh connection: nothing to keep).
    pub fn create(dir: &Path) -> io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(JOURNAL_FILE);
        let file = create_append(&path)?;
        Ok(Journal {
            path,
            state: Mutex::new(State {
                file: Some(file),
                live: Live::default(),
                written: 0,
            }),
        })
    }

    /// Opens the journal a previous daemon of this connection left in `dir`,
    /// returning what it recorded. A torn last line (the writer died inside
    /// a `write(2)`, which cannot happen for a page-cache write but can for
    /// a full disk) is ignored; any other damage is an error, because a
    /// daemon that misremembers node ids would answer for the wrong files.
    pub fn reopen(dir: &Path) -> io::Result<(Journal, Restored)> {
        let path = dir.join(JOURNAL_FILE);
        let reader = BufReader::new(File::open(&path)?);
        let mut live = Live::default();
        let mut lines = reader.lines().peekable();
        let mut number = 0;
        while let Some(line) = lines.next() {
            number += 1;
            let line = line?;
            let last = lines.peek().is_none();
            match serde_json::from_str::<Line>(&line) {
                Ok(l) => live.apply(l),
                Err(_) if last => {
                    tracing::warn!(line = number, "ignoring a torn last journal line");
                }
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} line {number}: {e}", path.display()),
                    ));
                }
            }
        }
        let restored = live.restored();
        let journal = Journal {
            path,
            state: Mutex::new(State {
                file: None,
                live,
                written: 0,
            }),
        };
        journal.compact()?;
        Ok((journal, restored))
    }

    /// Records the current state of a node.
    pub fn node(&self, rec: NodeRecord) {
        self.append(Line::Node(rec));
    }

    /// Records that the kernel forgot node `ino`.
    pub fn gone(&self, ino: u64) {
        self.append(Line::Gone { ino });
    }

    /// Records the current state of an open handle.
    pub fn handle(&self, rec: HandleRecord) {
        self.append(Line::Handle(rec));
    }

    /// Records the new write state of file handle `fh`.
    pub fn writer(&self, fh: u64, write: WriterRecord) {
        self.append(Line::Writer { fh, write });
    }

    /// Records which process opened file handle `fh`.
    pub fn opener(&self, fh: u64, pid: u32) {
        self.append(Line::Opener { fh, pid });
    }

    /// Records the backing id of node `ino` (`None`: closed).
    pub fn backing(&self, ino: u64, id: Option<u32>) {
        self.append(Line::Backing { ino, id });
    }

    /// Records that handle `fh` was released.
    pub fn closed(&self, fh: u64) {
        self.append(Line::Closed { fh });
    }

    /// Live records, as a takeover would see them now.
    pub fn snapshot(&self) -> Restored {
        self.state.lock().live.restored()
    }

    fn append(&self, line: Line) {
        let mut text = match serde_json::to_string(&line) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a journal record");
                return;
            }
        };
        text.push('\n');
        let mut s = self.state.lock();
        s.live.apply(line);
        let Some(file) = s.file.as_mut() else {
            return;
        };
        if let Err(e) = file.write_all(text.as_bytes()) {
            self.disable(&mut s, &e);
            return;
        }
        s.written += 1;
        if s.written > COMPACT_MIN.max(s.live.len() * COMPACT_FACTOR) {
            drop(s);
            if let Err(e) = self.compact() {
                tracing::error!(error = %e, "cannot compact the session journal");
            }
        }
    }

    /// A journal that missed a record would make a takeover answer for the
    /// wrong files, so after a failed write it is removed: the next daemon
    /// then finds no journal and the supervisor remounts instead.
    fn disable(&self, s: &mut State, e: &io::Error) {
        tracing::error!(
            path = %self.path.display(),
            error = %e,
            "cannot write the session journal; a crash of this daemon will need a remount"
        );
        s.file = None;
        let _ = std::fs::remove_file(&self.path);
    }

    /// Rewrites the journal as just its live records.
    fn compact(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        let tmp = self.path.with_extension("new");
        let mut out = io::BufWriter::new(create_append(&tmp)?);
        let mark = Line::Mark {
            ino: s.live.max_ino,
            fh: s.live.max_fh,
        };
        writeln!(out, "{}", to_json(&mark)?)?;
        for n in s.live.nodes.values() {
            writeln!(out, "{}", to_json(&Line::Node(n.clone()))?)?;
        }
        for h in s.live.handles.values() {
            writeln!(out, "{}", to_json(&Line::Handle(h.clone()))?)?;
        }
        for (&ino, &id) in &s.live.backings {
            writeln!(out, "{}", to_json(&Line::Backing { ino, id: Some(id) })?)?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&tmp, &self.path)?;
        s.file = Some(file);
        s.written = s.live.len() + 1;
        Ok(())
    }
}

fn to_json(line: &Line) -> io::Result<String> {
    serde_json::to_string(line).map_err(io::Error::other)
}

/// Creates `path` empty and opens it for appending (std refuses truncate
/// and append together, so it takes two opens).
fn create_append(path: &Path) -> io::Result<File> {
    File::create(path)?;
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ino: u64, path: &str, lookups: u64) -> NodeRecord {
        NodeRecord {
            ino,
            path: path.into(),
            kind: "file".into(),
            lookups,
            linked: true,
        }
    }

    #[test]
    fn reopen_returns_the_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path()).unwrap();
        j.node(node(2, "/a", 1));
        j.node(node(3, "/b", 1));
        j.node(node(2, "/a", 3));
        j.gone(3);
        j.handle(HandleRecord::Dir {
            fh: 7,
            path: "/".into(),
            unique: 0,
        });
        j.handle(HandleRecord::Dir {
            fh: 8,
            path: "/x".into(),
            unique: 0,
        });
        j.closed(8);
        drop(j);
        let (_j, r) = Journal::reopen(dir.path()).unwrap();
        assert_eq!(r.nodes, vec![node(2, "/a", 3)]);
        assert_eq!(r.handles.len(), 1);
        assert_eq!(
            r.max_fh, 8,
            "a closed handle's number is not given out again"
        );
        assert_eq!(r.max_ino, 3, "a forgotten node's id is not given out again");
    }

    #[test]
    fn a_torn_last_line_is_ignored_but_damage_elsewhere_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path()).unwrap();
        j.node(node(2, "/a", 1));
        drop(j);
        let path = dir.path().join(JOURNAL_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"op\":\"node\",\"ino\":");
        std::fs::write(&path, &text).unwrap();
        let (_j, r) = Journal::reopen(dir.path()).unwrap();
        assert_eq!(r.nodes.len(), 1);

        std::fs::write(&path, format!("garbage\n{text}\n")).unwrap();
        let e = Journal::reopen(dir.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn compaction_keeps_exactly_the_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path()).unwrap();
        for i in 0..(COMPACT_MIN * 2) {
            j.node(node(2 + i % 3, "/churn", i));
        }
        let lines = std::fs::read_to_string(dir.path().join(JOURNAL_FILE))
            .unwrap()
            .lines()
            .count() as u64;
        assert!(
            lines <= COMPACT_MIN + 4,
            "journal was not compacted: {lines} lines"
        );
        let before = j.snapshot();
        drop(j);
        let (_j, r) = Journal::reopen(dir.path()).unwrap();
        let mut a = before.nodes;
        let mut b = r.nodes;
        a.sort_by_key(|n| n.ino);
        b.sort_by_key(|n| n.ino);
        assert_eq!(a, b);
    }

    #[test]
    fn a_failed_write_removes_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path()).unwrap();
        j.disable(
            &mut j.state.lock(),
            &io::Error::from_raw_os_error(libc::ENOSPC),
        );
        j.node(node(2, "/a", 1));
        assert!(!dir.path().join(JOURNAL_FILE).exists());
    }
}
