//! The Kubernetes packaging, checked offline: every manifest in `deploy/`,
//! the kustomize base and overlays as built, and the Helm chart as rendered
//! for each values file in `charts/weir/ci/`, parsed into `k8s-openapi` types,
//! with the invariants weir's CSI contract and its recovery depend on. Every
//! `weir` command line in the manifests, the examples and the docs is checked
//! against the real binary's `--help`, and every `weir.yaml` they carry
//! against its configuration loader.
//!
//! Building the overlays and rendering the chart need `kubectl` and `helm`:
//! `scripts/check-deploy.sh` installs both under `$WEIR_TOOLS` (default
//! `/var/cache/weir-tools`), and they are also looked up on `PATH`. Without
//! them the rendered part is skipped with a message, except under `CI`, where
//! a missing tool fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec,
    ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

const DRIVER: &str = "fuse.csi.weir.dev";
const IMAGE_REPO: &str = "ghcr.io/weir-dev/weir";
/// The FUSE options the docs give as the defaults of every install method.
const DOCUMENTED_FUSE_OPTIONS: [&str; 6] = [
    "kernel_cache",
    "attr_timeout=60",
    "entry_timeout=60",
    "max_background=128",
    "max_idle_threads=128",
    "allow_other",
];

// ---------------------------------------------------------------- loading

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// One YAML document and where it came from.
#[derive(Debug, Clone)]
struct Doc {
    source: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
    fn typed<T: DeserializeOwned>(&self) -> T {
        serde_yaml_ng::from_value(self.value.clone()).unwrap_or_else(|e| {
            panic!(
                "{}: {} {} does not parse as {}: {e}",
                self.source,
                self.kind(),
                self.name(),
                std::any::type_name::<T>()
            )
        })
    }
}

fn parse_docs(source: &str, text: &str) -> Vec<Doc> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{source}: not YAML: {e}")))
        .filter(|v| !v.is_null())
        .map(|value| Doc {
            source: source.to_string(),
            value,
        })
        .collect()
}

/// A set of objects meant to be applied together.
#[derive(Debug)]
struct Set {
    name: String,
    docs: Vec<Doc>,
}

impl Set {
    fn all<T: DeserializeOwned>(&self, kind: &str) -> Vec<(String, T)> {
        self.docs
            .iter()
            .filter(|d| d.kind() == kind)
            .map(|d| (d.name().to_string(), d.typed()))
            .collect()
    }
    fn one<T: DeserializeOwned>(&self, kind: &str, name: &str) -> T {
        let found: Vec<T> = self
            .all::<T>(kind)
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| t)
            .collect();
        assert_eq!(found.len(), 1, "{}: one {kind} {name}", self.name);
        found.into_iter().next().unwrap()
    }
    /// Is this a CSI install (as opposed to the FUSE DaemonSet method)?
    fn is_csi(&self) -> bool {
        self.docs.iter().any(|d| d.kind() == "CSIDriver")
    }
}

/// Every `.yaml` file under `deploy/` that holds Kubernetes objects.
fn manifest_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("deploy"), &mut files);
    let root = repo();
    let mut rel: Vec<String> = files
        .iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n != "kustomization.yaml" && n != "weir.yaml"
        })
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    rel.sort();
    rel
}

/// Every manifest file as written, one set per file.
fn raw_sets() -> Vec<Set> {
    manifest_files()
        .into_iter()
        .map(|f| Set {
            docs: parse_docs(&f, &read(&f)),
            name: f,
        })
        .collect()
}

/// The examples in `deploy/examples/`, each with the base it runs against.
fn example_sets() -> Vec<Set> {
    raw_sets()
        .into_iter()
        .filter(|s| s.name.starts_with("deploy/examples/"))
        .collect()
}

/// The raw base as one set (its ConfigMap comes from weir.yaml).
fn raw_base() -> Set {
    let mut docs = Vec::new();
    for s in raw_sets()
        .into_iter()
        .filter(|s| s.name.starts_with("deploy/base/"))
    {
        docs.extend(s.docs);
    }
    let mut cm = serde_yaml_ng::Mapping::new();
    cm.insert("weir.yaml".into(), read("deploy/base/weir.yaml").into());
    docs.push(Doc {
        source: "deploy/base/weir.yaml".into(),
        value: serde_yaml_ng::from_str::<Value>(
            "{apiVersion: v1, kind: ConfigMap, metadata: {name: weir-config, namespace: weir}}",
        )
        .map(|mut v| {
            v["data"] = Value::Mapping(cm);
            v
        })
        .unwrap(),
    });
    Set {
        name: "deploy/base (files)".into(),
        docs,
    }
}

fn tool(name: &str) -> Option<PathBuf> {
    let tools = std::env::var_os("WEIR_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/weir-tools"));
    let pinned = tools.join("bin").join(name);
    if pinned.is_file() {
        return Some(pinned);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn run_tool(tool: &Path, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    assert!(
        out.status.success(),
        "{} {}: {}",
        tool.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The kustomize base and overlays as built, and the chart as rendered with
/// its defaults and each values file; None when the tools are missing.
fn rendered_sets() -> Option<&'static [Set]> {
    static SETS: OnceLock<Option<Vec<Set>>> = OnceLock::new();
    SETS.get_or_init(|| {
        let (Some(kubectl), Some(helm)) = (tool("kubectl"), tool("helm")) else {
            let msg = "kubectl or helm not found (scripts/check-deploy.sh installs both under \
                       /var/cache/weir-tools): the kustomize overlays and the Helm chart are not \
                       checked";
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return None;
        };
        let mut sets = Vec::new();
        let mut dirs = vec!["deploy/base".to_string()];
        let mut overlays: Vec<String> = std::fs::read_dir(repo().join("deploy/overlays"))
            .unwrap()
            .map(|e| {
                format!(
                    "deploy/overlays/{}",
                    e.unwrap().file_name().to_str().unwrap()
                )
            })
            .collect();
        overlays.sort();
        assert!(overlays.len() >= 3, "the three resource profiles");
        dirs.extend(overlays);
        for dir in dirs {
            let name = format!("kubectl kustomize {dir}");
            let text = run_tool(&kubectl, &["kustomize", &dir]);
            sets.push(Set {
                docs: parse_docs(&name, &text),
                name,
            });
        }
        let mut values: Vec<Option<String>> = vec![None];
        let mut files: Vec<String> = std::fs::read_dir(repo().join("charts/weir/ci"))
            .unwrap()
            .map(|e| {
                format!(
                    "charts/weir/ci/{}",
                    e.unwrap().file_name().to_str().unwrap()
                )
            })
            .filter(|f| f.ends_with("-values.yaml"))
            .collect();
        files.sort();
        assert!(files.len() >= 4, "example values files in charts/weir/ci");
        values.extend(files.into_iter().map(Some));
        for v in values {
            let mut args = vec!["template", "weir", "charts/weir", "--namespace", "weir"];
            if let Some(f) = &v {
                args.extend(["-f", f.as_str()]);
            }
            let name = format!("helm {}", args.join(" "));
            let text = run_tool(&helm, &args);
            sets.push(Set {
                docs: parse_docs(&name, &text),
                name,
            });
        }
        Some(sets)
    })
    .as_deref()
}

/// The complete installs: the raw base, and every rendered set.
fn installs() -> Vec<&'static Set> {
    static BASE: OnceLock<Set> = OnceLock::new();
    let mut v = vec![BASE.get_or_init(raw_base)];
    if let Some(r) = rendered_sets() {
        v.extend(r.iter());
    }
    v
}

fn pod_specs(set: &Set) -> Vec<(String, PodSpec)> {
    let mut out = Vec::new();
    for d in &set.docs {
        let spec = match d.kind() {
            "Pod" => d.typed::<Pod>().spec,
            "DaemonSet" => d.typed::<DaemonSet>().spec.template.spec,
            "Deployment" => d.typed::<Deployment>().spec.template.spec,
            _ => None,
        };
        if let Some(s) = spec {
            out.push((format!("{} {}/{}", set.name, d.kind(), d.name()), s));
        }
    }
    out
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
}

// ------------------------------------------------- weir command lines

/// Splits shell text into words and separators (`;`, `&&`, `||`, `|`,
/// newline), honouring quotes, backslash-newline and comments.
fn shell_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    let flush = |cur: &mut String, in_word: &mut bool, out: &mut Vec<String>| {
        if *in_word {
            out.push(std::mem::take(cur));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'\n') => {
                chars.next();
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            '\'' => {
                in_word = true;
                for n in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                    cur.push(n);
                }
            }
            '"' => {
                in_word = true;
                while let Some(n) = chars.next() {
                    match n {
                        '"' => break,
                        '\\' => {
                            if let Some(m) = chars.next() {
                                cur.push(m);
                            }
                        }
                        _ => cur.push(n),
                    }
                }
            }
            '#' if !in_word => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                out.push("\n".into());
            }
            '\n' | ';' | '|' | '&' => {
                flush(&mut cur, &mut in_word, &mut out);
                out.push(c.to_string());
            }
            c if c.is_whitespace() => flush(&mut cur, &mut in_word, &mut out),
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    flush(&mut cur, &mut in_word, &mut out);
    out
}

