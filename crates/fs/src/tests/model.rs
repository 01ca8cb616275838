//! Random operation sequences against `Fs` and a reference model.
//!
//! Besides namespace operations, a sequence may keep one file open for
//! writing across other operations (`Begin` ... `More`/`Flush` ...
//! `End`), so that renames and unlinks meet a file being written. A
//! journaled filesystem may also `Crash`: a successor takes over from the
//! journal, and nothing the model sees may change, open handle included.

use proptest::prelude::*;

use super::*;

/// Directories operations happen in.
const DIRS: [&str; 4] = ["/", "/d", "/e", "/d/e"];
/// Names used in them; `d` and `e` make the directories above.
const NAMES: [&str; 4] = ["a", "b", "d", "e"];

#[derive(Debug, Clone, PartialEq)]
enum Node {
    File(Vec<u8>),
    Dir,
}

/// Path to node; the root is implicit.
type Model = BTreeMap<String, Node>;

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Done,
    Data(Vec<u8>),
    Names(Vec<String>),
}

type Answer = std::result::Result<Outcome, i32>;

#[derive(Debug, Clone)]
enum Op {
    /// create(O_TRUNC) + write + release.
    Create(usize, usize, Vec<u8>),
    /// lookup + open(O_TRUNC) + write + release.
    Overwrite(usize, usize, Vec<u8>),
    Unlink(usize, usize),
    Mkdir(usize, usize),
    Rmdir(usize, usize),
    Rename(usize, usize, usize, usize),
    Read(usize, usize),
    List(usize),
    /// create(O_TRUNC) + write, keeping the handle open.
    Begin(usize, usize, Vec<u8>),
    /// Appends through the open handle.
    More(Vec<u8>),
    /// Flushes the open handle.
    Flush,
    /// Releases the open handle.
    End,
    /// The daemon dies and a successor takes over from its journal.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let d = || 0..DIRS.len();
    let n = || 0..NAMES.len();
    let data = || {
        prop_oneof![
            2 => proptest::collection::vec(any::<u8>(), 0..4),
            2 => proptest::collection::vec(any::<u8>(), 0..64),
            1 => proptest::collection::vec(any::<u8>(), 0..3 * PAGE as usize),
        ]
    };
    prop_oneof![
        4 => (d(), n(), data()).prop_map(|(d, n, x)| Op::Create(d, n, x)),
        2 => (d(), n(), data()).prop_map(|(d, n, x)| Op::Overwrite(d, n, x)),
        2 => (d(), n()).prop_map(|(d, n)| Op::Unlink(d, n)),
        3 => (d(), n()).prop_map(|(d, n)| Op::Mkdir(d, n)),
        2 => (d(), n()).prop_map(|(d, n)| Op::Rmdir(d, n)),
        3 => (d(), n(), d(), n()).prop_map(|(a, b, c, e)| Op::Rename(a, b, c, e)),
        2 => (d(), n()).prop_map(|(d, n)| Op::Read(d, n)),
        1 => d().prop_map(Op::List),
        1 => (d(), n(), data()).prop_map(|(d, n, x)| Op::Begin(d, n, x)),
        1 => data().prop_map(Op::More),
        1 => Just(Op::Flush),
        1 => Just(Op::End),
        1 => Just(Op::Crash),
    ]
}

fn path(dir: &str, name: &str) -> String {
    weir_namespace::child(dir, name)
}

fn children(m: &Model, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = m
        .keys()
        .filter(|k| weir_namespace::parent(k) == dir)
        .map(|k| weir_namespace::split_name(k).1.to_string())
        .collect();
    v.sort();
    v
}

/// Path resolution of `dir`: ENOENT or ENOTDIR on the way.
fn walk(m: &Model, dir: &str) -> std::result::Result<(), i32> {
    let mut cur = "/".to_string();
    for comp in dir.split('/').filter(|c| !c.is_empty()) {
        cur = path(&cur, comp);
        match m.get(&cur) {
            None => return Err(libc::ENOENT),
            Some(Node::File(_)) => return Err(libc::ENOTDIR),
            Some(Node::Dir) => {}
        }
    }
    Ok(())
}

/// The file open for writing, in the model.
#[derive(Debug)]
struct OpenWriter {
    /// Where it is; `None` once unlinked or replaced by a rename.
    path: Option<String>,
    /// Everything written through it.
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    tree: Model,
    writer: Option<OpenWriter>,
}

impl State {
    /// The path of the file being written, if it still has one.
    fn pending(&self) -> Option<&str> {
        self.writer.as_ref().and_then(|w| w.path.as_deref())
    }

    /// Whether `op` would open a second handle on the file being written
    /// (two writers of one file, or a reader of staged data): the
    /// harness skips those on both sides.
    fn skips(&self, op: &Op) -> bool {
        if let Op::Begin(..) = op {
            return self.writer.is_some();
        }
        let Some(p) = self.pending() else {
            return false;
        };
        match op {
            Op::Create(d, n, _) | Op::Overwrite(d, n, _) | Op::Read(d, n) => {
                path(DIRS[*d], NAMES[*n]) == p
            }
            _ => false,
        }
    }
}

/// What POSIX says `op` does.
fn model_apply(s: &mut State, op: &Op) -> Answer {
    use Outcome::Done;
    if s.skips(op) {
        return Ok(Done);
    }
    let m = &mut s.tree;
    match op {
        Op::Create(d, n, data) | Op::Begin(d, n, data) => {
            walk(m, DIRS[*d])?;
            let p = path(DIRS[*d], NAMES[*n]);
            if m.get(&p) == Some(&Node::Dir) {
                return Err(libc::EISDIR);
            }
            m.insert(p.clone(), Node::File(data.clone()));
            if matches!(op, Op::Begin(..)) {
                s.writer = Some(OpenWriter {
                    path: Some(p),
                    data: data.clone(),
                });
            }
            Ok(Done)
        }
        Op::Overwrite(d, n, data) => {
            walk(m, DIRS[*d])?;
            let p = path(DIRS[*d], NAMES[*n]);
            match m.get(&p) {
                None => Err(libc::ENOENT),
                Some(Node::Dir) => Err(libc::EISDIR),
                Some(Node::File(_)) => {
                    m.insert(p, Node::File(data.clone()));
                    Ok(Done)
                }
            }
        }
        Op::Unlink(d, n) => {
            walk(m, DIRS[*d])?;
            let p = path(DIRS[*d], NAMES[*n]);
            match m.get(&p) {
                None => Err(libc::ENOENT),
                Some(Node::Dir) => Err(libc::EISDIR),
                Some(Node::File(_)) => {
                    m.remove(&p);
                    if let Some(w) = &mut s.writer
                        && w.path.as_deref() == Some(p.as_str())
                    {
                        w.path = None;
                    }
                    Ok(Done)
                }
            }
        }
        Op::Mkdir(d, n) => {
            walk(m, DIRS[*d])?;
            let p = path(DIRS[*d], NAMES[*n]);
            if m.contains_key(&p) {
                return Err(libc::EEXIST);
            }
            m.insert(p, Node::Dir);
            Ok(Done)
        }
        Op::Rmdir(d, n) => {
            walk(m, DIRS[*d])?;
            let p = path(DIRS[*d], NAMES[*n]);
            match m.get(&p) {
                None => Err(libc::ENOENT),
                Some(Node::File(_)) => Err(libc::ENOTDIR),
                Some(Node::Dir) if !children(m, &p).is_empty() => Err(libc::ENOTEMPTY),
                Some(Node::Dir) => {
                    m.remove(&p);
                    Ok(Done)
                }
            }
        }
        Op::Rename(sd, sn, dd, dn) => {
            walk(m, DIRS[*sd])?;
            walk(m, DIRS[*dd])?;
            let from = path(DIRS[*sd], NAMES[*sn]);
            let to = path(DIRS[*dd], NAMES[*dn]);
            let src = m.get(&from).ok_or(libc::ENOENT)?.clone();
            if from == to {
                return Ok(Done);
            }
            let prefix = format!("{from}/");
            if src == Node::Dir && to.starts_with(&prefix) {
                return Err(libc::EINVAL);
            }
            match (&src, m.get(&to)) {
                (Node::Dir, Some(Node::Dir)) if !children(m, &to).is_empty() => {
                    return Err(libc::ENOTEMPTY);
                }
                (Node::Dir, Some(Node::File(_))) => return Err(libc::ENOTDIR),
                (Node::File(_), Some(Node::Dir)) => return Err(libc::EISDIR),
                _ => {}
            }
            let moved: Vec<(String, Node)> = m
                .iter()
                .filter(|(k, _)| **k == from || k.starts_with(&prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (k, _) in &moved {
                m.remove(k);
            }
            m.remove(&to);
            let rename = |k: &str| {
                if k == from {
                    to.clone()
                } else {
                    path(&to, &k[prefix.len()..])
                }
            };
            for (k, v) in moved {
                m.insert(rename(&k), v);
            }
            if let Some(w) = &mut s.writer {
                match w.path.as_deref() {
                    // The file being written was replaced.
                    Some(p) if p == to => w.path = None,
                    Some(p) if p == from || p.starts_with(&prefix) => {
                        w.path = Some(rename(p));
                    }
                    _ => {}
                }
            }
            Ok(Done)
        }
        Op::Read(d, n) => {
            walk(m, DIRS[*d])?;
            match m.get(&path(DIRS[*d], NAMES[*n])) {
                None => Err(libc::ENOENT),
                Some(Node::Dir) => Err(libc::EISDIR),
                Some(Node::File(data)) => Ok(Outcome::Data(data.clone())),
            }
        }
        Op::List(d) => {
            walk(m, DIRS[*d])?;
            Ok(Outcome::Names(children(m, DIRS[*d])))
        }
        Op::More(data) => {
            if let Some(w) = &mut s.writer {
                w.data.extend_from_slice(data);
                if let Some(p) = &w.path {
                    m.insert(p.clone(), Node::File(w.data.clone()));
                }
            }
            Ok(Done)
        }
        Op::Flush | Op::Crash => Ok(Done),
        Op::End => {
            s.writer = None;
            Ok(Done)
        }
    }
}

/// Resolves `dir` by lookups from the root, as the kernel would.
async fn resolve(fs: &Fs, dir: &str) -> std::result::Result<u64, i32> {
    let mut ino = ROOT_INO;
    for comp in dir.split('/').filter(|c| !c.is_empty()) {
        let attr = fs.lookup(ino, comp).await.map_err(|e| e.errno())?;
        if attr.kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        ino = attr.ino;
    }
    Ok(ino)
}

/// Writes `data` through a handle and closes it, failing if either fails.
async fn fill(fs: &Fs, fh: u64, data: &[u8]) -> Result<()> {
    let written = write_seq(fs, fh, data).await;
    let released = fs.release(fh).await;
    written.and(released)
}

/// The handle kept open by `Begin`, and how much went through it.
#[derive(Debug, Default)]
struct Harness {
    open: Option<(u64, u64)>,
}

/// Applies `op` to the filesystem.
async fn fs_apply(fs: &Fs, h: &mut Harness, op: &Op) -> Answer {
    let no = |e: FsError| e.errno();
    match op {
        Op::Create(d, n, data) => {
            let p = resolve(fs, DIRS[*d]).await?;
            let (_, opened) = fs.create(p, NAMES[*n], W_TRUNC).await.map_err(no)?;
            fill(fs, opened.fh, data).await.map_err(no)?;
        }
        Op::Overwrite(d, n, data) => {
            let p = resolve(fs, DIRS[*d]).await?;
            let attr = fs.lookup(p, NAMES[*n]).await.map_err(no)?;
            let opened = fs.open(attr.ino, W_TRUNC).await.map_err(no)?;
            fill(fs, opened.fh, data).await.map_err(no)?;
        }
        Op::Unlink(d, n) => {
            let p = resolve(fs, DIRS[*d]).await?;
            fs.unlink(p, NAMES[*n]).await.map_err(no)?;
        }
        Op::Mkdir(d, n) => {
            let p = resolve(fs, DIRS[*d]).await?;
            fs.mkdir(p, NAMES[*n]).await.map_err(no)?;
        }
        Op::Rmdir(d, n) => {
            let p = resolve(fs, DIRS[*d]).await?;
            fs.rmdir(p, NAMES[*n]).await.map_err(no)?;
        }
        Op::Rename(sd, sn, dd, dn) => {
            let sp = resolve(fs, DIRS[*sd]).await?;
            let dp = resolve(fs, DIRS[*dd]).await?;
            fs.rename(sp, NAMES[*sn], dp, NAMES[*dn], RenameFlags::default())
                .await
                .map_err(no)?;
        }
        Op::Read(d, n) => {
            let p = resolve(fs, DIRS[*d]).await?;
            let attr = fs.lookup(p, NAMES[*n]).await.map_err(no)?;
            let data = read_all(fs, attr.ino).await.map_err(no)?;
            return Ok(Outcome::Data(data));
        }
        Op::List(d) => {
            let p = resolve(fs, DIRS[*d]).await?;
            let mut v = names(fs, p).await;
            v.sort();
            return Ok(Outcome::Names(v));
        }
        Op::Begin(d, n, data) => {
            let p = resolve(fs, DIRS[*d]).await?;
            let (_, opened) = fs.create(p, NAMES[*n], W_TRUNC).await.map_err(no)?;
            write_seq(fs, opened.fh, data).await.map_err(no)?;
            h.open = Some((opened.fh, data.len() as u64));
        }
        Op::More(data) => {
            if let Some((fh, len)) = &mut h.open {
                let n = fs.write(*fh, *len, data).await.map_err(no)?;
                *len += u64::from(n);
            }
        }
        Op::Flush => {
            if let Some((fh, _)) = h.open {
                fs.flush(fh).await.map_err(no)?;
            }
        }
        Op::End => {
            if let Some((fh, _)) = h.open.take() {
                fs.release(fh).await.map_err(no)?;
            }
        }
        Op::Crash => unreachable!("crashes are run by the harness"),
    }
    Ok(Outcome::Done)
}

/// The whole tree as weir shows it: listings, lookups and reads. The
/// file at `pending` is being written and cannot be read through another
/// handle: it shows as zeros of its size.
async fn fs_tree(fs: &Fs, pending: Option<&str>) -> std::result::Result<Model, TestCaseError> {
    let mut out = Model::new();
    let mut stack = vec![("/".to_string(), ROOT_INO)];
    while let Some((dir, ino)) = stack.pop() {
        let entries = ls(fs, ino)
            .await
            .map_err(|e| TestCaseError::fail(format!("listing {dir}: {e}")))?;
        prop_assert_eq!(&entries[0].0, ".");
        prop_assert_eq!(&entries[1].0, "..");
        for (name, kind) in entries.into_iter().skip(2) {
            let p = path(&dir, &name);
            let attr = fs
                .lookup(ino, &name)
                .await
                .map_err(|e| TestCaseError::fail(format!("lookup {p}: {e}")))?;
            prop_assert_eq!(attr.kind, kind, "kind of {} in listing vs lookup", &p);
            if kind == Kind::Dir {
                stack.push((p.clone(), attr.ino));
                out.insert(p, Node::Dir);
            } else if pending == Some(p.as_str()) {
                out.insert(p, Node::File(vec![0; attr.size as usize]));
            } else {
                let data = read_all(fs, attr.ino)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("reading {p}: {e}")))?;
                prop_assert_eq!(attr.size, data.len() as u64, "size of {}", &p);
                out.insert(p, Node::File(data));
            }
        }
    }
    Ok(out)
}