const SUBCOMMANDS: [&str; 4] = ["mount", "umount", "csi", "fs"];

fn is_weir_program(word: &str) -> bool {
    let base = word.rsplit('/').next().unwrap_or(word);
    base == "weir" || (word.starts_with(IMAGE_REPO) && word[IMAGE_REPO.len()..].starts_with(':'))
}

/// Every `weir SUBCOMMAND ARGS...` in shell text (also inside quoted
/// scripts such as `sh -c '...'`).
fn weir_commands_in_shell(text: &str) -> Vec<Vec<String>> {
    let words = shell_words(text);
    let mut found = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let separator = ["\n", ";", "|", "&"].contains(&w.as_str());
        if !separator && (w.contains(char::is_whitespace) || w.contains(';')) {
            found.extend(weir_commands_in_shell(w));
        }
        if is_weir_program(w)
            && words
                .get(i + 1)
                .is_some_and(|s| SUBCOMMANDS.contains(&s.as_str()))
        {
            let mut argv = Vec::new();
            i += 1;
            while i < words.len() && !["\n", ";", "|", "&"].contains(&words[i].as_str()) {
                let a = &words[i];
                // Redirections are the shell's, not weir's.
                let redirect = a.trim_start_matches(|c: char| c.is_ascii_digit());
                if !(redirect.starts_with('>') || redirect.starts_with('<')) {
                    argv.push(a.clone());
                }
                i += 1;
            }
            found.push(argv);
            continue;
        }
        i += 1;
    }
    found
}

/// The weir command line a container runs, if it runs weir.
fn container_weir_commands(c: &Container) -> Vec<Vec<String>> {
    let command = c.command.clone().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    let image = c.image.clone().unwrap_or_default();
    let is_weir_image = image.starts_with(IMAGE_REPO);
    if command.is_empty() {
        // The image's entrypoint is weir.
        return if is_weir_image {
            vec![args]
        } else {
            Vec::new()
        };
    }
    let argv: Vec<String> = command.into_iter().chain(args).collect();
    if is_weir_program(&argv[0]) {
        return vec![argv[1..].to_vec()];
    }
    if argv.len() >= 3 && argv[0].ends_with("sh") && argv[1] == "-c" {
        return weir_commands_in_shell(&argv[2]);
    }
    Vec::new()
}

/// What `weir SUBCOMMAND --help` says the subcommand accepts.
#[derive(Debug)]
struct Usage {
    /// Flag (with dashes) -> takes a value.
    flags: BTreeMap<String, bool>,
    /// `--flag` -> its possible values, when clap lists them.
    choices: BTreeMap<String, BTreeSet<String>>,
    positionals: usize,
    required: Vec<String>,
}

fn weir_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weir")
}

fn usage(sub: &str) -> &'static Usage {
    static CACHE: OnceLock<std::sync::Mutex<BTreeMap<String, &'static Usage>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(u) = cache.lock().unwrap().get(sub) {
        return u;
    }
    let out = Command::new(weir_bin())
        .args([sub, "--help"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`weir {sub}` is not a command of this weir: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = String::from_utf8(out.stdout).unwrap();
    let mut u = Usage {
        flags: BTreeMap::new(),
        choices: BTreeMap::new(),
        positionals: 0,
        required: Vec::new(),
    };
    let usage_line = help
        .lines()
        .find(|l| l.starts_with("Usage: "))
        .expect("a Usage line");
    let usage_words: Vec<&str> = usage_line.split_whitespace().collect();
    u.positionals = usage_words
        .iter()
        .filter(|w| w.starts_with('<') && !w.starts_with("<-"))
        .count()
        - usage_words
            .windows(2)
            .filter(|w| w[0].starts_with("--") && w[1].starts_with('<'))
            .count();
    u.required = usage_words
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.to_string())
        .collect();
    let mut last_flag: Option<String> = None;
    let mut in_values = false;
    for line in help.lines() {
        let t = line.trim_start();
        if t.starts_with('-') && line.starts_with("  ") && !line.starts_with("          ") {
            in_values = false;
            for part in t.split(", ") {
                let mut words = part.split_whitespace();
                let Some(flag) = words.next() else { continue };
                if !flag.starts_with('-') {
                    break;
                }
                let takes = words.next().is_some_and(|w| w.starts_with('<'));
                u.flags.insert(flag.to_string(), takes);
                if flag.starts_with("--") {
                    last_flag = Some(flag.to_string());
                }
            }
        } else if t.starts_with("Possible values:") {
            in_values = true;
        } else if in_values && t.starts_with("- ") {
            let v = t[2..].split(':').next().unwrap().trim().to_string();
            if let Some(f) = &last_flag {
                u.choices.entry(f.clone()).or_default().insert(v);
            }
        }
    }
    assert!(
        u.flags.contains_key("--help"),
        "parsed the flags of weir {sub}"
    );
    let leaked: &'static Usage = Box::leak(Box::new(u));
    cache.lock().unwrap().insert(sub.to_string(), leaked);
    leaked
}

/// A parsed weir command line: flags with values, positionals.
#[derive(Debug)]
struct Invocation {
    sub: String,
    flags: Vec<(String, Option<String>)>,
    positionals: Vec<String>,
}

impl Invocation {
    fn value(&self, flag: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(f, _)| f == flag)
            .and_then(|(_, v)| v.as_deref())
    }
    fn values(&self, flag: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(f, _)| f == flag)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|(f, _)| f == flag)
    }
}

/// Checks `argv` (starting with the subcommand) against the binary's help.
fn check_invocation(origin: &str, argv: &[String], env: &BTreeSet<String>) -> Invocation {
    let sub = argv
        .first()
        .unwrap_or_else(|| panic!("{origin}: weir without a subcommand"));
    let u = usage(sub);
    let mut inv = Invocation {
        sub: sub.clone(),
        flags: Vec::new(),
        positionals: Vec::new(),
    };
    let mut i = 1;
    while i < argv.len() {
        let a = &argv[i];
        if a.starts_with('-') && a.len() > 1 {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (a.clone(), None),
            };
            let takes = *u.flags.get(&flag).unwrap_or_else(|| {
                panic!(
                    "{origin}: `weir {sub}` does not accept {flag} (it accepts {:?})",
                    u.flags.keys().collect::<Vec<_>>()
                )
            });
            let value = if takes {
                inline.or_else(|| {
                    i += 1;
                    argv.get(i).cloned()
                })
            } else {
                assert!(inline.is_none(), "{origin}: {flag} takes no value");
                None
            };
            if takes {
                let v = value
                    .as_deref()
                    .unwrap_or_else(|| panic!("{origin}: {flag} needs a value"));
                if let Some(choices) = u.choices.get(&flag) {
                    assert!(
                        choices.contains(v),
                        "{origin}: {flag}={v} is not one of {choices:?}"
                    );
                }
            }
            inv.flags.push((flag, value));
        } else {
            inv.positionals.push(a.clone());
        }
        i += 1;
    }
    assert_eq!(
        inv.positionals.len(),
        u.positionals,
        "{origin}: `weir {sub}` takes {} positional argument(s), got {:?}",
        u.positionals,
        inv.positionals
    );
    for req in &u.required {
        let env_name = req
            .trim_start_matches("--")
            .replace('-', "_")
            .to_uppercase();
        let from_env = match req.as_str() {
            "--endpoint" => env.contains("CSI_ENDPOINT"),
            _ => env.contains(&env_name),
        };
        // `--ufs` and `--config` are alternatives in the usage line of mount.
        if sub == "mount" && (req == "--config" || req == "--ufs") {
            assert!(
                inv.has("--config") || inv.has("--ufs"),
                "{origin}: weir mount needs --config or --ufs"
            );
            continue;
        }
        assert!(
            inv.has(req) || from_env,
            "{origin}: `weir {sub}` needs {req}"
        );
    }
    inv
}

fn container_env(c: &Container) -> BTreeSet<String> {
    c.env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect::<BTreeSet<_>>()
}

/// Every weir invocation of every container of a set, checked.
fn set_invocations(set: &Set) -> Vec<(String, Container, Invocation)> {
    let mut out = Vec::new();
    for (name, spec) in pod_specs(set) {
        for c in containers(&spec) {
            for argv in container_weir_commands(c) {
                let origin = format!("{name} container {}", c.name);
                let inv = check_invocation(&origin, &argv, &container_env(c));
                out.push((origin, c.clone(), inv));
            }
        }
    }
    out
}

// ------------------------------------------------ config and volumes

/// The weir.yaml a container reads through `--config`, from the ConfigMap
/// mounted at that path.
fn config_of(set: &Set, spec: &PodSpec, c: &Container, inv: &Invocation) -> Option<String> {
    let path = inv.value("--config")?;
    let (dir, file) = path.rsplit_once('/').unwrap();
    let vm = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == dir)
        .unwrap_or_else(|| panic!("{}: nothing is mounted at {dir} for --config", set.name));
    let vol = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == vm.name)
        .unwrap();
    let cm_name = &vol
        .config_map
        .as_ref()
        .unwrap_or_else(|| panic!("{}: {dir} is not a ConfigMap", set.name))
        .name;
    let cm: ConfigMap = set.one("ConfigMap", cm_name);
    let data = cm.data.unwrap_or_default();
    Some(
        data.get(file)
            .unwrap_or_else(|| panic!("{}: ConfigMap {cm_name} has no {file}", set.name))
            .clone(),
    )
}

/// Runs the real binary's configuration loader on `config` with `sets`:
/// `weir mount` loads the file, applies `--set` and parses the FUSE options
/// before it looks at the mount point, so a missing mount point must be the
/// first (and only) complaint.
fn assert_weir_accepts_config(origin: &str, config: &str, sets: &[&str], opts: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weir.yaml");
    std::fs::write(&file, config).unwrap();
    let missing = dir.path().join("no-such-mount-point");
    let mut cmd = Command::new(weir_bin());
    cmd.arg("mount").arg(&missing).arg("--config").arg(&file);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    for o in opts {
        cmd.arg("-o").arg(o);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("weir: error: mount point {}", missing.display());
    assert!(
        !out.status.success() && stderr.starts_with(&expected),
        "{origin}: weir refuses its configuration: {stderr}"
    );
}

fn host_path_of<'a>(spec: &'a PodSpec, volume: &str) -> Option<&'a str> {
    spec.volumes
        .iter()
        .flatten()
        .find(|v| v.name == volume)?
        .host_path
        .as_ref()
        .map(|h| h.path.as_str())
}

fn yaml_get<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(v, |node, k| node.as_mapping()?.get(k))
}

/// weir.yaml with `--set key=value` overrides applied, as weir applies them.
fn effective_config(config: &str, sets: &[&str]) -> Value {
    let mut doc: Value = serde_yaml_ng::from_str(config).unwrap();
    for s in sets {
        let (key, raw) = s.split_once('=').unwrap();
        let value: Value =
            serde_yaml_ng::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        let parts: Vec<&str> = key.split('.').collect();
        let mut node = &mut doc;
        for p in &parts[..parts.len() - 1] {
            let m = node.as_mapping_mut().unwrap();
            node = m
                .entry(Value::String(p.to_string()))
                .or_insert_with(|| Value::Mapping(Default::default()));
        }
        node.as_mapping_mut()
            .unwrap()
            .insert(Value::String(parts[parts.len() - 1].to_string()), value);
    }
    doc
}

fn bytes_of(v: Option<&Value>, default: u64) -> u64 {
    match v {
        None => default,
        Some(Value::Number(n)) => n.as_u64().unwrap(),
        Some(Value::String(s)) => s
            .parse::<bytesize::ByteSize>()
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .as_u64(),
        Some(other) => panic!("not a size: {other:?}"),
    }
}

/// A Kubernetes memory quantity in bytes.
fn quantity_bytes(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * mult;
        }
    }
    q.parse().unwrap()
}

/// docs/tuning.md's memory formula for one weir container, in bytes.
fn memory_needed(cfg: &Value, readers: u64, files: u64, csi_plugin: bool) -> u64 {
    const MIB: u64 = 1 << 20;
    let threads = yaml_get(cfg, "fuse.threads")
        .and_then(Value::as_u64)
        .unwrap_or(16);
    let page = bytes_of(yaml_get(cfg, "cache.page_size"), MIB);
    let memory = bytes_of(yaml_get(cfg, "cache.memory"), 0);
    let plugin = if csi_plugin { 32 * MIB } else { 0 };
    let sum =
        plugin + 64 * MIB + threads * 4 * MIB + 2 * memory + readers * 8 * page + files * 1024;
    sum + sum / 4
}

// ---------------------------------------------------------------- tests

#[test]
fn every_manifest_parses_into_kubernetes_types() {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let sets = raw_sets();
    let n_raw = sets.len();
    let r = rendered_sets();
    let rendered = r.map_or(0, <[Set]>::len);
    let all: Vec<&Set> = sets.iter().chain(r.into_iter().flatten()).collect();
    for set in all {
        assert!(!set.docs.is_empty(), "{}: no objects", set.name);
        for d in &set.docs {
            match d.kind() {
                "Namespace" => {
                    let _: Namespace = d.typed();
                }
                "ServiceAccount" => {
                    let _: ServiceAccount = d.typed();
                }
                "ClusterRole" => {
                    let _: ClusterRole = d.typed();
                }
                "ClusterRoleBinding" => {
                    let _: ClusterRoleBinding = d.typed();
                }
                "Role" => {
                    let _: Role = d.typed();
                }
                "RoleBinding" => {
                    let _: RoleBinding = d.typed();
                }
                "ConfigMap" => {
                    let _: ConfigMap = d.typed();
                }
                "DaemonSet" => {
                    let _: DaemonSet = d.typed();
                }
                "Deployment" => {
                    let _: Deployment = d.typed();
                }
                "Pod" => {
                    let _: Pod = d.typed();
                }
                "CSIDriver" => {
                    let _: CSIDriver = d.typed();
                }
                "StorageClass" => {
                    let _: StorageClass = d.typed();
                }
                "PersistentVolume" => {
                    let _: PersistentVolume = d.typed();
                }
                "PersistentVolumeClaim" => {
                    let _: PersistentVolumeClaim = d.typed();
                }
                other => panic!("{}: unexpected kind {other:?}", d.source),
            }
            *counts.entry(d.kind().to_string()).or_default() += 1;
        }
    }
    let total: usize = counts.values().sum();
    eprintln!("{total} objects in {n_raw} files and {rendered} rendered sets: {counts:?}");
    assert!(n_raw >= 12, "manifest files found: {n_raw}");
}