/// The whole tree as it is in the UFS directory.
fn disk_tree(root: &Path) -> Model {
    let mut out = Model::new();
    let mut stack = vec![("/".to_string(), root.to_path_buf())];
    while let Some((dir, full)) = stack.pop() {
        for name in disk_names(&full) {
            let p = path(&dir, &name);
            let f = full.join(&name);
            if f.is_dir() {
                stack.push((p.clone(), f));
                out.insert(p, Node::Dir);
            } else {
                out.insert(p, Node::File(std::fs::read(&f).unwrap()));
            }
        }
    }
    out
}

/// Compares weir's view and the UFS with the model.
async fn check(
    fs: &Fs,
    root: &Path,
    s: &State,
    step: &str,
) -> std::result::Result<(), TestCaseError> {
    let handles = usize::from(s.writer.is_some());
    prop_assert_eq!(fs.open_handles(), handles, "{}: open handles", step);
    let mut want = s.tree.clone();
    let mut disk = disk_tree(root);
    if let Some(p) = s.pending() {
        // Through weir: present with its staged size. In the UFS:
        // whatever was last flushed, or the old file, or nothing.
        if let Some(Node::File(data)) = want.get_mut(p) {
            data.fill(0);
        }
        disk.remove(p);
    }
    let seen = fs_tree(fs, s.pending()).await?;
    prop_assert_eq!(&seen, &want, "{}: tree through weir", step);
    if let Some(p) = s.pending() {
        want.remove(p);
    }
    prop_assert_eq!(&disk, &want, "{}: tree in the UFS", step);
    Ok(())
}