#[test]
fn csidriver_has_the_contract_fields() {
    for set in installs().into_iter().filter(|s| s.is_csi()) {
        let drivers = set.all::<CSIDriver>("CSIDriver");
        assert_eq!(drivers.len(), 1, "{}", set.name);
        let (name, d) = &drivers[0];
        assert_eq!(name, DRIVER, "{}", set.name);
        let spec = &d.spec;
        assert_eq!(spec.attach_required, Some(false), "{}", set.name);
        assert_eq!(spec.pod_info_on_mount, Some(true), "{}", set.name);
        let modes: BTreeSet<&str> = spec
            .volume_lifecycle_modes
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        assert_eq!(
            modes,
            BTreeSet::from(["Persistent", "Ephemeral"]),
            "{}",
            set.name
        );
        // chown is ENOTSUP: kubelet must not apply fsGroup.
        assert_eq!(
            spec.fs_group_policy.as_deref(),
            Some("None"),
            "{}",
            set.name
        );
    }
}

#[test]
fn node_plugin_is_privileged_and_mounts_the_kubelet_dir_bidirectional() {
    let mut checked = 0;
    for set in installs().into_iter().filter(|s| s.is_csi()) {
        let mut nodes = 0;
        for (name, ds) in set.all::<DaemonSet>("DaemonSet") {
            let ds_spec = ds.spec;
            let spec = ds_spec.template.spec.unwrap();
            let Some((c, inv)) = spec.containers.iter().find_map(|c| {
                container_weir_commands(c)
                    .into_iter()
                    .map(|argv| check_invocation(&name, &argv, &container_env(c)))
                    .find(|i| i.sub == "csi" && i.value("--mode") == Some("node"))
                    .map(|i| (c, i))
            }) else {
                continue;
            };
            nodes += 1;
            let what = format!("{}: DaemonSet {name}", set.name);
            assert_eq!(
                ds_spec.update_strategy.and_then(|u| u.type_).as_deref(),
                Some("OnDelete"),
                "{what}: a rolling update would kill every FUSE daemon of a node"
            );
            let sc = c.security_context.clone().unwrap_or_default();
            assert_eq!(sc.privileged, Some(true), "{what}: privileged");
            let mounts = c.volume_mounts.clone().unwrap_or_default();
            let mount_of = |path: &str| {
                mounts
                    .iter()
                    .find(|m| m.mount_path.trim_end_matches('/') == path.trim_end_matches('/'))
                    .unwrap_or_else(|| panic!("{what}: nothing mounted at {path}"))
            };
            let kubelet = inv.value("--kubelet-dir").unwrap_or("/var/lib/kubelet");
            let km = mount_of(kubelet);
            assert_eq!(
                km.mount_propagation.as_deref(),
                Some("Bidirectional"),
                "{what}: the kubelet dir must be Bidirectional"
            );
            assert_eq!(
                host_path_of(&spec, &km.name),
                Some(kubelet),
                "{what}: kubelet dir is the host's, at the same path"
            );
            let state = inv.value("--state-dir").expect("--state-dir");
            let sm = mount_of(state);
            assert_eq!(
                host_path_of(&spec, &sm.name),
                Some(state),
                "{what}: state dir"
            );
            let fuse = mount_of("/dev/fuse");
            assert_eq!(host_path_of(&spec, &fuse.name), Some("/dev/fuse"), "{what}");
            let config = config_of(set, &spec, c, &inv).expect("--config");
            let sets: Vec<&str> = inv.values("--set");
            let cfg = effective_config(&config, &sets);
            let cache_dir = yaml_get(&cfg, "cache.dir")
                .and_then(Value::as_str)
                .unwrap_or("/var/cache/weir");
            let cm = mount_of(cache_dir);
            assert_eq!(
                host_path_of(&spec, &cm.name),
                Some(cache_dir),
                "{what}: the cache dir is a hostPath at the same path"
            );
            // The socket kubelet is told about is the one weir listens on.
            let endpoint = c
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "CSI_ENDPOINT")
                .and_then(|e| e.value.clone())
                .or_else(|| inv.value("--endpoint").map(str::to_string))
                .unwrap();
            let sock = endpoint.strip_prefix("unix://").expect("a unix endpoint");
            let (sock_dir, sock_file) = sock.rsplit_once('/').unwrap();
            let socket_vol = &mount_of(sock_dir).name;
            let plugin_dir = format!("{kubelet}/plugins/{DRIVER}");
            assert_eq!(
                host_path_of(&spec, socket_vol),
                Some(plugin_dir.as_str()),
                "{what}: the socket dir is kubelet's plugin dir for {DRIVER}"
            );
            let registrar = spec
                .containers
                .iter()
                .find(|c| {
                    c.image
                        .as_deref()
                        .is_some_and(|i| i.contains("csi-node-driver-registrar"))
                })
                .unwrap_or_else(|| panic!("{what}: node-driver-registrar"));
            let args = registrar.args.clone().unwrap_or_default();
            assert!(
                args.contains(&format!(
                    "--kubelet-registration-path={plugin_dir}/{sock_file}"
                )),
                "{what}: registrar registers {plugin_dir}/{sock_file}: {args:?}"
            );
            let registration = registrar
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.mount_path == "/registration")
                .expect("registration dir");
            assert_eq!(
                host_path_of(&spec, &registration.name),
                Some(format!("{kubelet}/plugins_registry").as_str())
            );
            let probe = spec
                .containers
                .iter()
                .find(|c| {
                    c.image
                        .as_deref()
                        .is_some_and(|i| i.contains("livenessprobe"))
                })
                .unwrap_or_else(|| panic!("{what}: livenessprobe sidecar"));
            for side in [registrar, probe] {
                let a = side.args.clone().unwrap_or_default();
                let addr = a
                    .iter()
                    .find_map(|x| x.strip_prefix("--csi-address="))
                    .unwrap_or_else(|| panic!("{what}: {} --csi-address", side.name));
                let (d, f) = addr.rsplit_once('/').unwrap();
                assert_eq!(f, sock_file, "{what}: {}", side.name);
                let m = side
                    .volume_mounts
                    .iter()
                    .flatten()
                    .find(|m| m.mount_path == d)
                    .unwrap_or_else(|| panic!("{what}: {} mounts {d}", side.name));
                assert_eq!(
                    &m.name, socket_vol,
                    "{what}: {} shares the socket",
                    side.name
                );
            }
            // weir's own liveness goes through the livenessprobe sidecar.
            let lp = c.liveness_probe.as_ref().expect("a liveness probe");
            assert_eq!(
                lp.http_get.as_ref().and_then(|h| h.path.as_deref()),
                Some("/healthz"),
                "{what}"
            );
        }
        assert_eq!(nodes, 1, "{}: one node plugin DaemonSet", set.name);
        checked += 1;
    }
    assert!(checked >= 1);
}

#[test]
fn controller_runs_csi_provisioner_with_extra_create_metadata() {
    for set in installs().into_iter().filter(|s| s.is_csi()) {
        let mut found = 0;
        for (name, dep) in set.all::<Deployment>("Deployment") {
            let spec = dep.spec.template.spec.unwrap();
            let is_controller = spec.containers.iter().any(|c| {
                container_weir_commands(c).iter().any(|argv| {
                    let i = check_invocation(&name, argv, &container_env(c));
                    i.sub == "csi" && i.value("--mode") == Some("controller")
                })
            });
            if !is_controller {
                continue;
            }
            found += 1;
            let prov = spec
                .containers
                .iter()
                .find(|c| {
                    c.image
                        .as_deref()
                        .is_some_and(|i| i.contains("csi-provisioner"))
                })
                .unwrap_or_else(|| panic!("{}: {name} has csi-provisioner", set.name));
            let args = prov.args.clone().unwrap_or_default();
            assert!(
                args.iter().any(|a| a == "--extra-create-metadata"),
                "{}: csi-provisioner needs --extra-create-metadata for pathPattern",
                set.name
            );
            let sa = spec.service_account_name.clone().unwrap();
            let rules = rules_for(set, &sa);
            for (group, res, verb) in [
                ("", "persistentvolumes", "create"),
                ("", "persistentvolumes", "delete"),
                ("", "persistentvolumeclaims", "update"),
                ("storage.k8s.io", "storageclasses", "list"),
                ("", "events", "create"),
                ("coordination.k8s.io", "leases", "update"),
            ] {
                assert!(
                    allows(&rules, group, res, verb),
                    "{}: ServiceAccount {sa} may not {verb} {res}",
                    set.name
                );
            }
        }
        assert_eq!(found, 1, "{}: one controller Deployment", set.name);
    }
}

/// The rules bound to ServiceAccount `sa` by (Cluster)RoleBindings.
fn rules_for(set: &Set, sa: &str) -> Vec<PolicyRule> {
    let mut rules = Vec::new();
    let bound = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects
            .iter()
            .flatten()
            .any(|s| s.kind == "ServiceAccount" && s.name == sa)
    };
    for (_, b) in set.all::<ClusterRoleBinding>("ClusterRoleBinding") {
        if bound(&b.subjects) {
            let role: ClusterRole = set.one("ClusterRole", &b.role_ref.name);
            rules.extend(role.rules.unwrap_or_default());
        }
    }
    for (_, b) in set.all::<RoleBinding>("RoleBinding") {
        if bound(&b.subjects) {
            let role: Role = set.one("Role", &b.role_ref.name);
            rules.extend(role.rules.unwrap_or_default());
        }
    }
    rules
}

fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups
            .iter()
            .flatten()
            .any(|g| g == group || g == "*")
            && r.resources
                .iter()
                .flatten()
                .any(|x| x == resource || x == "*")
            && r.verbs.iter().any(|v| v == verb || v == "*")
    })
}

#[test]
fn node_plugin_may_read_pods_and_post_events() {
    for set in installs().into_iter().filter(|s| s.is_csi()) {
        let (_, ds) = set
            .all::<DaemonSet>("DaemonSet")
            .into_iter()
            .next()
            .unwrap();
        let sa = ds
            .spec
            .template
            .spec
            .unwrap()
            .service_account_name
            .expect("the node plugin has its own ServiceAccount");
        let rules = rules_for(set, &sa);
        for (res, verb) in [("pods", "get"), ("events", "create"), ("events", "patch")] {
            assert!(
                allows(&rules, "", res, verb),
                "{}: ServiceAccount {sa} may not {verb} {res}",
                set.name
            );
        }
    }
}

#[test]
fn storage_class_and_static_volume_are_named_weir_fuse() {
    for set in installs().into_iter().filter(|s| s.is_csi()) {
        let sc: StorageClass = set.one("StorageClass", "weir-fuse");
        assert_eq!(sc.provisioner, DRIVER, "{}", set.name);
        let params = sc.parameters.unwrap_or_default();
        for k in params.keys() {
            assert!(
                ["basePath", "pathPattern", "onDelete"].contains(&k.as_str()),
                "{}: unknown StorageClass parameter {k}",
                set.name
            );
        }
        assert!(
            params.get("basePath").is_some_and(|p| p.starts_with('/')),
            "{}: basePath",
            set.name
        );
        let on_delete = params.get("onDelete").map_or("retain", String::as_str);
        assert!(["retain", "delete"].contains(&on_delete), "{}", set.name);
        let pattern = params.get("pathPattern").expect("pathPattern");
        let mut rest = pattern.as_str();
        while let Some(start) = rest.find("${") {
            let end = rest[start..].find('}').expect("closed ${...}") + start;
            let var = &rest[start + 2..end];
            assert!(
                ["pvc.namespace", "pvc.name", "pv.name"].contains(&var),
                "{}: pathPattern variable ${{{var}}}",
                set.name
            );
            rest = &rest[end + 1..];
        }

        let pvc: PersistentVolumeClaim = set.one("PersistentVolumeClaim", "weir-fuse");
        let pv: PersistentVolume = set.one("PersistentVolume", "weir-fuse");
        let pvc_spec = pvc.spec.unwrap();
        let pv_spec = pv.spec.unwrap();
        assert_eq!(pvc_spec.volume_name.as_deref(), Some("weir-fuse"));
        assert_eq!(pvc_spec.storage_class_name.as_deref(), Some(""));
        assert_eq!(pv_spec.storage_class_name.as_deref(), Some(""));
        let claim = pv_spec.claim_ref.unwrap();
        assert_eq!(claim.name.as_deref(), Some("weir-fuse"));
        assert_eq!(claim.namespace, pvc.metadata.namespace, "{}", set.name);
        let csi = pv_spec.csi.unwrap();
        assert_eq!(csi.driver, DRIVER);
        assert_eq!(
            csi.volume_attributes
                .unwrap_or_default()
                .get("mountPath")
                .map(String::as_str),
            Some("/"),
            "{}: the static volume gives the whole namespace",
            set.name
        );
        for modes in [pv_spec.access_modes, pvc_spec.access_modes] {
            assert_eq!(modes.unwrap_or_default(), vec!["ReadWriteMany".to_string()]);
        }
    }
}

/// Volumes of `spec` that are weir: CSI volumes of the driver, claims of a
/// weir PVC, or hostPaths under a FUSE DaemonSet's mount dir.
fn weir_volumes(
    spec: &PodSpec,
    weir_claims: &BTreeSet<String>,
    fuse_dirs: &[String],
) -> Vec<String> {
    spec.volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.csi.as_ref().is_some_and(|c| c.driver == DRIVER)
                || v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|p| weir_claims.contains(&p.claim_name))
                || v.host_path.as_ref().is_some_and(|h| {
                    fuse_dirs.iter().any(|d| {
                        h.path.trim_end_matches('/') == d || h.path.starts_with(&format!("{d}/"))
                    })
                })
        })
        .map(|v| v.name.clone())
        .collect()
}

/// Host dirs under which FUSE DaemonSets mount weir.
fn fuse_host_dirs(sets: &[&Set]) -> Vec<String> {
    let mut dirs = Vec::new();
    for set in sets {
        for (_, spec) in pod_specs(set) {
            for c in &spec.containers {
                for argv in container_weir_commands(c) {
                    if argv.first().map(String::as_str) != Some("mount") {
                        continue;
                    }
                    for m in c.volume_mounts.iter().flatten() {
                        if m.mount_propagation.as_deref() == Some("Bidirectional")
                            && let Some(h) = host_path_of(&spec, &m.name)
                        {
                            dirs.push(h.trim_end_matches('/').to_string());
                        }
                    }
                }
            }
        }
    }
    dirs
}

#[test]
fn every_pod_that_mounts_weir_uses_host_to_container() {
    let examples = example_sets();
    let mut all: Vec<&Set> = examples.iter().collect();
    if let Some(r) = rendered_sets() {
        all.extend(r.iter());
    }
    let fuse_dirs = fuse_host_dirs(&all);
    assert!(!fuse_dirs.is_empty(), "the FUSE DaemonSet example");
    let mut weir_claims: BTreeSet<String> = BTreeSet::from(["weir-fuse".to_string()]);
    for set in &all {
        for (name, pvc) in set.all::<PersistentVolumeClaim>("PersistentVolumeClaim") {
            let spec = pvc.spec.unwrap();
            if spec.storage_class_name.as_deref() == Some("weir-fuse")
                || spec.volume_name.as_deref() == Some("weir-fuse")
            {
                weir_claims.insert(name);
            }
        }
    }
    let mut consumers = 0;
    let mut per_example: BTreeMap<String, usize> = BTreeMap::new();
    for set in &all {
        for (name, spec) in pod_specs(set) {
            let vols = weir_volumes(&spec, &weir_claims, &fuse_dirs);
            for c in containers(&spec) {
                if !container_weir_commands(c).is_empty() {
                    continue; // weir itself: Bidirectional, checked elsewhere
                }
                for m in c.volume_mounts.iter().flatten() {
                    if let Some(h) = host_path_of(&spec, &m.name)
                        && vols.contains(&m.name)
                    {
                        assert!(
                            fuse_dirs.iter().any(|d| d == h.trim_end_matches('/')),
                            "{name} container {}: hostPath {h} is under a FUSE DaemonSet's \
                             dir; mount the dir itself ({fuse_dirs:?}), or a remount after a \
                             weir restart never reaches this container",
                            c.name
                        );
                    }
                    if vols.contains(&m.name) {
                        assert_eq!(
                            m.mount_propagation.as_deref(),
                            Some("HostToContainer"),
                            "{name} container {}: volume {} mounts weir without \
                             mountPropagation: HostToContainer, so a remounted session \
                             would never reach it",
                            c.name,
                            m.name
                        );
                        consumers += 1;
                        *per_example.entry(set.name.clone()).or_default() += 1;
                    }
                }
            }
        }
    }
    for f in [
        "deploy/examples/pvc-pod.yaml",
        "deploy/examples/inline-volumes-pod.yaml",
        "deploy/examples/storageclass-pvc.yaml",
        "deploy/examples/fuse-daemonset-consumer.yaml",
    ] {
        assert!(
            per_example.contains_key(f),
            "{f} has a pod that mounts weir"
        );
    }
    assert_eq!(
        per_example["deploy/examples/inline-volumes-pod.yaml"], 2,
        "two inline volumes"
    );
    eprintln!("{consumers} weir volume mounts checked: {per_example:?}");
}