async fn run(
    ops: Vec<Op>,
    ttl: Duration,
    journaled: bool,
) -> std::result::Result<(), TestCaseError> {
    let mut e = env_with(&["/"], |c| c.metadata_ttl = ttl);
    if journaled {
        e.fs = e.journaled(crate::Start::Fresh).unwrap();
    }
    let mut state = State::default();
    let mut harness = Harness::default();
    for (i, op) in ops.iter().chain([&Op::End]).enumerate() {
        let skipped = state.skips(op);
        let want = model_apply(&mut state, op);
        let got = if skipped {
            Ok(Outcome::Done)
        } else if let Op::Crash = op {
            if journaled {
                e.crash_and_take_over();
            }
            Ok(Outcome::Done)
        } else {
            fs_apply(&e.fs, &mut harness, op).await
        };
        prop_assert_eq!(&got, &want, "step {}: {:?}", i, op);
        check(&e.fs, e.root(), &state, &format!("step {i} ({op:?})")).await?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn fs_matches_the_reference_model(
        ops in proptest::collection::vec(op(), 1..30),
        long_ttl in any::<bool>(),
        journaled in any::<bool>(),
    ) {
        let ttl = if long_ttl { Duration::from_secs(3600) } else { Duration::ZERO };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), run(ops, ttl, journaled))
                .await
                .map_err(|_| TestCaseError::fail("hung for 30 s"))?
        })?;
    }
}