#[test]
fn inline_volumes_are_scoped_to_different_subdirectories() {
    let set = example_sets()
        .into_iter()
        .find(|s| s.name == "deploy/examples/inline-volumes-pod.yaml")
        .unwrap();
    let (_, spec) = pod_specs(&set).into_iter().next().unwrap();
    let paths: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.csi.as_ref())
        .filter(|c| c.driver == DRIVER)
        .map(|c| {
            c.volume_attributes
                .clone()
                .unwrap_or_default()
                .get("mountPath")
                .cloned()
                .expect("mountPath")
        })
        .collect();
    assert_eq!(paths.len(), 2);
    assert_ne!(paths[0], paths[1]);
    for p in &paths {
        assert!(
            p.starts_with('/') && p.len() > 1 && !p.contains(".."),
            "{p}"
        );
    }
    // Neither may contain the other, or the scoping would be moot.
    assert!(!paths[0].starts_with(&format!("{}/", paths[1])));
    assert!(!paths[1].starts_with(&format!("{}/", paths[0])));
}

#[test]
fn fuse_daemonset_mounts_under_a_bidirectional_host_dir_on_selected_nodes() {
    let examples = example_sets();
    let mut all: Vec<&Set> = examples.iter().collect();
    if let Some(r) = rendered_sets() {
        all.extend(r.iter());
    }
    let mut found = 0;
    for set in all {
        for (name, ds) in set.all::<DaemonSet>("DaemonSet") {
            let ds_spec = ds.spec;
            let spec = ds_spec.template.spec.clone().unwrap();
            for c in &spec.containers {
                for argv in container_weir_commands(c) {
                    let inv = check_invocation(&name, &argv, &container_env(c));
                    if inv.sub != "mount" {
                        continue;
                    }
                    found += 1;
                    let what = format!("{}: DaemonSet {name}", set.name);
                    assert!(inv.has("--foreground"), "{what}: --foreground");
                    let mp = &inv.positionals[0];
                    let m = c
                        .volume_mounts
                        .iter()
                        .flatten()
                        .find(|m| {
                            mp.starts_with(&format!("{}/", m.mount_path.trim_end_matches('/')))
                        })
                        .unwrap_or_else(|| panic!("{what}: {mp} is under no volume mount"));
                    assert_eq!(
                        m.mount_propagation.as_deref(),
                        Some("Bidirectional"),
                        "{what}"
                    );
                    assert_eq!(
                        host_path_of(&spec, &m.name),
                        Some(m.mount_path.as_str()),
                        "{what}: a hostPath at the same path"
                    );
                    assert_eq!(
                        spec.node_selector
                            .clone()
                            .unwrap_or_default()
                            .get("weir.dev/selected-for-fuse")
                            .map(String::as_str),
                        Some("true"),
                        "{what}: nodeSelector"
                    );
                    let sc = c.security_context.clone().unwrap_or_default();
                    assert_eq!(sc.privileged, Some(true), "{what}");
                    assert!(
                        c.volume_mounts
                            .iter()
                            .flatten()
                            .any(|m| m.mount_path == "/dev/fuse"),
                        "{what}: /dev/fuse"
                    );
                    assert_eq!(
                        ds_spec
                            .update_strategy
                            .clone()
                            .and_then(|u| u.type_)
                            .as_deref(),
                        Some("OnDelete"),
                        "{what}"
                    );
                    // A killed container leaves a dead mount; the next start
                    // must detach it, or weir mount refuses the mount point.
                    let cleans = container_weir_commands(c).iter().any(|a| {
                        a.first().map(String::as_str) == Some("umount")
                            && a.contains(mp)
                            && a.iter().any(|x| x == "--lazy")
                    });
                    assert!(cleans, "{what}: weir umount --lazy {mp} before mounting");
                }
            }
        }
    }
    assert!(found >= 1, "a FUSE DaemonSet that runs weir mount");
}

#[test]
fn every_weir_command_line_is_accepted_by_the_binary() {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    // Manifests, built overlays and the rendered chart.
    let raws = raw_sets();
    let mut sets: Vec<&Set> = raws.iter().collect();
    if let Some(r) = rendered_sets() {
        sets.extend(r.iter());
    }
    for set in sets {
        for (_, _, inv) in set_invocations(set) {
            *count
                .entry(format!("manifests: weir {}", inv.sub))
                .or_default() += 1;
        }
    }
    // The shell examples, the systemd unit and the docs' shell blocks.
    let mut texts: Vec<(String, String)> = vec![(
        "deploy/examples/docker-run.sh".into(),
        read("deploy/examples/docker-run.sh"),
    )];
    let unit = read("deploy/examples/weir-mount.service");
    let exec: String = unit
        .lines()
        .filter_map(|l| l.split_once('=').filter(|(k, _)| k.starts_with("Exec")))
        .map(|(_, v)| format!("{}\n", v.trim_start_matches(['-', '@', '+', '!'])))
        .collect();
    texts.push(("deploy/examples/weir-mount.service".into(), exec));
    for doc in [
        "README.md",
        "docs/install.md",
        "docs/troubleshooting.md",
        "docs/tuning.md",
    ] {
        let md = read(doc);
        let mut in_block = false;
        let mut shell = false;
        let mut block = String::new();
        for line in md.lines() {
            if let Some(lang) = line.trim_start().strip_prefix("```") {
                if in_block {
                    if shell {
                        texts.push((doc.to_string(), std::mem::take(&mut block)));
                    }
                    block.clear();
                    in_block = false;
                } else {
                    in_block = true;
                    shell = ["", "sh", "bash", "console", "shell"].contains(&lang.trim());
                }
            } else if in_block {
                // `$ ` prompts in console blocks.
                block.push_str(line.trim_start().trim_start_matches("$ "));
                block.push('\n');
            }
        }
    }
    for (origin, text) in texts {
        for argv in weir_commands_in_shell(&text) {
            // Placeholders such as MOUNTPOINT in usage lines are fine, flags
            // must be real; the environment is the user's.
            let env = BTreeSet::from(["CSI_ENDPOINT".to_string(), "NODE_ID".to_string()]);
            let usage_line = argv.iter().any(|a| a.starts_with('[') || a == "|");
            if usage_line {
                continue;
            }
            let inv = check_invocation(&origin, &argv, &env);
            *count
                .entry(format!("{origin}: weir {}", inv.sub))
                .or_default() += 1;
        }
    }
    eprintln!("weir command lines checked: {count:?}");
    for key in [
        "manifests: weir csi",
        "manifests: weir mount",
        "manifests: weir umount",
        "deploy/examples/docker-run.sh: weir mount",
        "deploy/examples/weir-mount.service: weir mount",
        "docs/install.md: weir mount",
    ] {
        assert!(count.contains_key(key), "no `{key}` found: {count:?}");
    }
}

#[test]
fn every_weir_config_is_accepted_by_weir() {
    // Each example is complete; the base's files only together.
    let examples = example_sets();
    let mut sets: Vec<&Set> = examples.iter().collect();
    let base = raw_base();
    sets.push(&base);
    if let Some(r) = rendered_sets() {
        sets.extend(r.iter());
    }
    let mut checked = 0;
    for set in sets {
        for (name, spec) in pod_specs(set) {
            for c in &spec.containers {
                for argv in container_weir_commands(c) {
                    let inv = check_invocation(&name, &argv, &container_env(c));
                    if inv.sub == "umount" {
                        continue;
                    }
                    let Some(config) = config_of(set, &spec, c, &inv) else {
                        continue;
                    };
                    let opts = inv.values("-o");
                    assert_weir_accepts_config(
                        &format!("{name} container {}", c.name),
                        &config,
                        &inv.values("--set"),
                        &opts,
                    );
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} weir configurations loaded by weir");
    assert!(checked >= 4);
}

#[test]
fn documented_fuse_defaults_are_the_defaults_everywhere() {
    let expected: Vec<String> = DOCUMENTED_FUSE_OPTIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let base: Value = serde_yaml_ng::from_str(&read("deploy/base/weir.yaml")).unwrap();
    let values: Value = serde_yaml_ng::from_str(&read("charts/weir/values.yaml")).unwrap();
    let example = example_sets()
        .into_iter()
        .find(|s| s.name == "deploy/examples/fuse-daemonset.yaml")
        .unwrap();
    let (_, cm) = example
        .all::<ConfigMap>("ConfigMap")
        .into_iter()
        .next()
        .unwrap();
    let ds_cfg: Value = serde_yaml_ng::from_str(&cm.data.unwrap()["weir.yaml"]).unwrap();
    for (what, v) in [
        ("deploy/base/weir.yaml", yaml_get(&base, "fuse.options")),
        ("charts/weir/values.yaml", yaml_get(&values, "fuse.options")),
        (
            "deploy/examples/fuse-daemonset.yaml",
            yaml_get(&ds_cfg, "fuse.options"),
        ),
    ] {
        let got: Vec<String> = serde_yaml_ng::from_value(v.cloned().unwrap()).unwrap();
        assert_eq!(got, expected, "{what}: fuse.options");
    }
    let tuning = read("docs/tuning.md");
    for o in DOCUMENTED_FUSE_OPTIONS {
        assert!(
            tuning.contains(&format!("`{o}`")),
            "docs/tuning.md documents `{o}`"
        );
    }
}

#[test]
fn memory_limits_cover_the_documented_formula() {
    let examples = example_sets();
    let base = raw_base();
    let mut sets: Vec<&Set> = examples.iter().collect();
    sets.push(&base);
    if let Some(r) = rendered_sets() {
        sets.extend(r.iter());
    }
    let mut checked = 0;
    for set in sets {
        for (name, ds) in set.all::<DaemonSet>("DaemonSet") {
            let sizing = ds
                .metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .get("weir.dev/memory-sizing")
                .cloned()
                .unwrap_or_else(|| panic!("{}: {name} has no weir.dev/memory-sizing", set.name));
            let mut readers = None;
            let mut files = None;
            for part in sizing.split_whitespace() {
                match part.split_once('=') {
                    Some(("readers", n)) => readers = n.parse::<u64>().ok(),
                    Some(("files", n)) => files = n.parse::<u64>().ok(),
                    _ => panic!("{}: bad sizing {sizing:?}", set.name),
                }
            }
            let (Some(readers), Some(files)) = (readers, files) else {
                panic!(
                    "{}: {name}: weir.dev/memory-sizing {sizing:?} needs readers=N files=N",
                    set.name
                );
            };
            let spec = ds.spec.template.spec.unwrap();
            for c in &spec.containers {
                for argv in container_weir_commands(c) {
                    let inv = check_invocation(&name, &argv, &container_env(c));
                    if inv.sub == "umount" {
                        continue;
                    }
                    let config = config_of(set, &spec, c, &inv).unwrap();
                    let cfg = effective_config(&config, &inv.values("--set"));
                    let needed = memory_needed(&cfg, readers, files, inv.sub == "csi");
                    let res = c.resources.clone().unwrap_or_default();
                    let limit = res
                        .limits
                        .unwrap_or_default()
                        .get("memory")
                        .map(|q| quantity_bytes(&q.0))
                        .unwrap_or_else(|| panic!("{}: {name} has no memory limit", set.name));
                    let request = res
                        .requests
                        .unwrap_or_default()
                        .get("memory")
                        .map(|q| quantity_bytes(&q.0))
                        .unwrap_or(0);
                    assert!(
                        limit >= needed,
                        "{}: {name}: memory limit {} MiB is below the {} MiB that \
                         docs/tuning.md's formula gives for {sizing}",
                        set.name,
                        limit >> 20,
                        needed >> 20
                    );
                    assert!(
                        request <= limit,
                        "{}: {name}: request above limit",
                        set.name
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 3, "memory limits checked: {checked}");
}

#[test]
fn image_and_chart_versions_match_the_crate() {
    let version = env!("CARGO_PKG_VERSION");
    let chart: Value = serde_yaml_ng::from_str(&read("charts/weir/Chart.yaml")).unwrap();
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(version),
        "Chart.yaml appVersion"
    );
    let raws = raw_sets();
    let mut sets: Vec<&Set> = raws.iter().collect();
    if let Some(r) = rendered_sets() {
        sets.extend(r.iter());
    }
    let mut images = 0;
    for set in sets {
        for (name, spec) in pod_specs(set) {
            for c in containers(&spec) {
                let image = c.image.clone().unwrap_or_default();
                if image.starts_with(IMAGE_REPO) {
                    assert_eq!(
                        image,
                        format!("{IMAGE_REPO}:{version}"),
                        "{name}: the weir image is this version's"
                    );
                    images += 1;
                } else {
                    assert!(
                        image.contains(':') && !image.ends_with(":latest"),
                        "{name}: {image} is pinned"
                    );
                }
            }
        }
    }
    for f in ["deploy/examples/docker-run.sh", "docs/install.md"] {
        let text = read(f);
        for (i, _) in text.match_indices(IMAGE_REPO) {
            let rest = &text[i + IMAGE_REPO.len()..];
            if let Some(tag) = rest.strip_prefix(':') {
                let tag: String = tag
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                assert_eq!(tag, version, "{f}: image tag");
            }
        }
    }
    assert!(images >= 4);
}

#[test]
fn dockerfile_builds_weir_and_runs_it() {
    let text = read("Dockerfile");
    // Join continuation lines; drop comments.
    let mut lines = Vec::new();
    let mut cur = String::new();
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        if let Some(s) = t.strip_suffix('\\') {
            cur.push_str(s);
            cur.push(' ');
        } else {
            cur.push_str(t);
            lines.push(std::mem::take(&mut cur));
        }
    }
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for l in &lines {
        let (instr, rest) = l.split_once(' ').unwrap_or((l, ""));
        match instr.to_uppercase().as_str() {
            "FROM" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                assert!(
                    !words[0].ends_with(":latest") && words[0].contains(':'),
                    "FROM {} is pinned",
                    words[0]
                );
                let name = if words.len() == 3 && words[1].eq_ignore_ascii_case("as") {
                    words[2].to_string()
                } else {
                    String::new()
                };
                stages.push((name, Vec::new()));
            }
            "ARG" if stages.is_empty() => {}
            _ => stages
                .last_mut()
                .unwrap_or_else(|| panic!("{l}: before FROM"))
                .1
                .push(l.clone()),
        }
    }
    assert!(stages.len() >= 2, "a multi-stage build");
    let (build_name, build) = &stages[0];
    assert!(
        build
            .iter()
            .any(|l| l.starts_with("RUN") && l.contains("cargo build --release --locked -p weir")),
        "the build stage builds weir --locked"
    );
    let (_, runtime) = stages.last().unwrap();
    assert!(
        runtime
            .iter()
            .any(|l| l.starts_with(&format!("COPY --from={build_name} "))
                && l.ends_with("/usr/local/bin/weir")),
        "the runtime stage copies weir from {build_name}: {runtime:?}"
    );
    assert!(
        runtime
            .iter()
            .any(|l| l == r#"ENTRYPOINT ["/usr/local/bin/weir"]"#),
        "weir is the entrypoint, so `weir csi` and `weir mount` are the container args"
    );
    assert!(
        !runtime
            .iter()
            .any(|l| l.contains("cargo") || l.contains("rustc")),
        "no toolchain in the runtime image"
    );
    let ignore = read(".dockerignore");
    for must in [".git", "**/target"] {
        assert!(
            ignore.lines().any(|l| l.trim() == must),
            ".dockerignore excludes {must}"
        );
    }
}

// ------------------------------------------- the FUSE DaemonSet, for real

/// Undoes the mounts and kills the "containers" of the restart test, also
/// when it fails half-way.
struct Cleanup {
    containers: Vec<std::process::Child>,
    mounts: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.containers {
            kill_container(c);
        }
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// Kills every process of a "container" and reaps it, as the kernel does
/// with a container's cgroup: its process group, and every descendant
/// (the FUSE daemon runs in a session of its own, under its supervisor).
fn kill_container(c: &mut std::process::Child) {
    let root = c.id() as i32;
    let mut doomed = vec![root];
    let mut i = 0;
    while i < doomed.len() {
        let parent = doomed[i];
        doomed.extend(children_of(parent));
        i += 1;
    }
    // SAFETY: signalling the process group and the processes this test started.
    unsafe { libc::kill(-root, libc::SIGKILL) };
    for pid in doomed {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = c.wait();
}

/// The processes whose parent is `ppid`.
fn children_of(ppid: i32) -> Vec<i32> {
    weir_testkit::process::children(ppid)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

fn mounted_fs_type(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().rev().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (left.split(' ').nth(4)? == path.to_str()?)
            .then(|| right.split(' ').next().unwrap().to_string())
    })
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Runs the FUSE DaemonSet example's own container command on real mounts:
/// a mount namespace stands in for the container, a shared bind of the host
/// dir for its `Bidirectional` hostPath, and rslave binds for consumers'
/// `HostToContainer` hostPaths. After a `kill -9` of the whole "container"
/// and a restart with the same command, the consumer that mounts the parent
/// dir (as the example consumer does) reads through the new mount, and one
/// that bound the mount point itself is left with the dead one.
#[test]
fn fuse_daemonset_restart_reaches_consumers_that_mount_the_parent_dir() {
    let set = example_sets()
        .into_iter()
        .find(|s| s.name == "deploy/examples/fuse-daemonset.yaml")
        .unwrap();
    let (_, ds) = set
        .all::<DaemonSet>("DaemonSet")
        .into_iter()
        .next()
        .unwrap();
    let spec = ds.spec.template.spec.unwrap();
    let c = spec.containers.iter().find(|c| c.name == "weir").unwrap();
    let command = c.command.clone().unwrap();
    assert_eq!(&command[..2], ["/bin/sh", "-c"]);
    let script = &command[2];
    let host_mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_propagation.as_deref() == Some("Bidirectional"))
        .unwrap();
    let host_dir = host_mount.mount_path.trim_end_matches('/');
    let mount = container_weir_commands(c)
        .into_iter()
        .find(|a| a[0] == "mount")
        .unwrap();
    let mount_point = &mount[1];
    let rel = mount_point.strip_prefix(&format!("{host_dir}/")).unwrap();
    let cm: ConfigMap = set.one("ConfigMap", "weir-fuse-config");
    let config_text = cm.data.unwrap()["weir.yaml"].clone();

    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (host, data, cache) = (t.join("host"), t.join("data"), t.join("cache"));
    let (cons_parent, cons_point) = (t.join("consumer-parent"), t.join("consumer-point"));
    for d in [&host, &data, &cache, &cons_parent, &cons_point] {
        std::fs::create_dir_all(d).unwrap();
    }
    // The example's configuration, pointed at this test's directories.
    let cfg = effective_config(
        &config_text,
        &[
            &format!("mounts=[{{path: /, ufs: 'file://{}'}}]", data.display()),
            &format!("cache.dir={}", cache.display()),
        ],
    );
    let config = t.join("weir.yaml");
    std::fs::write(&config, serde_yaml_ng::to_string(&cfg).unwrap()).unwrap();
    let script = script
        .replace(host_dir, host.to_str().unwrap())
        .replace("/etc/weir/weir.yaml", config.to_str().unwrap());
    let bin_dir = Path::new(weir_bin()).parent().unwrap().to_path_buf();
    let path_env = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mnt = host.join(rel);

    let mut guard = Cleanup {
        containers: Vec::new(),
        mounts: Vec::new(),
    };
    let sh = |args: &[&str]| {
        let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
        assert!(st.success(), "{args:?}");
    };
    // kubelet's Bidirectional hostPath: the container's bind is shared with
    // the host's dir.
    sh(&[
        "mount",
        "--bind",
        host.to_str().unwrap(),
        host.to_str().unwrap(),
    ]);
    guard.mounts.push(host.clone());
    sh(&["mount", "--make-rshared", host.to_str().unwrap()]);
    let start_container = |guard: &mut Cleanup, log: &str| {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(t.join(log)).unwrap();
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "unchanged", "/bin/sh", "-c", &script])
            .env("PATH", &path_env)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        guard.containers.push(child);
    };
    start_container(&mut guard, "container-1.log");
    wait_for("the first mount", || {
        mounted_fs_type(&mnt).as_deref() == Some("fuse.weir") && std::fs::read_dir(&mnt).is_ok()
    });
    guard.mounts.push(mnt.clone());

    // Two consumers with HostToContainer: one of the parent dir (as the
    // example consumer), one of the mount point itself.
    sh(&[
        "mount",
        "--rbind",
        host.to_str().unwrap(),
        cons_parent.to_str().unwrap(),
    ]);
    guard.mounts.push(cons_parent.clone());
    sh(&["mount", "--make-rslave", cons_parent.to_str().unwrap()]);
    sh(&[
        "mount",
        "--rbind",
        mnt.to_str().unwrap(),
        cons_point.to_str().unwrap(),
    ]);
    guard.mounts.push(cons_point.clone());
    sh(&["mount", "--make-rslave", cons_point.to_str().unwrap()]);

    // The install guide's round trip: write and read through the mount,
    // then find the file in the storage.
    let through_parent = cons_parent.join(rel).join("hello.txt");
    std::fs::write(&through_parent, b"hello\n").unwrap();
    assert_eq!(std::fs::read(&through_parent).unwrap(), b"hello\n");
    assert_eq!(std::fs::read(data.join("hello.txt")).unwrap(), b"hello\n");
    assert_eq!(
        std::fs::read(cons_point.join("hello.txt")).unwrap(),
        b"hello\n"
    );

    // The container dies (OOM kill, node trouble): every process of it.
    kill_container(&mut guard.containers[0]);
    wait_for("the dead mount", || {
        std::fs::read_dir(cons_parent.join(rel))
            .err()
            .and_then(|e| e.raw_os_error())
            == Some(libc::ENOTCONN)
    });

    // kubelet starts the container again, with the same command.
    start_container(&mut guard, "container-2.log");
    wait_for(
        "the consumer of the parent dir to see the new mount",
        || std::fs::read(&through_parent).is_ok_and(|d| d == b"hello\n"),
    );
    let log = std::fs::read_to_string(t.join("container-2.log")).unwrap_or_default();
    assert!(
        !log.contains("already a mount point"),
        "the restart detached the dead mount first: {log}"
    );
    // Binding the mount point itself keeps the dead mount: the example
    // consumer must not do that.
    let err = std::fs::read(cons_point.join("hello.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
}
